"""``bmsctl log --persistent [--csv FILE]``: the flash event log over Modbus.

Reads the persistent-log window of the register map (``comms.regs.plog``):
write the index of the first record wanted, read ``PLOG_WINDOW`` records
with their trip snapshots, repeat.  Records come back as the tuples of
``bms.persistlog`` (``FIELDS`` order), so the CSV is the one of
``tools/eventlog_csv.py`` (the same columns as a log copied off the flash).
"""
import tools  # noqa: F401
from bms import persistlog as PL
from comms.regs import plog as RPL
from comms import registers as R
from tools.eventlog_csv import kind_name, subject, write_csv


def _s(v, bits):
    return v - (1 << bits) if v & (1 << (bits - 1)) else v


def decode_record(r):
    """20 registers -> persistlog record tuple, or None for an empty slot."""
    seq = (r[0] << 16) | r[1]
    if seq == 0:
        return None
    return (seq, r[2], r[3], (r[4] << 16) | r[5], _s((r[6] << 16) | r[7], 32),
            _s((r[8] << 16) | r[9], 32), _s((r[10] << 16) | r[11], 32), r[12], r[13], r[14],
            r[15], _s(r[16], 16), _s(r[17], 16), r[18])


def read_records(c):
    head = c.read(R.A_PLOG, RPL.PL_REC)
    n = head[RPL.PL_COUNT]
    out = []
    i = 0
    while i < n:
        c.write(R.A_PLOG + RPL.PL_INDEX, [i])
        k = min(RPL.PLOG_WINDOW, n - i)
        regs = c.read(R.A_PLOG + RPL.PL_REC, k * RPL.PLOG_REC_REGS)
        for j in range(k):
            rec = decode_record(regs[j * RPL.PLOG_REC_REGS:(j + 1) * RPL.PLOG_REC_REGS])
            if rec is not None:
                out.append(rec)
        i += k
    return out


def _text(d):
    """The record's event in words and units (the RAM log's wording for the
    shared kinds), never raw integers."""
    from tools.bmsctl.client import describe_event
    k = d["kind"]
    name = kind_name(k)
    if k < PL.PK_RESET:
        return describe_event(name, d["a"], d["b"])
    sub = subject(k, d["a"])
    return sub or ""


def run(c, a, console):
    from rich.table import Table
    from tools.bmsctl.client import event_time
    from tools.eventlog_csv import iso, wall_times
    recs = read_records(c)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            write_csv(recs, f)
        console.print("%d persistent events -> %s" % (len(recs), a.csv))
        return
    t = Table(title="Persistent event log (%d events)" % len(recs))
    for col in ("seq", "time (UTC)", "kind", "event", "I A", "Vmax V (#)", "Vmin V (#)",
                "T cell", "SOC"):
        t.add_column(col)
    for r, wall in zip(recs, wall_times(recs)):
        d = dict(zip(PL.FIELDS, r))
        when = iso(wall) if wall else "boot %d %s" % (d["boot"], event_time(0, d["t_ms"]))
        t.add_row(str(d["seq"]), when, kind_name(d["kind"]), _text(d),
                  "%.2f" % (d["current_ma"] / 1000.0),
                  "%.3f (#%d)" % (d["vmax_mv"] / 1000.0, d["vmax_idx"] + 1),
                  "%.3f (#%d)" % (d["vmin_mv"] / 1000.0, d["vmin_idx"] + 1),
                  "%.1f" % (d["tmax_dc"] / 10.0), "%.1f%%" % (d["soc_pm"] / 10.0))
    console.print(t)
