"""The Modbus register map: the table of blocks, and one port's view of it.

Addressing is 0-based: the address in this map is the number sent in the
request PDU (no "40001" offsets).  Function codes 03 and 04 read the same
map.  Every request must stay inside one block; a range that leaves its
block (or touches no block) is answered with exception 02.  Reserved
registers inside a block read as 0.

Encodings: registers are big-endian 16-bit words; 32-bit values take two
registers, high word first; ASCII fields hold two characters per register,
first character in the high byte, padded with NUL.

``BLOCKS`` names every block: its start address, size, a description and
the module that serves it (``comms.regs``; see that package for what a
block module provides).  ``RegisterMap.read`` / ``write`` find the block of
a request and hand it to that module: one table lookup, no per-block code
here.  The module is imported the first time a request touches its block.
The docs (tools/gendocs.py) and the CSV are generated from the same table.

Writes to params, commands and password changes need the user role, the
identity fields and the factory password the factory role (``bms.auth``).
A refused write answers an exception and the reason can be read from the
auth block's last-error registers (``refuse``).

``BLOCKS`` is a compile-time constant (literals and this module's
``const()`` names only), so a frozen build keeps it in flash rather than on
the heap (host_tests/test_const_tables.py, which also checks every size
copied here against its block module).
"""
from array import array

from micropython import const

from bms.auth import CH_BLE, CH_MODBUS
from comms.regs.codes import EX_ADDRESS, EX_FUNCTION, EX_NONE, LOCKED

# Block start addresses
A_INFO = const(0x0000)
A_MON = const(0x0100)
A_STATUS = const(0x0180)
A_TEMPS = const(0x0200)
A_CELLS = const(0x0400)
A_MODS = const(0x0600)
A_BATTERY = const(0x0800)
A_BALANCE = const(0x0900)
A_NAMES = const(0x1100)
A_PARAMS = const(0x1000)
A_CMD = const(0x2000)
A_CMD_RESULT = const(0x2040)
A_CLOCK = const(0x2200)
A_LEASE = const(0x2210)
A_LOG_WALL = const(0x8000)
A_AUTH = const(0x2100)
A_UPDATE = const(0x2800)
A_PLOG = const(0x2A00)
A_SLAVE_UPDATE = const(0x2C00)
A_LOGHEAD = const(0x3000)
A_LOG = const(0x4000)

_ERR_TEXT_LEN = const(128)      # comms.regs.auth.ERR_TEXT_LEN
_LOG_REC_REGS = const(10)       # comms.regs.log.REC_REGS
_LOG_MAX_RECORDS = const(1600)  # comms.regs.log.MAX_RECORDS

# name, start, size (None: from the event log's capacity), description, the
# module serving it.  Sizes are literal copies of each module's SIZE (a test
# checks them); a description's {key} is filled in by comms.regdoc.
BLOCKS = (
    ("identity", A_INFO, 0x40, "Device identity (ASCII) and map sizes", "comms.regs.identity"),
    ("monitor", A_MON, 61, "Live values, read only", "comms.regs.monitor"),
    ("status", A_STATUS, 16, "Validity flags, inverter limits, power, relays (read only)",
     "comms.regs.status"),
    ("temps", A_TEMPS, 49, "Every temperature sensor", "comms.regs.temps"),
    ("cells", A_CELLS, 256, "Cell voltages, mV (0xFFFF: reading invalid)", "comms.regs.cells"),
    ("battery", A_BATTERY, 15, "Battery data: SOH, capacities, cycles, learned OCV table",
     "comms.regs.battery"),
    ("balance", A_BALANCE, 258, "Per-cell balancing: state, current setting, charge bled "
     "per cell", "comms.regs.balance"),
    ("names", A_NAMES, 56, "Bluetooth and device names (user role), battery code (factory "
     "role)", "comms.regs.names"),
    ("params", A_PARAMS, 64, "Parameters, read/write (user role)", "comms.regs.params"),
    ("commands", A_CMD, 20, "Commands, write only (user role)", "comms.regs.commands"),
    ("cmd_result", A_CMD_RESULT, 6, "Result of the last command (read it back after a "
     "command write)", "comms.regs.cmd_result"),
    ("clock", A_CLOCK, 4, "Wall-clock time (Unix seconds), set from the PC (user role)",
     "comms.regs.clock"),
    ("lease", A_LEASE, 16, "Lease lock: state, remaining time, renewal code entry",
     "comms.regs.lease"),
    ("auth", A_AUTH, 0x95, "Password and last-error registers", "comms.regs.auth"),
    ("log_head", A_LOGHEAD, 4, "Event log state", "comms.regs.log_head"),
    ("log", A_LOG, None, "Event records, {log_rec_regs} registers each", "comms.regs.log"),
    ("modules", A_MODS, 272, "CAN slave modules: state, cells, age, "
     "faults, balancing, temperatures (read only)", "comms.regs.modules"),
    ("update", A_UPDATE, 251, "Firmware update window (user role)", "comms.regs.update"),
    ("plog", A_PLOG, 128, "Persistent event log: index + {plog_window} records with snapshots",
     "comms.regs.plog"),
    ("slave_update", A_SLAVE_UPDATE, 320,
     "Slave firmware update: upload to the master, forward over CAN (user role)",
     "comms.regs.slave_update"),
    ("log_wall", A_LOG_WALL, 3200, "Wall-clock time of each event record (Unix seconds)",
     "comms.regs.log_wall"),
)

# The block modules, imported on first use (shared by every port).
_MODS = [None] * len(BLOCKS)
# Start addresses as small ints: in the frozen image BLOCKS keeps those above
# 8191 as long ints (host_tests/test_frozen_long_ints.py), and arithmetic on
# them would allocate at every request.
_START = array("H", [r[1] for r in BLOCKS])


def block_module(b):
    """The module serving block ``b`` (imported the first time)."""
    m = _MODS[b]
    if m is None:
        m = __import__(BLOCKS[b][4], None, None, ("read",))
        _MODS[b] = m
    return m


def monitor_address(name):
    """Address of monitor row ``name`` (host tools, tests)."""
    from comms.regs import monitor
    for i, off in enumerate(monitor.offsets()):
        if monitor.MONITOR[i][0] == name:
            return A_MON + off
    raise KeyError(name)


def command_address(name):
    """Address of command ``name`` (host tools, tests)."""
    from comms.regs import commands
    return A_CMD + commands.offset(name)


class RegisterMap:
    """Reads and writes registers against a running Bms, for one port.

    ``read`` fills big-endian words into a caller's buffer and allocates
    nothing for the identity, monitor, temps, cells, params and log-head
    blocks (what a monitor polls) once their modules are loaded.  Writes
    go through ``ParamSet.set_many`` or ``bms.request`` and may allocate
    (they are rare and validated).

    What a block module may use: ``bms``, ``auth``, ``channel``, ``info``
    (identity strings), ``allowed(role)``, ``refuse(code, index, text)``
    and the last-error registers it sets, ``log_records``, the window
    sources set by ``attach_*`` and ``windows`` (per-port state of the
    update and log windows, built on first use).
    """

    def __init__(self, bms, auth=None, info=None, channel=CH_MODBUS):
        self.bms = bms
        self.auth = auth
        if info is None:
            from comms.regs.identity import DeviceInfo
            info = DeviceInfo()
        self.info = info
        self.channel = channel
        self.err_index = -1
        self.err_code = 0
        self.err_text = bytearray(_ERR_TEXT_LEN)
        self.chal = None     # this port's last challenge (bytes), built on request
        cap = bms.log.capacity
        self.log_records = cap if cap < _LOG_MAX_RECORDS else _LOG_MAX_RECORDS
        self._log_size = self.log_records * _LOG_REC_REGS
        # Block ends, the log's from this port's capacity: the lookup took
        # 140 us of a 16-register read on an RP2040 (emulated) walking BLOCKS.
        self._end = array("H", [_START[b] + (r[2] if r[2] is not None else self._log_size)
                                for b, r in enumerate(BLOCKS)])
        self.writes = 0      # accepted writes
        self.refused = 0     # refused writes
        # Sources of the update and log windows (attach_*) and the windows
        # themselves: their modules (and a master's slave forwarder) cost
        # several KB of heap that a pack nobody updates or reads the flash
        # log of never spends.
        self.updater = None
        self.updater_of = None
        self.plog_source = None
        self.fwd_of = None
        self.windows = {}
        # bms.services.Services (lease, flash log) when the board runs them.
        self.services = None

    def attach_slave_update(self, fwd_of):
        """Serve the slave firmware update window (a master with CAN slave
        modules); ``fwd_of()`` returns the forwarder, built when first needed."""
        self.fwd_of = fwd_of
        self.windows.pop("slave_update", None)
        return self

    def attach_update(self, updater=None, plog=None, updater_of=None):
        """Serve the firmware update and persistent log windows;
        ``updater_of()`` builds the updater when the window is first used."""
        self.updater = updater
        self.updater_of = updater_of
        self.plog_source = plog
        self.windows.pop("update", None)
        self.windows.pop("plog", None)
        return self

    # ---- lookup -------------------------------------------------------
    def block(self, addr, count):
        """Index of the block holding ``addr .. addr+count-1``, else -1."""
        st = _START
        end = self._end
        for b in range(len(st)):
            if st[b] <= addr < end[b]:
                return b if addr + count <= end[b] else -1
        return -1

    # ---- reads and writes ---------------------------------------------
    def read(self, addr, count, out, pos):
        """Fill ``count`` registers at ``out[pos:]``; returns an exception code."""
        b = self.block(addr, count)
        if b < 0:
            return EX_ADDRESS
        return block_module(b).read(self, addr - _START[b], count, out, pos)

    def write(self, addr, count, data, pos):
        """Write ``count`` big-endian registers from ``data[pos:]``; exception code."""
        b = self.block(addr, count)
        if b < 0:
            return self.refuse(EX_ADDRESS, -1, "address range not writable")
        code = block_module(b).write(self, addr - _START[b], count, data, pos)
        if code == EX_NONE:
            self.writes += 1
            self.err_code = 0
            self.err_index = -1
        return code

    # ---- for the blocks -----------------------------------------------
    def refuse(self, code, index, text):
        """Record a refused write in the last-error registers; returns ``code``."""
        self.err_code = code
        self.err_index = index
        t = self.err_text
        if isinstance(text, str):
            text = text.encode()
        for i in range(len(t)):
            t[i] = text[i] if i < len(text) else 0
        self.refused += 1
        return code

    def locked(self):
        """The refusal of a write this port's role does not allow."""
        a = self.auth
        if a is not None and self.channel == CH_BLE and a.role(CH_BLE) and a.ble_default():
            return self.refuse(EX_FUNCTION, -1, "Bluetooth writes refused while the default "
                               "password is set: change it first")
        return self.refuse(EX_FUNCTION, -1, LOCKED)

    def allowed(self, role):
        a = self.auth
        if a is None:
            return True  # no access control configured (bench rigs only)
        return a.allowed(self.channel, role)

    # ---- device identification (FC 43 / MEI 14) ------------------------
    def device_id_object(self, oid):
        """Bytes of identification object ``oid`` or None (allocates; rare)."""
        from comms.regs.identity import device_id
        return device_id(self.info, oid)
