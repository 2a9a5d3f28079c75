"""Export the persistent event log to CSV.

    mpremote cp -r :/data/log ./log      # or read it over Modbus / bmsctl log
    python tools/eventlog_csv.py ./log > events.csv

Decodes with the firmware's own ``bms.persistlog`` (one source of truth) and
names kinds, faults and parameters from the firmware tables.
"""
import csv
import os
import sys

import tools  # noqa: F401
from bms import faults, params
from bms import persistlog as PL
from bms.eventlog import KIND_NAMES


class DirFs:
    """Read-only fs over a local copy of /data/log."""

    def __init__(self, path):
        self.path = path

    def open(self, p, mode="rb"):
        if "r" not in mode or "+" in mode:
            raise OSError(30, "read-only copy")  # a torn tail is simply not repaired
        return open(os.path.join(self.path, os.path.basename(p)), mode)

    def stat(self, p):
        return os.stat(os.path.join(self.path, os.path.basename(p)))


def kind_name(k):
    if k < len(KIND_NAMES):
        return KIND_NAMES[k]
    if PL.PK_RESET <= k < PL.PK_RESET + len(PL.PK_NAMES):
        return PL.PK_NAMES[k - PL.PK_RESET]
    return str(k)


def subject(kind, a):
    if kind in (1, 2) and 0 <= a < faults.N_FAULTS:
        return faults.TABLE[a][0]
    if kind in (5, PL.PK_MIGRATE) and 0 <= a < params.N_PARAMS:
        return params.TABLE[a][0]
    if kind == PL.PK_RESET:
        from bms.watchdog import REASON_NAMES
        return REASON_NAMES[a] if 0 <= a < len(REASON_NAMES) else str(a)
    if kind == PL.PK_UPDATE:
        from bms.update import EVENT_NAMES
        return EVENT_NAMES[a] if 0 < a < len(EVENT_NAMES) else str(a)
    if kind == PL.PK_PART:
        from app import PART_NAMES
        return PART_NAMES[a] if 0 <= a < len(PART_NAMES) else "other"
    return ""


_PERIOD = 1 << 30          # ticks_ms wrap
_HALF = 1 << 29
_EV_CLOCK = 12             # bms.eventlog.EV_CLOCK


def wall_times(records):
    """Unix seconds of each record (None where unknown), from the clock marks
    (kind ``clock``: a = seconds since 2020 at that record's ticks) of the same
    boot: the nearest mark before a record, if it is less than half a ticks
    period (6.2 days) before it.  The core writes a mark when the clock is set
    and once a day, so every record after the first set gets its time."""
    from bms.wallclock import EPOCH_2020
    out = []
    mark = {}   # boot -> (t_ms, s2020)
    for r in records:
        d = dict(zip(PL.FIELDS, r))
        if d["kind"] == _EV_CLOCK and d["a"] > 0:
            mark[d["boot"]] = (d["t_ms"], d["a"])
        m = mark.get(d["boot"])
        if m is None:
            out.append(None)
            continue
        dt = (d["t_ms"] - m[0]) % _PERIOD
        out.append(EPOCH_2020 + m[1] + dt // 1000 if dt < _HALF else None)
    return out


def iso(unix):
    import datetime
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def write_csv(records, out):
    w = csv.writer(out)
    w.writerow(["time_utc"] + list(PL.FIELDS[:3]) + ["kind_name", "subject"]
               + list(PL.FIELDS[3:]))
    for r, t in zip(records, wall_times(records)):
        w.writerow([iso(t) if t else ""] + list(r[:3]) + [kind_name(r[2]), subject(r[2], r[4])]
                   + list(r[3:]))


def read_dir(path):
    return PL.PersistLog(DirFs(path), root="/data/log", queue=1).records()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: eventlog_csv.py DIR")
    write_csv(read_dir(argv[0]), sys.stdout)


if __name__ == "__main__":
    main()
