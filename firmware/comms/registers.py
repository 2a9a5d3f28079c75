"""The Modbus register map: one table, read by the server, the PC tool and the docs.

Addressing is 0-based: the address in this map is the number sent in the
request PDU (no "40001" offsets).  Function codes 03 and 04 read the same
map.  Every request must stay inside one block; a range that leaves its
block (or touches no block) is answered with exception 02.  Reserved
registers inside a block read as 0.

Encodings: registers are big-endian 16-bit words; 32-bit values take two
registers, high word first; ASCII fields hold two characters per register,
first character in the high byte, padded with NUL.

Blocks (see ``BLOCKS``):
  identity   0x0000  model, firmware, serial, manufacturing date, Bluetooth
                     address (ASCII), map version and sizes; serial, model,
                     date and Bluetooth address writable with the factory role
  monitor    0x0100  live values (``MONITOR`` rows), read only
  temps      0x0200  every temperature sensor: value, status, role
  cells      0x0400  cell voltages in mV, cell 1 at 0x0400, up to 256 cells
  params     0x1000  parameter i of ``bms.params.TABLE`` at 0x1000 + i, in
                     the table's unit; signed when the row's minimum is < 0
  commands   0x2000  command c of ``bms.core.CMD_NAMES`` at 0x2000 + 2*(c-1):
                     FC06 writes a signed 16-bit argument, FC16 of both
                     registers a signed 32-bit one (one command per request)
  auth       0x2100  unlock, lock, role, lockout, password change, last error
  log head   0x3000  event-log count, capacity, next sequence number
  log        0x4000  event record i (0 = oldest kept) at 0x4000 + 10*i
  modules    0x0600  CAN slave modules of a master board: bus state, then
                     16 registers per module (state, cells, age, faults,
                     balancing, temperatures); module count 0 elsewhere
  update     0x2800  firmware update window (comms.reg_update, issue 7)
  plog       0x2A00  persistent event log window with trip snapshots

Writes to params, commands and password changes need the user role, the
identity fields and the factory password the factory role (``bms.auth``).
A multi-register parameter write is applied with ``ParamSet.set_many``: all
or nothing; a refused write answers exception 03 and the reason can be read
from the last-error registers.

Every table here is a compile-time constant (literals and this module's
``const()`` names only), so a frozen build keeps it in flash rather than on
the heap (host_tests/test_const_tables.py).  Descriptions that list another
table's names hold a ``{key}`` placeholder that ``comms.regdoc.doc`` fills
in for the docs and host tools.
"""
from array import array

from micropython import const

from bms import faults as F
from bms.auth import (CH_BLE, CH_MODBUS, INVALID as AUTH_INVALID, LOCKED_OUT, OK as AUTH_OK,
                      ROLE_FACTORY, ROLE_NAMES, ROLE_USER)
from bms.core import ACCEPTED, CMD_NAMES, ILLEGAL
from bms.params import P_CHEMISTRY, ParamError
from bms.params import TABLE as PARAM_TABLE
# ---- issue 7: update / persistent log windows (import) ----
from comms.packing import get16be as get16, put16be as put16  # noqa: F401 (re-exported)

MAP_VERSION = const(1)

# Modbus exception codes
EX_NONE = const(0)
EX_FUNCTION = const(1)
EX_ADDRESS = const(2)
EX_VALUE = const(3)
EX_FAILURE = const(4)
EX_BUSY = const(6)

# Register types
T_U16 = const("u16")
T_S16 = const("s16")
T_U32 = const("u32")
T_S32 = const("s32")
T_ASCII = const("ascii")
T_BITS = const("bits")

# Block start addresses
A_INFO = const(0x0000)
A_MON = const(0x0100)
A_TEMPS = const(0x0200)
A_CELLS = const(0x0400)
A_PARAMS = const(0x1000)
A_CMD = const(0x2000)
A_AUTH = const(0x2100)
A_LOGHEAD = const(0x3000)
A_LOG = const(0x4000)
A_UPDATE = const(0x2800)   # issue 7: firmware update window
A_PLOG = const(0x2A00)     # issue 7: persistent event log window

MAX_CELLS = const(256)
MAX_TEMPS = const(16)
LOG_REC_REGS = const(10)
LOG_MAX_RECORDS = const(1600)

# ---- identity block --------------------------------------------------------
# name, offset, registers, type, writable (factory role), description
INFO = (
    ("model", 0x00, 16, T_ASCII, True, "Model name"),
    ("firmware", 0x10, 8, T_ASCII, False, "Firmware version"),
    ("serial", 0x18, 8, T_ASCII, True, "Serial number (machine code)"),
    ("mfg_date", 0x20, 6, T_ASCII, True, "Manufacturing date, YYYY-MM-DD"),
    ("bt_addr", 0x26, 6, T_ASCII, True, "Bluetooth address, 12 hex digits"),
    ("map_version", 0x2C, 1, T_U16, False, "Version of this register map"),
    ("max_cells", 0x2D, 1, T_U16, False, "Cells this board can measure"),
    ("temp_sensors", 0x2E, 1, T_U16, False, "Temperature sensors fitted"),
    ("param_count", 0x2F, 1, T_U16, False, "Rows in the parameter block"),
    ("vendor", 0x30, 8, T_ASCII, False, "Vendor name"),
)
INFO_SIZE = const(0x40)


class DeviceInfo:
    """Identity strings, optionally persisted through a dict-like ``store``."""

    def __init__(self, model="MPY-BMS", firmware="0.1.0", serial="", mfg_date="",
                 bt_addr="", vendor="micropython-bms", store=None):
        self.store = store
        self.fields = {}
        vals = {"model": model, "firmware": firmware, "serial": serial,
                "mfg_date": mfg_date, "bt_addr": bt_addr, "vendor": vendor}
        for name, _off, n, typ, _w, _d in INFO:
            if typ != T_ASCII:
                continue
            buf = bytearray(2 * n)
            v = vals[name]
            if store is not None and store.get("info." + name) is not None:
                v = store.get("info." + name)
            self._fill(buf, v)
            self.fields[name] = buf

    @staticmethod
    def _fill(buf, v):
        if isinstance(v, str):
            v = v.encode()
        for i in range(len(buf)):
            buf[i] = v[i] if i < len(v) else 0

    def get(self, name):
        b = self.fields[name]
        n = 0
        while n < len(b) and b[n]:
            n += 1
        return bytes(b[:n]).decode()

    def set(self, name, value):
        self._fill(self.fields[name], value)
        if self.store is not None:
            self.store["info." + name] = self.get(name)


# ---- monitor block ---------------------------------------------------------
# Every row is a compile-time constant (it stays in flash when frozen):
# (name, type, unit, description, source).  ``source`` is a _S_* code that
# ``_mon_value`` turns into the live value.  A description holding a
# ``{key}`` placeholder is completed from the other tables by
# ``comms.regdoc.doc`` (docs and host tools only).
_S_PACK_MV = const(0)
_S_CURRENT = const(1)
_S_SOC = const(2)
_S_SOH = const(3)
_S_REMAINING = const(4)
_S_FULL = const(5)
_S_CYCLES = const(6)
_S_CELLS = const(7)
_S_MAX_MV = const(8)
_S_MAX_IDX = const(9)
_S_MIN_MV = const(10)
_S_MIN_IDX = const(11)
_S_DIFF = const(12)
_S_AVG = const(13)
_S_MODE = const(14)
_S_DSG_STATE = const(15)
_S_RELAYS = const(16)
_S_FAULT_LEVEL = const(17)
_S_BAL_COUNT = const(18)
_S_CMD_PENDING = const(19)
_S_PARAM_VERSION = const(20)
_S_LOG_SEQ = const(21)
_S_AUTH_ROLE = const(22)
_S_BUS_ERRORS = const(23)
_S_EXCEPTIONS = const(24)
_S_RUNNING = const(25)
_S_TMAX = const(0x20)      # + temperature role (measurements.ROLE_*)
_S_TMIN = const(0x28)      # + temperature role
_S_FAULTS = const(0x30)    # + word k: fault ids 16k .. 16k+15, any level
_S_PROT = const(0x34)      # + word k: level >= protection
_S_ALARM = const(0x38)     # + word k: warnings
_S_BALANCE = const(0x40)   # + word k: cells 16k+1 .. 16k+16

MONITOR = (
    ("pack_voltage", T_U32, "mV", "Pack voltage (measured stack, else sum of cells)", _S_PACK_MV),
    ("current", T_S32, "mA", "Pack current, positive = charging", _S_CURRENT),
    ("soc", T_U16, "0.1%", "State of charge", _S_SOC),
    ("soh", T_U16, "0.1%", "State of health (reports 100.0 % until capacity learning exists)",
     _S_SOH),
    ("remaining_capacity", T_U32, "mAh", "Remaining charge", _S_REMAINING),
    ("full_capacity", T_U32, "mAh", "Full charge capacity", _S_FULL),
    ("cycles", T_U16, "cycles", "Full discharge cycles counted", _S_CYCLES),
    ("cell_count", T_U16, "cells", "Cells in series", _S_CELLS),
    ("cell_max", T_U16, "mV", "Highest cell voltage", _S_MAX_MV),
    ("cell_max_index", T_U16, "cell", "Cell with the highest voltage (1-based)", _S_MAX_IDX),
    ("cell_min", T_U16, "mV", "Lowest cell voltage", _S_MIN_MV),
    ("cell_min_index", T_U16, "cell", "Cell with the lowest voltage (1-based)", _S_MIN_IDX),
    ("cell_diff", T_U16, "mV", "Highest minus lowest cell voltage", _S_DIFF),
    ("cell_avg", T_U16, "mV", "Average of the valid cells", _S_AVG),
    # one max/min pair per role of bms.measurements.ROLE_NAMES, in its order
    ("t_power_max", T_S16, "0.1degC", "Hottest power sensor (-32768: none valid)", _S_TMAX + 0),
    ("t_power_min", T_S16, "0.1degC", "Coldest power sensor (32767: none valid)", _S_TMIN + 0),
    ("t_balance_max", T_S16, "0.1degC", "Hottest balance sensor (-32768: none valid)",
     _S_TMAX + 1),
    ("t_balance_min", T_S16, "0.1degC", "Coldest balance sensor (32767: none valid)",
     _S_TMIN + 1),
    ("t_cell_max", T_S16, "0.1degC", "Hottest cell sensor (-32768: none valid)", _S_TMAX + 2),
    ("t_cell_min", T_S16, "0.1degC", "Coldest cell sensor (32767: none valid)", _S_TMIN + 2),
    ("t_ambient_max", T_S16, "0.1degC", "Hottest ambient sensor (-32768: none valid)",
     _S_TMAX + 3),
    ("t_ambient_min", T_S16, "0.1degC", "Coldest ambient sensor (32767: none valid)",
     _S_TMIN + 3),
    ("mode", T_U16, "enum", "Operating mode: {mode_names}", _S_MODE),
    ("dsg_state", T_U16, "enum", "Discharge path: {dsg_names}", _S_DSG_STATE),
    ("relays", T_BITS, "bits", "Relay/MOS states (1 = closed): {relay_bits}", _S_RELAYS),
    ("fault_level", T_U16, "enum", "Highest active fault level: {level_names}", _S_FAULT_LEVEL),
    # Fault bit fields: bit b of word k is fault id 16 * k + b (docs/faults.md).
    ("faults_0", T_BITS, "bits", "Every active fault: {faults_0}", _S_FAULTS + 0),
    ("faults_1", T_BITS, "bits", "Every active fault: {faults_1}", _S_FAULTS + 1),
    ("protection_0", T_BITS, "bits", "Active protections (level >= protection): {protection_0}",
     _S_PROT + 0),
    ("protection_1", T_BITS, "bits", "Active protections (level >= protection): {protection_1}",
     _S_PROT + 1),
    ("alarm_0", T_BITS, "bits", "Active alarms (warnings): {alarm_0}", _S_ALARM + 0),
    ("alarm_1", T_BITS, "bits", "Active alarms (warnings): {alarm_1}", _S_ALARM + 1),
    ("balancing_count", T_U16, "cells", "Cells bleeding now", _S_BAL_COUNT),
    ("balance_0", T_BITS, "bits", "Balancing mask, bit b = cell 1 + b", _S_BALANCE + 0),
    ("balance_1", T_BITS, "bits", "Balancing mask, bit b = cell 17 + b", _S_BALANCE + 1),
    ("balance_2", T_BITS, "bits", "Balancing mask, bit b = cell 33 + b", _S_BALANCE + 2),
    ("balance_3", T_BITS, "bits", "Balancing mask, bit b = cell 49 + b", _S_BALANCE + 3),
    ("balance_4", T_BITS, "bits", "Balancing mask, bit b = cell 65 + b", _S_BALANCE + 4),
    ("balance_5", T_BITS, "bits", "Balancing mask, bit b = cell 81 + b", _S_BALANCE + 5),
    ("balance_6", T_BITS, "bits", "Balancing mask, bit b = cell 97 + b", _S_BALANCE + 6),
    ("balance_7", T_BITS, "bits", "Balancing mask, bit b = cell 113 + b", _S_BALANCE + 7),
    ("balance_8", T_BITS, "bits", "Balancing mask, bit b = cell 129 + b", _S_BALANCE + 8),
    ("balance_9", T_BITS, "bits", "Balancing mask, bit b = cell 145 + b", _S_BALANCE + 9),
    ("balance_10", T_BITS, "bits", "Balancing mask, bit b = cell 161 + b", _S_BALANCE + 10),
    ("balance_11", T_BITS, "bits", "Balancing mask, bit b = cell 177 + b", _S_BALANCE + 11),
    ("balance_12", T_BITS, "bits", "Balancing mask, bit b = cell 193 + b", _S_BALANCE + 12),
    ("balance_13", T_BITS, "bits", "Balancing mask, bit b = cell 209 + b", _S_BALANCE + 13),
    ("balance_14", T_BITS, "bits", "Balancing mask, bit b = cell 225 + b", _S_BALANCE + 14),
    ("balance_15", T_BITS, "bits", "Balancing mask, bit b = cell 241 + b", _S_BALANCE + 15),
    ("cmd_pending", T_U16, "bool", "A command waits for the next control cycle", _S_CMD_PENDING),
    ("param_version", T_U16, "count", "Increments on every accepted parameter change",
     _S_PARAM_VERSION),
    ("log_next_seq", T_U32, "count", "Sequence number the next event will get", _S_LOG_SEQ),
    ("auth_role", T_U16, "enum", "Role unlocked on this port: {auth_roles}", _S_AUTH_ROLE),
    ("bus_errors", T_U16, "count", "Failed bus transactions since boot", _S_BUS_ERRORS),
    ("exceptions", T_U16, "count", "Control-cycle exceptions since boot", _S_EXCEPTIONS),
    ("running", T_U16, "bool", "Measurements complete, relays may close", _S_RUNNING),
)
MON_SIZE = const(61)    # registers of MONITOR (u32/s32 take two); a test checks it


def _fault_word(r, first, level_lo, level_hi):
    prot = r.bms.prot
    w = 0
    for b in range(16):
        i = first + b
        if i < F.N_FAULTS and prot.active(i):
            lv = F.TABLE[i][F.F_LEVEL]
            if level_lo <= lv <= level_hi:
                w |= 1 << b
    return w


def _balance_word(r, k):
    f = r.bms.balancer.flags
    w = 0
    base = k * 16
    n = len(f)
    for b in range(16):
        if base + b < n and f[base + b]:
            w |= 1 << b
    return w


def _mon_value(r, s):
    """The live value of monitor source ``s`` (allocation-free)."""
    b = r.bms
    if s >= _S_BALANCE:
        return _balance_word(r, s - _S_BALANCE)
    if s >= _S_ALARM:
        return _fault_word(r, 16 * (s - _S_ALARM), F.L_WARN, F.L_WARN)
    if s >= _S_PROT:
        return _fault_word(r, 16 * (s - _S_PROT), F.L_PROT, 9)
    if s >= _S_FAULTS:
        return _fault_word(r, 16 * (s - _S_FAULTS), 0, 9)
    if s >= _S_TMIN:
        return b.meas.tmin[s - _S_TMIN]
    if s >= _S_TMAX:
        return b.meas.tmax[s - _S_TMAX]
    if s <= _S_AVG:
        m = b.meas
        if s == _S_PACK_MV:
            return m.pack_mv if m.pack_mv else m.sum_mv
        if s == _S_CURRENT:
            return m.current_ma
        if s == _S_SOC:
            return b.soc.soc_pm
        if s == _S_SOH:
            return 1000
        if s == _S_REMAINING:
            return b.soc.remaining_mah
        if s == _S_FULL:
            return b.soc.capacity_mah
        if s == _S_CYCLES:
            return b.soc.cycles
        if s == _S_CELLS:
            return m.n_cells
        if s == _S_MAX_MV:
            return m.max_mv
        if s == _S_MAX_IDX:
            return m.max_idx + 1
        if s == _S_MIN_MV:
            return m.min_mv
        if s == _S_MIN_IDX:
            return m.min_idx + 1
        if s == _S_DIFF:
            return m.diff_mv
        n = m.n_cells - m.bad_cells   # _S_AVG
        return m.sum_mv // n if n > 0 else 0
    if s == _S_MODE:
        return b.mode
    if s == _S_DSG_STATE:
        return b.contactors.dsg_state
    if s == _S_RELAYS:
        st = b.contactors.state
        w = 0
        for i in range(len(st)):
            if st[i]:
                w |= 1 << i
        return w
    if s == _S_FAULT_LEVEL:
        return b.prot.level
    if s == _S_BAL_COUNT:
        return b.balancer.count
    if s == _S_CMD_PENDING:
        return 1 if b.cmd_pending else 0
    if s == _S_PARAM_VERSION:
        return b.params.version & 0xFFFF
    if s == _S_LOG_SEQ:
        return b.log.next_seq
    if s == _S_AUTH_ROLE:
        return r.auth.role(r.channel) if r.auth is not None else 0
    if s == _S_BUS_ERRORS:
        return b.bus_errors & 0xFFFF
    if s == _S_EXCEPTIONS:
        return b.exceptions & 0xFFFF
    if s == _S_RUNNING:
        return 1 if b.running else 0
    return 0


def _width(typ):
    return 2 if typ in (T_U32, T_S32) else 1


def _offsets(rows):
    off = array("H", [0] * len(rows))
    a = 0
    for i in range(len(rows)):
        off[i] = a
        a += _width(rows[i][1])
    return off, a


MON_OFF = _offsets(MONITOR)[0]   # register offset of each row (an array, 112 bytes)


def monitor_address(name):
    for i in range(len(MONITOR)):
        if MONITOR[i][0] == name:
            return A_MON + MON_OFF[i]
    raise KeyError(name)


# ---- temperature block -----------------------------------------------------
T_COUNT = const(0)      # sensors fitted
T_VALUE = const(1)      # 16 x s16, 0.1 degC
T_STATUS = const(17)    # 16 x u16: 0 ok, 1 open, 2 short, 3 no data
T_ROLE = const(33)      # 16 x u16: measurements.ROLE_NAMES
TEMPS_SIZE = const(49)
T_STATUS_NAMES = ("ok", "open", "short", "no_data")

# ---- parameter block -------------------------------------------------------


def param_signed(i):
    return PARAM_TABLE[i][2] < 0


# ---- commands --------------------------------------------------------------
N_CMDS = const(9)       # len(bms.core.CMD_NAMES) - 1 (id 0 is "no command"); a test checks it
CMD_SIZE = const(18)    # 2 * N_CMDS
# (command, argument) for the docs
CMD_ARGS = (
    ("reset_faults", "1"),
    ("soc_set", "SOC in 0.1 % (0..1000)"),
    ("cal_current", "true current now flowing, mA (the sign is taken from the measurement)"),
    ("cal_zero", "1 (no current must flow)"),
    ("restart", "1"),
    ("defaults", "chemistry to load defaults for: 0 NMC, 1 LFP, 2 LTO, 3 NA"),
    ("clear_log", "1"),
    ("sleep", "1 (relays open until wake, the key or current wakes it)"),
    ("wake", "1"),
)


def command_address(name):
    return A_CMD + 2 * (CMD_NAMES.index(name) - 1)


# ---- auth block ------------------------------------------------------------
AU_UNLOCK = const(0x00)      # 8 regs ASCII password
AU_LOCK = const(0x08)        # write anything: lock this port
AU_ROLE = const(0x09)
AU_LOCKOUT = const(0x0A)     # seconds until a password may be tried
AU_FAILS = const(0x0B)
AU_NEW_USER = const(0x10)    # 8 regs ASCII, user role
AU_NEW_FACTORY = const(0x18)  # 8 regs ASCII, factory role
AU_ERR_INDEX = const(0x20)   # parameter index of the last refusal, -1 none
AU_ERR_CODE = const(0x21)    # exception code of the last refusal
AU_ERR_TEXT = const(0x22)    # 64 regs ASCII reason
AU_CHAL_REQ = const(0x62)    # write anything: a fresh challenge for this port
AU_CHALLENGE = const(0x63)   # 18 regs: nonce (8) | factory salt (4), iterations | user salt (4), iterations
AU_RESPONSE = const(0x75)    # 32 regs: HMAC-SHA256 for the factory record | for the user record
CHAL_REGS = const(18)
RESP_REGS = const(32)
AUTH_SIZE = const(0x95)
PW_REGS = const(8)
ERR_TEXT_LEN = const(128)

AUTH = (
    ("unlock", AU_UNLOCK, PW_REGS, T_ASCII, "W", "Write the password (ASCII, NUL padded) to unlock "
     "this port; wrong: exception 03, during a back-off lockout: exception 06"),
    ("lock", AU_LOCK, 1, T_U16, "W", "Write any value to lock this port again"),
    ("role", AU_ROLE, 1, T_U16, "R", "Role unlocked on this port: {auth_roles}"),
    ("lockout", AU_LOCKOUT, 1, T_U16, "R", "Seconds until a password may be tried again"),
    ("failures", AU_FAILS, 1, T_U16, "R", "Wrong passwords since the last correct one"),
    ("new_user_password", AU_NEW_USER, PW_REGS, T_ASCII, "W",
     "New user password, 4..16 printable ASCII (user role)"),
    ("new_factory_password", AU_NEW_FACTORY, PW_REGS, T_ASCII, "W",
     "New factory password (factory role)"),
    ("error_index", AU_ERR_INDEX, 1, T_S16, "R",
     "Parameter index named by the last refusal on this port (-1 none)"),
    ("error_code", AU_ERR_CODE, 1, T_U16, "R", "Exception code of the last refusal (0 none)"),
    ("error_text", AU_ERR_TEXT, 64, T_ASCII, "R", "Reason for the last refusal"),
    ("challenge_request", AU_CHAL_REQ, 1, T_U16, "W",
     "Write any value: a fresh challenge for this port (good for one answer, 30 s)"),
    ("challenge", AU_CHALLENGE, CHAL_REGS, T_U16, "R",
     "Bytes, big-endian pairs: 16-byte nonce, factory salt (8) and iterations (u16), user salt "
     "(8) and iterations (0: no such password)"),
    ("response", AU_RESPONSE, RESP_REGS, T_U16, "W",
     "HMAC-SHA256(key = SHA-256 password digest for that salt, message = nonce) for the factory "
     "record, then for the user record (64 bytes): unlocks this port without sending the "
     "password; wrong: exception 03 (counts as a wrong password); no challenge: exception 03"),
)

# ---- event log -------------------------------------------------------------
LH_COUNT = const(0)
LH_CAPACITY = const(1)
LH_NEXT_SEQ = const(2)  # u32
LOGHEAD_SIZE = const(4)
# Register f of a record -> field of EventLog.get()'s (seq, ts, kind, a, b)
# tuple and whether it is the high word; the layout of LOG_FIELDS.
_LOG_SRC = const((0, 0, 1, 1, 2, -1, 3, 3, 4, 4))
_LOG_HIGH = const((1, 0, 1, 0, 0, 0, 1, 0, 1, 0))
LOG_FIELDS = (
    ("seq", 0, T_U32, "Sequence number"),
    ("time", 2, T_U32, "Time stamp, ms ticks (wraps at 2**30)"),
    ("kind", 4, T_U16, "Event kind: {event_kinds}"),
    ("a", 6, T_S32, "First argument (fault id, relay, parameter index, command ...)"),
    ("b", 8, T_S32, "Second argument (value, state, argument ...)"),
)

# ---- blocks ----------------------------------------------------------------
B_INFO = const(0)
B_MON = const(1)
B_TEMPS = const(2)
B_CELLS = const(3)
B_PARAMS = const(4)
B_CMD = const(5)
B_AUTH = const(6)
B_LOGHEAD = const(7)
B_LOG = const(8)
B_UPDATE = const(9)
B_PLOG = const(10)
B_MODS = const(11)
B_SLAVE_UPDATE = const(12)



# ==== modules block: CAN slave modules of a master board (issue 5) =========
# Read only.  Filled from ``comms.can_master.CanMaster`` (``board.master``);
# a board without slave modules reads module_count 0 and zeros elsewhere.
# The name tuples below mirror can_master / can_ids / can_guard constants
# without importing them (a single board need not load the CAN master);
# host_tests/upy/test_can_modregs.py checks that they agree.
A_MODS = const(0x0600)
MH_COUNT = const(0)
MH_MODULE_CELLS = const(1)
MH_TOTAL_CELLS = const(2)
MH_OK = const(3)
MH_COMM_FAULT = const(4)
MH_CONFIG_OK = const(5)
MH_CAN_STATE = const(6)
MH_BUS_OFF = const(7)
MH_TX_FAIL = const(8)
MH_RX_FRAMES = const(9)     # u32
MH_TEC = const(11)
MH_REC = const(12)
MH_RX_OVERFLOW = const(13)
MH_TIMEOUT = const(14)
MH_PERIOD = const(15)
MOD_HEAD_SIZE = const(16)
MOD_STRIDE = const(16)
MOD_MAX = const(16)
MODS_SIZE = const(272)      # MOD_HEAD_SIZE + MOD_STRIDE * MOD_MAX
M_STATE = const(0)
M_WHY = const(1)
M_FIRST = const(2)
M_CELLS = const(3)
M_AGE = const(4)
M_LOST = const(5)
M_FAULTS = const(6)
M_SLAVE_STATE = const(7)
M_BAL = const(8)
M_N_TEMPS = const(9)
M_TEMP = const(10)          # 4 x s16
M_VERSION = const(14)       # 2 registers
MOD_TEMPS = const(4)
AGE_NEVER = const(0xFFFF)   # no complete sweep received since boot
AGE_MAX = const(0xFFFE)     # ages above 6553.4 s read as this
MOD_TEMP_ABSENT = const(-32768)
MOD_TEMP_OPEN = const(32767)
MOD_TEMP_SHORT = const(32766)

MOD_STATE_NAMES = ("absent", "ok", "lost", "bad")            # can_master.MS_*
_MS_OK = const(1)
MOD_WHY_BITS = ("cell_count", "afe", "echo", "frames", "config")  # can_master.W_*
MOD_FAULT_BITS = ("ov", "uv", "ot", "tsensor", "afe", "master_lost", "defaults")  # can_ids.LF_*
SLAVE_STATE_NAMES = ("boot", "run", "sleep", "fault")       # can_ids.ST_* (bits 0-3)
CAN_STATE_NAMES = ("error_active", "error_warning", "error_passive", "bus_off")

# name, offset, registers, type, unit, description
MOD_HEAD = (
    ("module_count", MH_COUNT, 1, T_U16, "modules",
     "Slave modules configured (0: this board has no CAN slave modules)"),
    ("module_cells", MH_MODULE_CELLS, 1, T_U16, "cells",
     "Cells per module as configured (the last module takes the remainder)"),
    ("module_total_cells", MH_TOTAL_CELLS, 1, T_U16, "cells", "Cells over all modules"),
    ("modules_ok", MH_OK, 1, T_U16, "modules", "Modules whose data is trusted now"),
    ("module_comm_fault", MH_COMM_FAULT, 1, T_U16, "bool",
     "A module is not ok (raises the COMM fault)"),
    ("module_config_ok", MH_CONFIG_OK, 1, T_U16, "bool",
     "cell_count / module_cells fit the module count fixed at boot"),
    ("can_state", MH_CAN_STATE, 1, T_U16, "enum",
     "Internal CAN controller state: {can_state_names}"),
    ("can_bus_off_count", MH_BUS_OFF, 1, T_U16, "count", "Bus-off events since boot"),
    ("can_tx_fail", MH_TX_FAIL, 1, T_U16, "count", "Frames not queued (no TX buffer), wraps"),
    ("can_rx_frames", MH_RX_FRAMES, 2, T_U32, "count", "Frames received since boot"),
    ("can_tec", MH_TEC, 1, T_U16, "count", "Controller transmit error counter"),
    ("can_rec", MH_REC, 1, T_U16, "count", "Controller receive error counter"),
    ("can_rx_overflow", MH_RX_OVERFLOW, 1, T_U16, "count", "Frames lost to a full RX buffer"),
    ("module_timeout", MH_TIMEOUT, 1, T_U16, "ms", "A module silent this long is lost"),
    ("module_sweep", MH_PERIOD, 1, T_U16, "ms", "Sweep (SYNC) period"),
)
# Module k (1-based) at A_MODS + MOD_HEAD_SIZE + MOD_STRIDE * (k - 1) + offset.
MOD_FIELDS = (
    ("state", M_STATE, 1, T_U16, "enum", "Module state: {module_state_names}"),
    ("why", M_WHY, 1, T_BITS, "bits", "Why it is not ok: {module_why_bits}"),
    ("first_cell", M_FIRST, 1, T_U16, "cell", "Its first cell, 1-based pack cell number"),
    ("cells", M_CELLS, 1, T_U16, "cells", "Its cell count (expected)"),
    ("age", M_AGE, 1, T_U16, "0.1s",
     "Time since its last complete sweep (65534: or more, 65535: none yet)"),
    ("lost_count", M_LOST, 1, T_U16, "count", "Times it went silent since boot"),
    ("faults", M_FAULTS, 1, T_BITS, "bits", "Faults it reports: {module_fault_bits}"),
    ("slave_state", M_SLAVE_STATE, 1, T_U16, "enum",
     "Its own state, bits 0-3: {slave_state_names}; bit 4 cell count locked, "
     "bit 5 auto-addressed"),
    ("balance", M_BAL, 1, T_BITS, "bits", "Bleeders on, bit j = its cell j + 1"),
    ("temp_count", M_N_TEMPS, 1, T_U16, "sensors", "Temperature sensors it reports"),
    ("temp1", M_TEMP, 1, T_S16, "0.1degC", "Sensor 1 (-32768 absent, 32767 open, 32766 short)"),
    ("temp2", M_TEMP + 1, 1, T_S16, "0.1degC", "Sensor 2 (-32768 absent, 32767 open, 32766 short)"),
    ("temp3", M_TEMP + 2, 1, T_S16, "0.1degC", "Sensor 3 (-32768 absent, 32767 open, 32766 short)"),
    ("temp4", M_TEMP + 3, 1, T_S16, "0.1degC", "Sensor 4 (-32768 absent, 32767 open, 32766 short)"),
    ("version", M_VERSION, 2, T_U32, "",
     "Firmware major, minor, patch, protocol (one byte each; 0: not read yet)"),
)


def can_master_of(bms):
    """The board's CAN master (``board.master``) or None on a single board."""
    m = getattr(getattr(bms, "board", None), "master", None)
    if m is None or getattr(m, "mod_state", None) is None:
        return None
    return m


def _mods_head(ms, o):
    if o == MH_COUNT:
        return ms.n_modules
    if o == MH_MODULE_CELLS:
        return ms.mod_cells[0] if ms.config_ok else 0
    if o == MH_TOTAL_CELLS:
        return ms.total_cells
    if o == MH_OK:
        n = 0
        st = ms.mod_state
        for k in range(ms.n_modules):
            if st[k] == _MS_OK:
                n += 1
        return n
    if o == MH_COMM_FAULT:
        return 1 if ms.comm_fault else 0
    if o == MH_CONFIG_OK:
        return 1 if ms.config_ok else 0
    if o == MH_CAN_STATE:
        return ms.guard.state
    if o == MH_BUS_OFF:
        return ms.guard.bus_off_count
    if o == MH_TX_FAIL:
        return ms.tx_fail
    if o == MH_RX_FRAMES:
        return ms.rx_frames >> 16
    if o == MH_RX_FRAMES + 1:
        return ms.rx_frames
    if o == MH_TEC:
        return getattr(ms.ctrl, "tec", 0)
    if o == MH_REC:
        return getattr(ms.ctrl, "rec", 0)
    if o == MH_RX_OVERFLOW:
        return getattr(ms.ctrl, "rx_overflow", 0)
    if o == MH_TIMEOUT:
        return ms.timeout if ms.timeout < 0xFFFF else 0xFFFF
    if o == MH_PERIOD:
        return ms.period
    return 0


def _mods_field(ms, k, f, now):
    if f == M_STATE:
        return ms.mod_state[k]
    if f == M_WHY:
        return ms.mod_why[k]
    if f == M_FIRST:
        return ms.mod_first[k] + 1 if ms.mod_cells[k] else 0
    if f == M_CELLS:
        return ms.mod_cells[k]
    if f == M_AGE:
        if not ms.mod_full_ever[k]:
            return AGE_NEVER
        a = ms.module_age_ms(k, now)
        if a < 0:
            return 0
        a //= 100
        return a if a < AGE_MAX else AGE_MAX
    if f == M_LOST:
        return ms.mod_lost_count[k]
    if f == M_FAULTS:
        return ms.mod_faults[k]
    if f == M_SLAVE_STATE:
        return ms.mod_slave_state[k]
    if f == M_BAL:
        return ms.mod_bal[k]
    if f == M_N_TEMPS:
        return ms.mod_n_temps[k]
    if M_TEMP <= f < M_TEMP + MOD_TEMPS:
        return ms.temp_dc[MOD_TEMPS * k + f - M_TEMP]
    if f == M_VERSION or f == M_VERSION + 1:
        j = 4 * k + 2 * (f - M_VERSION)
        v = ms.mod_version
        return (v[j] << 8) | v[j + 1]
    return 0


def read_modules(r, off, count, out, pos):
    """Fill ``count`` registers of the modules block (allocation-free)."""
    ms = can_master_of(r.bms)
    now = r.bms.clock.ticks_ms() if ms is not None else 0
    for i in range(count):
        o = off + i
        v = 0
        if ms is not None:
            if o < MOD_HEAD_SIZE:
                v = _mods_head(ms, o)
            else:
                k = (o - MOD_HEAD_SIZE) // MOD_STRIDE
                if k < ms.n_modules:
                    v = _mods_field(ms, k, o - MOD_HEAD_SIZE - k * MOD_STRIDE, now)
        put16(out, pos + 2 * i, v & 0xFFFF)


# ---- slave firmware update window (issue 7: slaves updated through the master) ----
A_SLAVE_UPDATE = const(0x2C00)
# ==== end of modules block ===================================================

# ---- blocks ----------------------------------------------------------------
# Sizes of blocks defined in other modules, as literal copies so BLOCKS is a
# compile-time constant (host_tests/test_const_tables.py checks them).
_N_PARAMS = const(60)            # bms.params.N_PARAMS
_UPDATE_SIZE = const(251)        # comms.reg_update.UPDATE_SIZE
_PLOG_SIZE = const(128)          # comms.reg_update.PLOG_SIZE
_SLAVE_UPDATE_SIZE = const(320)  # comms.reg_slave_update.SIZE

# name, start, size (None: from the event log's capacity), description;
# row i is block B_* = i.
BLOCKS = (
    ("identity", A_INFO, INFO_SIZE, "Device identity (ASCII) and map sizes"),
    ("monitor", A_MON, MON_SIZE, "Live values, read only"),
    ("temps", A_TEMPS, TEMPS_SIZE, "Every temperature sensor"),
    ("cells", A_CELLS, MAX_CELLS, "Cell voltages, mV (0xFFFF: reading invalid)"),
    ("params", A_PARAMS, _N_PARAMS, "Parameters, read/write (user role)"),
    ("commands", A_CMD, CMD_SIZE, "Commands, write only (user role)"),
    ("auth", A_AUTH, AUTH_SIZE, "Password and last-error registers"),
    ("log_head", A_LOGHEAD, LOGHEAD_SIZE, "Event log state"),
    ("log", A_LOG, None, "Event records, {log_rec_regs} registers each"),
    # ---- issue 7: firmware update and persistent log windows ----
    ("update", A_UPDATE, _UPDATE_SIZE, "Firmware update window (user role)"),
    ("plog", A_PLOG, _PLOG_SIZE,
     "Persistent event log: index + {plog_window} records with snapshots"),
    # ---- issue 5: CAN slave modules ----
    ("modules", A_MODS, MODS_SIZE, "CAN slave modules: state, cells, age, "
     "faults, balancing, temperatures (read only)"),
    ("slave_update", A_SLAVE_UPDATE, _SLAVE_UPDATE_SIZE,
     "Slave firmware update: upload to the master, forward over CAN (user role)"),
)


def get_s16(buf, pos):
    v = (buf[pos] << 8) | buf[pos + 1]
    return v - 0x10000 if v & 0x8000 else v


class RegisterMap:
    """Reads and writes registers against a running Bms.

    ``read`` fills big-endian words into a caller's buffer and allocates
    nothing for the identity, monitor, temps, cells, params and log-head
    blocks (what a monitor polls).  Writes go through ``ParamSet.set_many``
    or ``bms.request`` and may allocate (they are rare and validated).
    """

    def __init__(self, bms, auth=None, info=None, channel=CH_MODBUS):
        self.bms = bms
        self.auth = auth
        self.info = info if info is not None else DeviceInfo()
        self.channel = channel
        self._mon = array("H", [0] * MON_SIZE)
        self.err_index = -1
        self.err_code = 0
        self.err_text = bytearray(ERR_TEXT_LEN)
        self._chal = None   # this port's last challenge (bytes), built on request
        cap = bms.log.capacity
        if cap > LOG_MAX_RECORDS:
            cap = LOG_MAX_RECORDS
        self.log_size = cap * LOG_REC_REGS
        self._start = array("H", [b[1] for b in BLOCKS])
        self._size = array("H", [b[2] if b[2] is not None else self.log_size for b in BLOCKS])
        self.writes = 0      # accepted writes
        self.refused = 0     # refused writes
        # ---- issue 7 windows: built on first access.  Their modules (and
        # a master's slave forwarder) cost several KB of heap that a pack
        # nobody updates or reads the flash log of never spends.
        self._updater = None
        self._updater_of = None
        self._plog_src = None
        self._fwd_of = None
        self._update = None
        self._plog = None
        self._slave_update = None

    def attach_slave_update(self, fwd_of):
        """Serve the slave firmware update window (a master with CAN slave
        modules); ``fwd_of()`` returns the forwarder, built when first needed."""
        self._fwd_of = fwd_of
        self._slave_update = None
        return self

    def attach_update(self, updater=None, plog=None, updater_of=None):
        """Serve the firmware update and persistent log windows (issue 7);
        ``updater_of()`` builds the updater when the window is first used."""
        self._updater = updater
        self._updater_of = updater_of
        self._plog_src = plog
        self._update = None
        self._plog = None
        return self

    @property
    def update(self):
        if self._update is None:
            from comms.reg_update import UpdateWindow
            up = self._updater
            if up is None and self._updater_of is not None:
                up = self._updater_of()
            self._update = UpdateWindow(up)
        return self._update

    @property
    def plog(self):
        if self._plog is None:
            from comms.reg_update import PlogWindow
            self._plog = PlogWindow(self._plog_src)
        return self._plog

    @property
    def slave_update(self):
        if self._slave_update is None:
            from comms.reg_slave_update import SlaveUpdateWindow
            fwd = self._fwd_of() if self._fwd_of is not None else None
            self._slave_update = SlaveUpdateWindow(fwd.store if fwd is not None else None, fwd)
        return self._slave_update

    # ---- lookup -------------------------------------------------------
    def block(self, addr, count):
        """Index of the block holding ``addr .. addr+count-1``, else -1."""
        st = self._start
        sz = self._size
        for b in range(len(st)):
            s = st[b]
            if s <= addr < s + sz[b]:
                return b if addr + count <= s + sz[b] else -1
        return -1

    # ---- reads --------------------------------------------------------
    def read(self, addr, count, out, pos):
        """Fill ``count`` registers at ``out[pos:]``; returns an exception code."""
        b = self.block(addr, count)
        if b < 0:
            return EX_ADDRESS
        off = addr - self._start[b]
        if b == B_MODS:  # modules block (issue 5), see its section above
            read_modules(self, off, count, out, pos)
            return EX_NONE
        if b == B_MON:
            self._fill_monitor()
            mon = self._mon
            for k in range(count):
                put16(out, pos + 2 * k, mon[off + k])
        elif b == B_CELLS:
            m = self.bms.meas
            n = m.n_cells
            mv = m.cell_mv
            ok = m.cell_ok
            for k in range(count):
                i = off + k
                v = 0
                if i < n:
                    v = mv[i] if ok[i] else 0xFFFF
                put16(out, pos + 2 * k, v)
        elif b == B_PARAMS:
            vals = self.bms.params.values
            for k in range(count):
                put16(out, pos + 2 * k, vals[off + k] & 0xFFFF)
        elif b == B_TEMPS:
            for k in range(count):
                put16(out, pos + 2 * k, self._temp_reg(off + k))
        elif b == B_INFO:
            for k in range(count):
                put16(out, pos + 2 * k, self._info_reg(off + k))
        elif b == B_AUTH:
            for k in range(count):
                put16(out, pos + 2 * k, self._auth_reg(off + k))
        elif b == B_LOGHEAD:
            log = self.bms.log
            for k in range(count):
                o = off + k
                v = 0
                if o == LH_COUNT:
                    v = len(log)
                elif o == LH_CAPACITY:
                    v = self.log_size // LOG_REC_REGS
                elif o == LH_NEXT_SEQ:
                    v = (log.next_seq >> 16) & 0xFFFF
                elif o == LH_NEXT_SEQ + 1:
                    v = log.next_seq & 0xFFFF
                put16(out, pos + 2 * k, v)
        elif b == B_LOG:
            self._read_log(off, count, out, pos)
        # ---- issue 7 ----
        elif b == B_UPDATE:
            for k in range(count):
                put16(out, pos + 2 * k, self.update.reg(off + k))
        elif b == B_PLOG:
            self.plog.read(off, count, out, pos)
        elif b == B_SLAVE_UPDATE:
            for k in range(count):
                put16(out, pos + 2 * k, self.slave_update.reg(off + k))
        # ---- end issue 7 ----
        else:  # commands read as 0
            for k in range(count):
                put16(out, pos + 2 * k, 0)
        return EX_NONE

    def _fill_monitor(self):
        mon = self._mon
        rows = MONITOR
        offs = MON_OFF
        for i in range(len(rows)):
            row = rows[i]
            v = _mon_value(self, row[4])
            o = offs[i]
            t = row[1]
            if t == T_U32 or t == T_S32:
                mon[o] = (v >> 16) & 0xFFFF
                mon[o + 1] = v & 0xFFFF
            else:
                mon[o] = v & 0xFFFF

    def _temp_reg(self, o):
        m = self.bms.meas
        n = m.n_temps
        if o == T_COUNT:
            return n
        if T_VALUE <= o < T_VALUE + MAX_TEMPS:
            i = o - T_VALUE
            return m.temp_dc[i] & 0xFFFF if i < n else 0
        if T_STATUS <= o < T_STATUS + MAX_TEMPS:
            i = o - T_STATUS
            return m.temp_status[i] if i < n else 3
        if T_ROLE <= o < T_ROLE + MAX_TEMPS:
            i = o - T_ROLE
            return m.temp_role[i] if i < n else 0
        return 0

    def _info_reg(self, o):
        for name, off, n, typ, _w, _d in INFO:
            if off <= o < off + n:
                if typ == T_ASCII:
                    f = self.info.fields[name]
                    j = 2 * (o - off)
                    return (f[j] << 8) | f[j + 1]
                if name == "map_version":
                    return MAP_VERSION
                if name == "max_cells":
                    return self.bms.meas.max_cells
                if name == "temp_sensors":
                    return self.bms.meas.n_temps
                if name == "param_count":
                    return _N_PARAMS
        return 0

    def _auth_reg(self, o):
        a = self.auth
        if o == AU_ROLE:
            return a.role(self.channel) if a is not None else 0
        if o == AU_LOCKOUT:
            return (a.lockout_ms(self.channel) + 999) // 1000 if a is not None else 0
        if o == AU_FAILS:
            return a.failures_of(self.channel) if a is not None else 0
        if o == AU_ERR_INDEX:
            return self.err_index & 0xFFFF
        if o == AU_ERR_CODE:
            return self.err_code
        if AU_ERR_TEXT <= o < AU_ERR_TEXT + ERR_TEXT_LEN // 2:
            j = 2 * (o - AU_ERR_TEXT)
            return (self.err_text[j] << 8) | self.err_text[j + 1]
        if AU_CHALLENGE <= o < AU_CHALLENGE + CHAL_REGS and self._chal is not None:
            j = 2 * (o - AU_CHALLENGE)
            return (self._chal[j] << 8) | self._chal[j + 1]
        return 0

    def _read_log(self, off, count, out, pos):
        log = self.bms.log
        n = len(log)
        rec = -1
        r = None
        for k in range(count):
            o = off + k
            i = o // LOG_REC_REGS
            f = o - i * LOG_REC_REGS
            v = 0
            if i < n:
                if i != rec:
                    r = log.get(i)
                    rec = i
                src = _LOG_SRC[f]
                if src >= 0:
                    v = r[src] >> 16 if _LOG_HIGH[f] else r[src]
            put16(out, pos + 2 * k, v & 0xFFFF)

    # ---- writes -------------------------------------------------------
    def _error(self, code, index, text):
        self.err_code = code
        self.err_index = index
        t = self.err_text
        if isinstance(text, str):
            text = text.encode()
        for i in range(len(t)):
            t[i] = text[i] if i < len(text) else 0
        self.refused += 1
        return code

    def _allowed(self, role):
        a = self.auth
        if a is None:
            return True  # no access control configured (bench rigs only)
        return a.allowed(self.channel, role)

    def write(self, addr, count, data, pos):
        """Write ``count`` big-endian registers from ``data[pos:]``; exception code."""
        b = self.block(addr, count)
        if b < 0:
            return self._error(EX_ADDRESS, -1, "address range not writable")
        off = addr - self._start[b]
        if b == B_PARAMS:
            code = self._write_params(off, count, data, pos)
        elif b == B_CMD:
            code = self._write_command(off, count, data, pos)
        elif b == B_AUTH:
            code = self._write_auth(off, count, data, pos)
        elif b == B_INFO:
            code = self._write_info(off, count, data, pos)
        # ---- issue 7 ----
        elif b == B_UPDATE:
            code = self.update.write(self, off, count, data, pos)
        elif b == B_PLOG:
            code = self.plog.write(self, off, count, data, pos)
        elif b == B_SLAVE_UPDATE:
            code = self.slave_update.write(self, off, count, data, pos)
        # ---- end issue 7 ----
        else:
            return self._error(EX_ADDRESS, -1, "read-only block")
        if code == EX_NONE:
            self.writes += 1
            self.err_code = 0
            self.err_index = -1
        return code

    def _locked(self):
        a = self.auth
        if a is not None and self.channel == CH_BLE and a.role(CH_BLE) and a.ble_default():
            return self._error(EX_FUNCTION, -1, "Bluetooth writes refused while the default "
                               "password is set: change it first")
        return self._error(EX_FUNCTION, -1, "locked: unlock with the password first")

    def _write_params(self, off, count, data, pos):
        if not self._allowed(ROLE_USER):
            return self._locked()
        params = self.bms.params
        pairs = []
        for k in range(count):
            i = off + k
            v = get_s16(data, pos + 2 * k) if param_signed(i) else get16(data, pos + 2 * k)
            # Re-writing the current chemistry is not a chemistry change:
            # it must not reload that chemistry's defaults.
            if i == P_CHEMISTRY and v == params[P_CHEMISTRY] and count > 1:
                continue
            pairs.append((i, v))
        try:
            # The factory role may write FACTORY_ONLY rows (custom_chem).
            params.set_many(pairs, self._allowed(ROLE_FACTORY))
        except ParamError as e:
            return self._error(EX_VALUE, e.index, e.reason)
        return EX_NONE

    def _write_command(self, off, count, data, pos):
        if off & 1 or count > 2:
            return self._error(EX_ADDRESS, -1, "one command per write, at its first register")
        if not self._allowed(ROLE_USER):
            return self._locked()
        cmd = off // 2 + 1
        if count == 2:
            arg = (get_s16(data, pos) << 16) | get16(data, pos + 2)
        else:
            arg = get_s16(data, pos)
        res = self.bms.request(cmd, arg)
        if res == ACCEPTED:
            return EX_NONE
        if res == ILLEGAL:
            return self._error(EX_VALUE, -1, "%s: illegal argument %d" % (CMD_NAMES[cmd], arg))
        return self._error(EX_BUSY, -1, "another command is still pending")

    def _ascii(self, count, data, pos):
        n = 0
        raw = bytearray(2 * count)
        for k in range(2 * count):
            raw[k] = data[pos + k]
        while n < len(raw) and raw[n]:
            n += 1
        return bytes(raw[:n])

    def _write_auth(self, off, count, data, pos):
        a = self.auth
        if a is None:
            return self._error(EX_ADDRESS, -1, "no access control on this port")
        if off == AU_UNLOCK and count <= PW_REGS:
            res = a.unlock(self.channel, self._ascii(count, data, pos))
            if res == AUTH_OK:
                return EX_NONE
            if res == LOCKED_OUT:
                return self._error(EX_BUSY, -1, "too many wrong passwords: wait %d s"
                                   % ((a.lockout_ms(self.channel) + 999) // 1000))
            if res == AUTH_INVALID and self.channel == CH_BLE:
                return self._error(EX_VALUE, -1, "no plaintext password over Bluetooth: "
                                   "use the challenge (challenge_request / response)")
            return self._error(EX_VALUE, -1, "wrong password")
        if off == AU_LOCK and count == 1:
            a.lock(self.channel)
            return EX_NONE
        if off == AU_CHAL_REQ and count == 1:
            self._chal = a.challenge(self.channel)
            return EX_NONE
        if off == AU_RESPONSE and count == RESP_REGS:
            raw = bytearray(2 * RESP_REGS)
            for k in range(2 * RESP_REGS):
                raw[k] = data[pos + k]
            res = a.respond(self.channel, raw[:32], raw[32:])
            self._chal = None
            if res == AUTH_OK:
                return EX_NONE
            if res == LOCKED_OUT:
                return self._error(EX_BUSY, -1, "too many wrong passwords: wait %d s"
                                   % ((a.lockout_ms(self.channel) + 999) // 1000))
            if res == AUTH_INVALID:
                return self._error(EX_VALUE, -1, "no challenge outstanding: request one first")
            return self._error(EX_VALUE, -1, "wrong password")
        if off in (AU_NEW_USER, AU_NEW_FACTORY) and count <= PW_REGS:
            role = ROLE_USER if off == AU_NEW_USER else ROLE_FACTORY
            # The role itself, not allowed(): over Bluetooth the default
            # password blocks every write except its own change.
            if a.role(self.channel) < role:
                return self._error(EX_FUNCTION, -1, "locked: unlock as %s first" % ROLE_NAMES[role])
            if a.change(self.channel, role, self._ascii(count, data, pos)) != AUTH_OK:
                return self._error(EX_VALUE, -1, "password must be 4..16 printable ASCII characters")
            return EX_NONE
        return self._error(EX_ADDRESS, -1, "not a writable auth register")

    def _write_info(self, off, count, data, pos):
        for name, o, n, typ, writable, _d in INFO:
            if o == off and writable and count <= n:
                if not self._allowed(ROLE_FACTORY):
                    return self._error(EX_FUNCTION, -1, "locked: identity needs the factory role")
                self.info.set(name, self._ascii(count, data, pos))
                return EX_NONE
        return self._error(EX_ADDRESS, -1, "not a writable identity field")

    # ---- device identification (FC 43 / MEI 14) ------------------------
    def device_id_object(self, oid):
        """Bytes of identification object ``oid`` or None (allocates; rare)."""
        i = self.info
        if oid == 0:
            return i.get("vendor").encode()
        if oid == 1:
            return i.get("model").encode()
        if oid == 2:
            return i.get("firmware").encode()
        if oid == 3:
            return b"https://github.com/micropython-bms"
        if oid == 4:
            return b"MicroPython BMS"
        if oid == 5:
            return i.get("model").encode()
        if oid == 6:
            return b"bms"
        if oid == 0x80:
            return i.get("serial").encode()
        if oid == 0x81:
            return i.get("mfg_date").encode()
        if oid == 0x82:
            return i.get("bt_addr").encode()
        return None
