"""Event log state: records kept, capacity shown in the log block, next
sequence number.  Read only."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

LH_COUNT = const(0)
LH_CAPACITY = const(1)
LH_NEXT_SEQ = const(2)  # u32
SIZE = const(4)


def read(rm, off, count, out, pos):
    log = rm.bms.log
    for k in range(count):
        o = off + k
        v = 0
        if o == LH_COUNT:
            v = len(log)
        elif o == LH_CAPACITY:
            v = rm.log_records
        elif o == LH_NEXT_SEQ:
            v = (log.next_seq >> 16) & 0xFFFF
        elif o == LH_NEXT_SEQ + 1:
            v = log.next_seq & 0xFFFF
        put16(out, pos + 2 * k, v)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [
        row(start + LH_COUNT, "log_count", "u16", 1, "", "R", "", "",
            "Records kept (record 0 is the oldest)"),
        row(start + LH_CAPACITY, "log_capacity", "u16", 1, "", "R", "", "",
            "Records the log can hold"),
        row(start + LH_NEXT_SEQ, "log_next_seq", "u32", 2, "", "R", "", "",
            "Sequence number of the next event"),
    ]
    return "Event log state", section(rows), rows
