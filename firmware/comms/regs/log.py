"""Event records: record i (0 = the oldest kept) at offset 10 * i, read
only; the block is as long as the RAM event log's capacity (at most
``MAX_RECORDS``)."""
from micropython import const

from comms.regs import codes, rows

REC_REGS = const(10)
MAX_RECORDS = const(1600)
LOG_FIELDS = (
    ("seq", 0, "u32", "Sequence number"),
    ("time", 2, "u32", "Time stamp, ms ticks (wraps at 2**30)"),
    ("kind", 4, "u16", "Event kind: {event_kinds}"),
    ("a", 6, "s32", "First argument (fault id, relay, parameter index, command ...)"),
    ("b", 8, "s32", "Second argument (value, state, argument ...)"),
)


_REC = bytearray(2 * REC_REGS)      # one record's registers (LOG_FIELDS)


def _u32(b, p, v):
    b[p] = (v >> 24) & 0xFF
    b[p + 1] = (v >> 16) & 0xFF
    b[p + 2] = (v >> 8) & 0xFF
    b[p + 3] = v & 0xFF


def read(rm, off, count, out, pos):
    # A record at a time into _REC, then the part the read covers copied: a
    # put16 call and a field lookup per register took 6.5 ms for 125
    # registers on an RP2040 (emulated).
    log = rm.bms.log
    n = len(log)
    end = off + count
    rec = _REC
    i = off // REC_REGS
    a = i * REC_REGS            # the first register of record i
    while a < end:
        lo = off if off > a else a
        hi = end if end < a + REC_REGS else a + REC_REGS
        if i < n:
            seq, ts, kind, va, vb = log.get(i)   # a tuple: comms, not the loop
            _u32(rec, 0, seq)
            _u32(rec, 4, ts)
            rec[8] = (kind >> 8) & 0xFF
            rec[9] = kind & 0xFF
            rec[10] = 0
            rec[11] = 0
            _u32(rec, 12, va)
            _u32(rec, 16, vb)
            rows.copy(out, pos + 2 * (lo - off), rec, 2 * (lo - a), 2 * (hi - lo))
        else:
            rows.zero(out, pos + 2 * (lo - off), 2 * (hi - lo))
        i += 1
        a += REC_REGS
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + off, "record0." + name, typ, 2 if typ in ("u32", "s32") else 1, "", "R",
                "", "", desc + " (record i at +%d*i)" % REC_REGS)
            for name, off, typ, desc in LOG_FIELDS]
    return "Event records", section(rows), rows
