"""Clock block: the BMS's wall-clock time as Unix seconds (u32, UTC).

Reads 0 until a client sets it (FC16 of both registers, user role;
``bmsctl clock set`` writes the PC's time).  The core keeps seconds since
2020 (``bms.wallclock``) so no read or event stamp forms an int beyond
2**30; the words are built here with the epoch offset's halves."""
from micropython import const

from bms.wallclock import EPOCH_2020
from comms.packing import get16be as get16, put16be as put16
from comms.regs import codes

C_TIME = const(0)      # u32 Unix seconds
C_SET = const(2)       # 1 once set since boot
C_SETS = const(3)      # times set since boot
SIZE = const(4)
_EP_HI = const(0x5E0B)  # EPOCH_2020 >> 16
_EP_LO = const(0xE100)  # EPOCH_2020 & 0xFFFF

FIELDS = (
    ("clock_time", C_TIME, 2, "u32", "R/W user", "Wall-clock time, Unix seconds UTC (0: not set "
     "since boot); write both registers with FC16 to set it"),
    ("clock_set", C_SET, 1, "u16", "R", "1 once the clock was set since boot"),
    ("clock_sets", C_SETS, 1, "u16", "R", "Times the clock was set since boot"),
)


def read(rm, off, count, out, pos):
    b = rm.bms
    w = b.wall
    s = w.at(b.clock.ticks_ms())
    hi = lo = 0
    if s > 0:
        lo = (s & 0xFFFF) + _EP_LO
        hi = (s >> 16) + _EP_HI + (lo >> 16)
    for k in range(count):
        o = off + k
        v = 0
        if o == C_TIME:
            v = hi
        elif o == C_TIME + 1:
            v = lo
        elif o == C_SET:
            v = 1 if s > 0 else 0
        elif o == C_SETS:
            v = w.sets
        put16(out, pos + 2 * k, v & 0xFFFF)
    return codes.EX_NONE


def write(rm, off, count, data, pos):
    if off != C_TIME or count != 2:
        return rm.refuse(codes.EX_ADDRESS, -1, "set the clock with both time registers (FC16)")
    if not rm.allowed(codes.ROLE_USER):
        return rm.locked()
    hi = get16(data, pos)
    lo = get16(data, pos + 2)
    s = (hi - _EP_HI) * 65536 + (lo - _EP_LO)
    if s <= 0 or s >= 0x3FFFFFFF:
        return rm.refuse(codes.EX_VALUE, -1, "time before 2020 or after 2054")
    rm.bms.set_time(s)
    return codes.EX_NONE


def unix_of(s2020):
    """Host side: Unix seconds of a wall stamp (0 stays 0)."""
    return s2020 + EPOCH_2020 if s2020 > 0 else 0


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + o, name, typ, n, "s" if name == "clock_time" else "", acc, "", "", desc)
            for name, o, n, typ, acc, desc in FIELDS]
    return "Clock", section(rows), rows
