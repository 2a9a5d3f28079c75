"""Monitor block: the live values a PC tool or display polls, read only.

Every row is a compile-time constant (it stays in flash when frozen):
(name, type, unit, description, source).  ``source`` is a _S_* code: the
index ``_fill`` puts that live value at.  A read fills every value (0.2 ms
on an RP2040, emulated), places the registers it covers and allocates
nothing.  A description holding a ``{key}``
placeholder is completed from the other tables by ``comms.regdoc.doc``
(docs and host tools only).
"""
from micropython import const

from bms import faults as F
from comms.regs import codes, rows

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
    ("pack_voltage", "u32", "mV", "Pack voltage (measured stack, else sum of cells)", _S_PACK_MV),
    ("current", "s32", "mA", "Pack current, positive = charging", _S_CURRENT),
    ("soc", "u16", "0.1%", "State of charge", _S_SOC),
    ("soh", "u16", "0.1%", "State of health: learned capacity / rated capacity "
     "(100.0 % until a capacity was learned)", _S_SOH),
    ("remaining_capacity", "u32", "mAh", "Remaining charge", _S_REMAINING),
    ("full_capacity", "u32", "mAh", "Full charge capacity", _S_FULL),
    ("cycles", "u16", "cycles", "Full discharge cycles counted", _S_CYCLES),
    ("cell_count", "u16", "cells", "Cells in series", _S_CELLS),
    ("cell_max", "u16", "mV", "Highest cell voltage", _S_MAX_MV),
    ("cell_max_index", "u16", "cell", "Cell with the highest voltage (1-based)", _S_MAX_IDX),
    ("cell_min", "u16", "mV", "Lowest cell voltage", _S_MIN_MV),
    ("cell_min_index", "u16", "cell", "Cell with the lowest voltage (1-based)", _S_MIN_IDX),
    ("cell_diff", "u16", "mV", "Highest minus lowest cell voltage", _S_DIFF),
    ("cell_avg", "u16", "mV", "Average of the valid cells", _S_AVG),
    # one max/min pair per role of bms.measurements.ROLE_NAMES, in its order
    ("t_power_max", "s16", "0.1degC", "Hottest power sensor (-32768: none valid)", _S_TMAX + 0),
    ("t_power_min", "s16", "0.1degC", "Coldest power sensor (32767: none valid)", _S_TMIN + 0),
    ("t_balance_max", "s16", "0.1degC", "Hottest balance sensor (-32768: none valid)",
     _S_TMAX + 1),
    ("t_balance_min", "s16", "0.1degC", "Coldest balance sensor (32767: none valid)",
     _S_TMIN + 1),
    ("t_cell_max", "s16", "0.1degC", "Hottest cell sensor (-32768: none valid)", _S_TMAX + 2),
    ("t_cell_min", "s16", "0.1degC", "Coldest cell sensor (32767: none valid)", _S_TMIN + 2),
    ("t_ambient_max", "s16", "0.1degC", "Hottest ambient sensor (-32768: none valid)",
     _S_TMAX + 3),
    ("t_ambient_min", "s16", "0.1degC", "Coldest ambient sensor (32767: none valid)",
     _S_TMIN + 3),
    ("mode", "u16", "enum", "Operating mode: {mode_names}", _S_MODE),
    ("dsg_state", "u16", "enum", "Discharge path: {dsg_names}", _S_DSG_STATE),
    ("relays", "bits", "bits", "Relay/MOS states (1 = closed): {relay_bits}", _S_RELAYS),
    ("fault_level", "u16", "enum", "Highest active fault level: {level_names}", _S_FAULT_LEVEL),
    # Fault bit fields: bit b of word k is fault id 16 * k + b (docs/faults.md).
    ("faults_0", "bits", "bits", "Every active fault: {faults_0}", _S_FAULTS + 0),
    ("faults_1", "bits", "bits", "Every active fault: {faults_1}", _S_FAULTS + 1),
    ("protection_0", "bits", "bits", "Active protections (level >= protection): {protection_0}",
     _S_PROT + 0),
    ("protection_1", "bits", "bits", "Active protections (level >= protection): {protection_1}",
     _S_PROT + 1),
    ("alarm_0", "bits", "bits", "Active alarms (warnings): {alarm_0}", _S_ALARM + 0),
    ("alarm_1", "bits", "bits", "Active alarms (warnings): {alarm_1}", _S_ALARM + 1),
    ("balancing_count", "u16", "cells", "Cells bleeding now", _S_BAL_COUNT),
    ("balance_0", "bits", "bits", "Balancing mask, bit b = cell 1 + b", _S_BALANCE + 0),
    ("balance_1", "bits", "bits", "Balancing mask, bit b = cell 17 + b", _S_BALANCE + 1),
    ("balance_2", "bits", "bits", "Balancing mask, bit b = cell 33 + b", _S_BALANCE + 2),
    ("balance_3", "bits", "bits", "Balancing mask, bit b = cell 49 + b", _S_BALANCE + 3),
    ("balance_4", "bits", "bits", "Balancing mask, bit b = cell 65 + b", _S_BALANCE + 4),
    ("balance_5", "bits", "bits", "Balancing mask, bit b = cell 81 + b", _S_BALANCE + 5),
    ("balance_6", "bits", "bits", "Balancing mask, bit b = cell 97 + b", _S_BALANCE + 6),
    ("balance_7", "bits", "bits", "Balancing mask, bit b = cell 113 + b", _S_BALANCE + 7),
    ("balance_8", "bits", "bits", "Balancing mask, bit b = cell 129 + b", _S_BALANCE + 8),
    ("balance_9", "bits", "bits", "Balancing mask, bit b = cell 145 + b", _S_BALANCE + 9),
    ("balance_10", "bits", "bits", "Balancing mask, bit b = cell 161 + b", _S_BALANCE + 10),
    ("balance_11", "bits", "bits", "Balancing mask, bit b = cell 177 + b", _S_BALANCE + 11),
    ("balance_12", "bits", "bits", "Balancing mask, bit b = cell 193 + b", _S_BALANCE + 12),
    ("balance_13", "bits", "bits", "Balancing mask, bit b = cell 209 + b", _S_BALANCE + 13),
    ("balance_14", "bits", "bits", "Balancing mask, bit b = cell 225 + b", _S_BALANCE + 14),
    ("balance_15", "bits", "bits", "Balancing mask, bit b = cell 241 + b", _S_BALANCE + 15),
    ("cmd_pending", "u16", "bool", "A command waits for the next control cycle", _S_CMD_PENDING),
    ("param_version", "u16", "count", "Increments on every accepted parameter change",
     _S_PARAM_VERSION),
    ("log_next_seq", "u32", "count", "Sequence number the next event will get", _S_LOG_SEQ),
    ("auth_role", "u16", "enum", "Role unlocked on this port: {auth_roles}", _S_AUTH_ROLE),
    ("bus_errors", "u16", "count", "Failed bus transactions since boot", _S_BUS_ERRORS),
    ("exceptions", "u16", "count", "Control-cycle exceptions since boot", _S_EXCEPTIONS),
    ("running", "u16", "bool", "Measurements complete, relays may close", _S_RUNNING),
)
SIZE = const(61)        # registers of MONITOR (u32/s32 take two); a test checks it
_LAYOUT = rows.Layout(MONITOR)


_VALS = rows.values(_LAYOUT)     # shared by every port: filled and packed in one read


def _fault_words(prot, v, at, level_lo, level_hi):
    # The fault ids of each level into words ``v[at]``, ``v[at + 1]``.
    # Nothing active is the usual answer (every fault's level is at least
    # 1, so level 0 means none): no walk over the table then.
    v[at] = 0
    v[at + 1] = 0
    if prot.level == 0:
        return
    lvl = prot.f_level
    st = prot.state
    for i in range(F.N_FAULTS):
        if st[i] and level_lo <= lvl[i] <= level_hi:
            v[at + (i >> 4)] |= 1 << (i & 15)


def _fill(rm, v):
    """Every source's live value into ``v`` (allocation-free): one function,
    no call per value (see ``comms.regs.rows``)."""
    b = rm.bms
    m = b.meas
    soc = b.soc
    v[_S_PACK_MV] = m.pack_mv if m.pack_mv else m.sum_mv
    v[_S_CURRENT] = m.current_ma
    v[_S_SOC] = soc.soc_pm
    v[_S_SOH] = soc.soh_pm
    v[_S_REMAINING] = soc.remaining_mah
    v[_S_FULL] = soc.capacity_mah
    v[_S_CYCLES] = soc.cycles
    v[_S_CELLS] = m.n_cells
    v[_S_MAX_MV] = m.max_mv
    v[_S_MAX_IDX] = m.max_idx + 1
    v[_S_MIN_MV] = m.min_mv
    v[_S_MIN_IDX] = m.min_idx + 1
    v[_S_DIFF] = m.diff_mv
    n = m.n_cells - m.bad_cells
    v[_S_AVG] = m.sum_mv // n if n > 0 else 0
    tx = m.tmax
    tn = m.tmin
    for r in range(4):
        v[_S_TMAX + r] = tx[r]
        v[_S_TMIN + r] = tn[r]
    v[_S_MODE] = b.mode
    v[_S_DSG_STATE] = b.contactors.dsg_state
    st = b.contactors.state
    w = 0
    for i in range(len(st)):
        if st[i]:
            w |= 1 << i
    v[_S_RELAYS] = w
    prot = b.prot
    v[_S_FAULT_LEVEL] = prot.level
    _fault_words(prot, v, _S_FAULTS, 0, 9)
    _fault_words(prot, v, _S_PROT, F.L_PROT, 9)
    _fault_words(prot, v, _S_ALARM, F.L_WARN, F.L_WARN)
    bal = b.balancer
    v[_S_BAL_COUNT] = bal.count
    for k in range(16):
        v[_S_BALANCE + k] = 0
    if bal.count:      # the usual answer is nothing bleeding: no walk then
        f = bal.flags
        for i in range(len(f) if len(f) < 256 else 256):
            if f[i]:
                v[_S_BALANCE + (i >> 4)] |= 1 << (i & 15)
    v[_S_CMD_PENDING] = 1 if b.cmd_pending else 0
    v[_S_PARAM_VERSION] = b.params.version & 0xFFFF
    v[_S_LOG_SEQ] = b.log.next_seq
    v[_S_AUTH_ROLE] = rm.auth.role(rm.channel) if rm.auth is not None else 0
    v[_S_BUS_ERRORS] = b.bus_errors & 0xFFFF
    v[_S_EXCEPTIONS] = b.exceptions & 0xFFFF
    v[_S_RUNNING] = 1 if b.running else 0


def read(rm, off, count, out, pos):
    _fill(rm, _VALS)
    return rows.pack(_LAYOUT, _VALS, off, count, out, pos)


write = codes.read_only


def offsets():
    """Register offset of each MONITOR row (host tools, tests)."""
    return rows.offsets(MONITOR)


def doc(start):
    return rows.doc("Monitor (live values)", MONITOR, start)

