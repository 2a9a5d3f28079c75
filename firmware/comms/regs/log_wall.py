"""Event-record wall times: record i of the event log (as in the event
records block) at offset 2 * i, u32 Unix seconds UTC, 0 when the clock had
not been set when the event happened.  Read only; a separate block so that
the record layout of the event records block stays as it was."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

MAX_RECORDS = const(1600)   # comms.regs.log.MAX_RECORDS
SIZE = const(3200)          # 2 * MAX_RECORDS
_EP_HI = const(0x5E0B)      # bms.wallclock.EPOCH_2020 halves
_EP_LO = const(0xE100)


def read(rm, off, count, out, pos):
    log = rm.bms.log
    n = len(log)
    for k in range(count):
        o = off + k
        i = o >> 1
        v = 0
        if i < n:
            s = log.wall_at(i)
            if s > 0:
                lo = (s & 0xFFFF) + _EP_LO
                v = lo if o & 1 else (s >> 16) + _EP_HI + (lo >> 16)
        put16(out, pos + 2 * k, v & 0xFFFF)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start, "record0.wall_time", "u32", 2, "s", "R", "", "",
                "Wall-clock time of event record i at +2*i, Unix seconds UTC; 0: clock not set")]
    return "Event record wall times", section(rows), rows
