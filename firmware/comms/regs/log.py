"""Event records: record i (0 = the oldest kept) at offset 10 * i, read
only; the block is as long as the RAM event log's capacity (at most
``MAX_RECORDS``)."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

REC_REGS = const(10)
MAX_RECORDS = const(1600)
# Register f of a record -> field of EventLog.get()'s (seq, ts, kind, a, b)
# tuple and whether it is the high word; the layout of LOG_FIELDS.
_LOG_SRC = const((0, 0, 1, 1, 2, -1, 3, 3, 4, 4))
_LOG_HIGH = const((1, 0, 1, 0, 0, 0, 1, 0, 1, 0))
LOG_FIELDS = (
    ("seq", 0, "u32", "Sequence number"),
    ("time", 2, "u32", "Time stamp, ms ticks (wraps at 2**30)"),
    ("kind", 4, "u16", "Event kind: {event_kinds}"),
    ("a", 6, "s32", "First argument (fault id, relay, parameter index, command ...)"),
    ("b", 8, "s32", "Second argument (value, state, argument ...)"),
)


def read(rm, off, count, out, pos):
    log = rm.bms.log
    n = len(log)
    rec = -1
    r = None
    for k in range(count):
        o = off + k
        i = o // REC_REGS
        f = o - i * REC_REGS
        v = 0
        if i < n:
            if i != rec:
                r = log.get(i)
                rec = i
            src = _LOG_SRC[f]
            if src >= 0:
                v = r[src] >> 16 if _LOG_HIGH[f] else r[src]
        put16(out, pos + 2 * k, v & 0xFFFF)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + off, "record0." + name, typ, 2 if typ in ("u32", "s32") else 1, "", "R",
                "", "", desc + " (record i at +%d*i)" % REC_REGS)
            for name, off, typ, desc in LOG_FIELDS]
    return "Event records", section(rows), rows
