"""Internal master/slave CAN protocol: ids, layouts, scaling.

The reference is ``docs/bms_internal.dbc``; ``host_tests/test_can_dbc.py``
checks every id, signal position and scale here against it with cantools,
so the two cannot drift.  ``docs/can_internal.md`` explains the timing.

11-bit ids, 250 kbit/s, little-endian (Intel) signals.  Lower id = higher
priority: master commands beat slave reports.  ``addr`` is the module
address 1..16; ids are ``base + (addr - 1) * stride + index``.

Timing (TDMA, set by the master in every SYNC): a sweep of ``period`` ms
is cut into slots of ``slot`` ms; slot 0 belongs to the master, module
``addr`` transmits in slot ``addr`` its STATUS, CELLS frames and TEMPS,
one frame every ``gap`` ms, so the master's controller never sees more
than one frame per ``gap`` ms (a pure-Python MCP2515 driver with two RX
buffers reads about 300 frames/s).
"""
from micropython import const
from comms.packing import put16le as put16  # noqa: F401 (re-exported)

BITRATE = const(250000)
PROTO_VERSION = const(1)

MAX_MODULES = const(16)
MAX_MODULE_CELLS = const(16)
MIN_MODULE_CELLS = const(3)     # the modules' BQ76952 measures 3S..16S
CELLS_PER_FRAME = const(4)
CELL_FRAMES = const(4)          # MAX_MODULE_CELLS // CELLS_PER_FRAME
MAX_MODULE_TEMPS = const(4)

# Default TDMA schedule (carried in SYNC, so slaves need no reflash to change it).
SWEEP_MS = const(1000)
SLOT_MS = const(50)
GAP_MS = const(8)

# --- ids -------------------------------------------------------------------
ID_SYNC = const(0x010)      # master -> all
ID_ASSIGN = const(0x011)    # master -> unaddressed slave (by uid)
ID_REQUEST = const(0x012)   # master -> slave(s)
ID_BAL = const(0x020)       # + addr - 1: balancing command
ID_CONFIG = const(0x030)    # + addr - 1: configuration
ID_STATUS = const(0x100)    # + addr - 1: heartbeat / status
ID_CELLS = const(0x200)     # + (addr - 1) * 4 + frame index
ID_TEMPS = const(0x280)     # + addr - 1
ID_VERSION = const(0x300)   # + addr - 1
ID_ANNOUNCE = const(0x3F0)  # unaddressed slave -> master
# Slave firmware transfer (docs/can_internal.md "Slave firmware update"): the
# highest ids on the bus, so every measurement frame wins arbitration over them.
ID_FWCTL = const(0x400)     # + addr - 1: transfer control, master -> slave
ID_FWACK = const(0x410)     # + addr - 1: acknowledgement / update state, slave -> master
ID_FWDATA = const(0x420)    # + addr - 1: data segment, master -> slave

# --- SYNC ------------------------------------------------------------------
# sweep u16 | flags u8 | modules u8 | period_ms u16 | slot_ms u8 | gap_ms u8
SYNC_SLEEP = const(0x01)      # every slave: stop balancing, go to sleep
SYNC_BAL_OK = const(0x02)     # balancing allowed (else slaves drop any mask)
SYNC_REASSIGN = const(0x04)   # auto-addressed slaves forget their address

# --- REQUEST: addr u8 (0 = all) | what u8 ---------------------------------
REQ_VERSION = const(1)
REQ_ANNOUNCE = const(2)

# --- BAL: mask u16 | timeout u8 (x100 ms) | seq u8 -------------------------
BAL_TIMEOUT_UNIT_MS = const(100)

# --- CONFIG: cells u8 | temps u8 | ov_mv u16 | uv_mv u16 | ot_c i8 | flags u8
CFG_SET_CELLS = const(0x01)   # apply ``cells`` (ignored while the slave is locked)

# --- STATUS ----------------------------------------------------------------
# state u8 (bits 0-3 state, bit4 cell count locked, bit5 auto address)
# | cells u8 | sweep u8 | faults u8 | bal_mask u16 | temps u8 | age u8 (x10 ms)
ST_BOOT = const(0)      # no SYNC seen yet / not configured
ST_RUN = const(1)
ST_SLEEP = const(2)
ST_FAULT = const(3)     # a local hard limit is active
STATE_MASK = const(0x0F)
STATE_LOCKED = const(0x10)
STATE_AUTO = const(0x20)

LF_OV = const(0x01)          # local hard over-voltage
LF_UV = const(0x02)          # local hard under-voltage
LF_OT = const(0x04)          # local hard over-temperature
LF_TSENSOR = const(0x08)     # an NTC open/short
LF_AFE = const(0x10)         # the AFE did not answer at the last sample
LF_MASTER_LOST = const(0x20)  # balancing stopped: no command/SYNC in time
LF_DEFAULTS = const(0x40)    # running on built-in limits (never configured)
LF_WIRING = const(0x80)      # its stack voltage exceeds its cells' sum: cells wired beyond its count
LF_HARD = const(0x07)        # the hard-limit bits the master latches

AGE_UNIT_MS = const(10)

# --- CELLS: 4 x u16 mV; TEMPS: 4 x i16 0.1 degC -----------------------------
CELL_INVALID = const(0xFFFF)     # not fitted or not measured
TEMP_ABSENT = const(-32768)
TEMP_OPEN = const(32767)
TEMP_SHORT = const(32766)

# --- VERSION: major u8 | minor u8 | patch u8 | proto u8 | uid_lo u32 -------
# --- ANNOUNCE / ASSIGN: uid 48 bit | cells or addr u8 | proto u8 / reserved -

FW_VERSION = (0, 1, 0)

# --- FWCTL: op u8 | arg u32 | p1 u8 | p2 u8 | session u8 -------------------
#   BEGIN: arg = package size, p1 = flags (FWF_SIGNED), p2 = segments per block
FW_BEGIN = const(1)
FW_FINISH = const(2)      # verify and unpack into the inactive slot
FW_ABORT = const(3)
FW_APPLY = const(4)       # reboot into the staged slot
FW_QUERY = const(5)       # answer with the update state
FW_DATA = const(6)        # (FWACK only) acknowledgement of data segments
FW_OP_NAMES = ("", "begin", "finish", "abort", "apply", "query", "data")
FWF_SIGNED = const(0x01)
# --- FWDATA: seq u8 | 1..7 data bytes.  Segment i carries stream bytes
# 7i .. 7i+6 and has seq = i & 0xFF; the stream is SHA-256 (32 bytes), the
# signature (32 bytes, only with FWF_SIGNED), then the package.
FW_SEG_BYTES = const(7)
FW_HASH_BYTES = const(32)
FW_MAX_BLOCK = const(64)  # segments per acknowledged block (seq window < 128)
# --- FWACK: op u8 | result u8 | next u32 (stream bytes held) | fw u8 | session u8
#   result 0 ok, 1..7 bms.update.E_* (the slave's Updater refused), or:
FWR_OK = const(0)
FWR_SESSION = const(0x10)  # no such transfer (slave rebooted, or never begun)
FWR_REQUEST = const(0x11)  # malformed or out-of-order request
FWR_BUSY = const(0x20)     # still verifying / unpacking
FWR_RECEIVING = const(0x21)  # (QUERY) transfer open, FINISH not seen yet
#   fw: bits 0-1 marker state (0 ok, 1 pending, 2 trial, 3 staged: verified and
#   unpacked, swapped in only after APPLY), bits 2-3 active
#   slot + 1 (0 factory root, 1 a, 2 b), bits 4-7 boots in trial (saturates)

# Layout table checked against the DBC (not used in hot paths).
# (message, base id, count, stride, dlc, sender,
#  ((signal, start bit, length, signed, scale, offset, unit), ...))
_SYNC_SIGS = const((("Sweep", 0, 16, 0, 1, 0, ""), ("Flags", 16, 8, 0, 1, 0, ""),
                    ("Modules", 24, 8, 0, 1, 0, ""), ("PeriodMs", 32, 16, 0, 1, 0, "ms"),
                    ("SlotMs", 48, 8, 0, 1, 0, "ms"), ("GapMs", 56, 8, 0, 1, 0, "ms")))
_CELL_SIGS = const((("CellA", 0, 16, 0, 1, 0, "mV"), ("CellB", 16, 16, 0, 1, 0, "mV"),
                    ("CellC", 32, 16, 0, 1, 0, "mV"), ("CellD", 48, 16, 0, 1, 0, "mV")))
LAYOUT = (
    ("SYNC", ID_SYNC, 1, 0, 8, "Master", _SYNC_SIGS),
    ("ASSIGN", ID_ASSIGN, 1, 0, 8, "Master",
     (("Uid", 0, 48, 0, 1, 0, ""), ("Addr", 48, 8, 0, 1, 0, ""))),
    ("REQUEST", ID_REQUEST, 1, 0, 2, "Master",
     (("Addr", 0, 8, 0, 1, 0, ""), ("What", 8, 8, 0, 1, 0, ""))),
    ("BAL", ID_BAL, MAX_MODULES, 1, 4, "Master",
     (("Mask", 0, 16, 0, 1, 0, ""), ("TimeoutMs", 16, 8, 0, BAL_TIMEOUT_UNIT_MS, 0, "ms"),
      ("Seq", 24, 8, 0, 1, 0, ""))),
    ("CONFIG", ID_CONFIG, MAX_MODULES, 1, 8, "Master",
     (("Cells", 0, 8, 0, 1, 0, ""), ("Temps", 8, 8, 0, 1, 0, ""),
      ("OvMv", 16, 16, 0, 1, 0, "mV"), ("UvMv", 32, 16, 0, 1, 0, "mV"),
      ("OtC", 48, 8, 1, 1, 0, "degC"), ("CfgFlags", 56, 8, 0, 1, 0, ""))),
    ("STATUS", ID_STATUS, MAX_MODULES, 1, 8, "Slave",
     (("State", 0, 4, 0, 1, 0, ""), ("Locked", 4, 1, 0, 1, 0, ""),
      ("AutoAddr", 5, 1, 0, 1, 0, ""), ("Cells", 8, 8, 0, 1, 0, ""),
      ("SweepEcho", 16, 8, 0, 1, 0, ""), ("Faults", 24, 8, 0, 1, 0, ""),
      ("BalMask", 32, 16, 0, 1, 0, ""), ("Temps", 48, 8, 0, 1, 0, ""),
      ("AgeMs", 56, 8, 0, AGE_UNIT_MS, 0, "ms"))),
    ("CELLS", ID_CELLS, MAX_MODULES * CELL_FRAMES, 1, 8, "Slave", _CELL_SIGS),
    ("TEMPS", ID_TEMPS, MAX_MODULES, 1, 8, "Slave",
     (("T1", 0, 16, 1, 0.1, 0, "degC"), ("T2", 16, 16, 1, 0.1, 0, "degC"),
      ("T3", 32, 16, 1, 0.1, 0, "degC"), ("T4", 48, 16, 1, 0.1, 0, "degC"))),
    ("VERSION", ID_VERSION, MAX_MODULES, 1, 8, "Slave",
     (("Major", 0, 8, 0, 1, 0, ""), ("Minor", 8, 8, 0, 1, 0, ""),
      ("Patch", 16, 8, 0, 1, 0, ""), ("Proto", 24, 8, 0, 1, 0, ""),
      ("UidLo", 32, 32, 0, 1, 0, ""))),
    ("ANNOUNCE", ID_ANNOUNCE, 1, 0, 8, "Slave",
     (("Uid", 0, 48, 0, 1, 0, ""), ("Cells", 48, 8, 0, 1, 0, ""),
      ("Proto", 56, 8, 0, 1, 0, ""))),
    ("FWCTL", ID_FWCTL, MAX_MODULES, 1, 8, "Master",
     (("Op", 0, 8, 0, 1, 0, ""), ("Arg", 8, 32, 0, 1, 0, ""), ("P1", 40, 8, 0, 1, 0, ""),
      ("P2", 48, 8, 0, 1, 0, ""), ("Session", 56, 8, 0, 1, 0, ""))),
    ("FWACK", ID_FWACK, MAX_MODULES, 1, 8, "Slave",
     (("Op", 0, 8, 0, 1, 0, ""), ("Result", 8, 8, 0, 1, 0, ""), ("Next", 16, 32, 0, 1, 0, ""),
      ("FwMarker", 48, 2, 0, 1, 0, ""), ("FwSlot", 50, 2, 0, 1, 0, ""),
      ("FwTries", 52, 4, 0, 1, 0, ""), ("Session", 56, 8, 0, 1, 0, ""))),
    ("FWDATA", ID_FWDATA, MAX_MODULES, 1, 8, "Master",
     (("Seq", 0, 8, 0, 1, 0, ""), ("Data", 8, 56, 0, 1, 0, ""))),
)


def cells_id(addr, frame):
    return ID_CELLS + ((addr - 1) << 2) + frame


def u16(b, i):
    return b[i] | (b[i + 1] << 8)


def i16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def uid48(b, i):
    v = 0
    for k in range(5, -1, -1):
        v = (v << 8) | b[i + k]
    return v


def put_uid48(b, i, uid):
    for k in range(6):
        b[i + k] = (uid >> (8 * k)) & 0xFF


def sync_pack(buf, sweep, flags, modules, period, slot, gap):
    put16(buf, 0, sweep)
    buf[2] = flags
    buf[3] = modules
    put16(buf, 4, period)
    buf[6] = slot
    buf[7] = gap
    return 8


def bal_pack(buf, mask, timeout_ms, seq):
    put16(buf, 0, mask)
    t = (timeout_ms + BAL_TIMEOUT_UNIT_MS - 1) // BAL_TIMEOUT_UNIT_MS
    buf[2] = t if t < 255 else 255
    buf[3] = seq & 0xFF
    return 4


def config_pack(buf, cells, temps, ov_mv, uv_mv, ot_c, flags):
    buf[0] = cells
    buf[1] = temps
    put16(buf, 2, ov_mv)
    put16(buf, 4, uv_mv)
    buf[6] = ot_c & 0xFF
    buf[7] = flags
    return 8


def status_pack(buf, state, cells, sweep, faults, bal_mask, temps, age_ms):
    buf[0] = state
    buf[1] = cells
    buf[2] = sweep & 0xFF
    buf[3] = faults
    put16(buf, 4, bal_mask)
    buf[6] = temps
    a = age_ms // AGE_UNIT_MS
    buf[7] = a if a < 255 else 255
    return 8


def version_pack(buf, uid, ver=FW_VERSION):
    buf[0] = ver[0]
    buf[1] = ver[1]
    buf[2] = ver[2]
    buf[3] = PROTO_VERSION
    for k in range(4):
        buf[4 + k] = (uid >> (8 * k)) & 0xFF
    return 8


def announce_pack(buf, uid, cells):
    put_uid48(buf, 0, uid)
    buf[6] = cells
    buf[7] = PROTO_VERSION
    return 8


def assign_pack(buf, uid, addr):
    put_uid48(buf, 0, uid)
    buf[6] = addr
    buf[7] = 0
    return 8


def put32(buf, i, v):
    for k in range(4):
        buf[i + k] = (v >> (8 * k)) & 0xFF


def u32(b, i):
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


def fwctl_pack(buf, op, arg, p1, p2, session):
    buf[0] = op
    put32(buf, 1, arg)
    buf[5] = p1
    buf[6] = p2
    buf[7] = session
    return 8


def fwack_pack(buf, op, result, nxt, fw, session):
    buf[0] = op
    buf[1] = result
    put32(buf, 2, nxt)
    buf[6] = fw
    buf[7] = session
    return 8


def fw_state_byte(state, active, tries):
    """The FWACK ``fw`` byte from a bms.update.Updater's marker."""
    t = tries if tries < 15 else 15
    return (state & 3) | (((active + 1) & 3) << 2) | (t << 4)
