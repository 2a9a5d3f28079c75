"""Run every benchmark module and print one table (and write out/bench.json)."""
import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import time
import traceback

from rich.console import Console
from rich.table import Table

import tools  # noqa: F401  (sys.path for firmware/)
from tools.bench.common import ROOT, Ctx, Row


def discover():
    pkg = os.path.dirname(os.path.abspath(__file__))
    return sorted(m.name for m in pkgutil.iter_modules([pkg]) if m.name.startswith("bench_"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make bench", description=__doc__)
    ap.add_argument("--only", default="", help="run modules whose name contains this")
    ap.add_argument("--quick", action="store_true", help="shorter runs (less precise)")
    ap.add_argument("--soc-only", action="store_true",
                    help="only the SOC estimator rows (same as --only soc, without balancing)")
    ap.add_argument("--json", default=os.path.join(ROOT, "out", "bench.json"))
    ap.add_argument("--readme", action="store_true",
                    help="also write the figures into README.md (below <!-- bench-figures -->)")
    a = ap.parse_args(argv)
    ctx = Ctx(quick=a.quick)
    ctx.soc_only = a.soc_only
    if a.soc_only:
        a.only = "soc"
    rows = []
    t0 = time.time()
    for name in discover():
        if a.only and a.only not in name:
            continue
        t = time.time()
        try:
            mod = importlib.import_module("tools.bench." + name)
            rows.extend(mod.run(ctx))
        except Exception as e:  # noqa: BLE001 - one broken bench must not hide the others
            traceback.print_exc()
            rows.append(Row(name[6:], "ERROR", str(e)[:60]))
        print("  %s: %.1f s" % (name, time.time() - t), flush=True)
    table = Table(title="make bench  (%s, %s)" % (datetime.date.today(), platform.node()))
    for col in ("area", "figure", "value", "unit", "goal", "note"):
        table.add_column(col)
    for r in rows:
        v = r.value
        if isinstance(v, float):
            v = "%.4g" % v
        table.add_row(r.area, r.name, str(v), r.unit, str(r.goal), r.note)
    Console(width=160).print(table)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                   "machine": platform.platform(), "processor": platform.processor(),
                   "python": platform.python_version(), "wall_s": round(time.time() - t0, 1),
                   "rows": [r.as_dict() for r in rows]}, f, indent=1)
    print("wrote", os.path.relpath(a.json, ROOT), "in %.0f s" % (time.time() - t0))
    if a.readme:
        write_readme(rows, time.time() - t0, partial=a.only)


def _cells(r):
    v = r.value
    if isinstance(v, float):
        v = "%.4g" % v
    # One table row each: an ERROR row's note is a traceback.
    return tuple(str(x).replace("\n", " ").replace("|", "/")
                 for x in (r.area, r.name, v, r.unit, r.goal, r.note))


def _unpad(x):
    x = x[1:] if x.startswith(" ") else x
    return x.rstrip()


def merge_rows(old, new):
    """A partial run's rows (``new``, cell tuples) replace the README's rows
    of the same area and figure in place (matched on the name without its
    indent; a name that occurs twice in an area, e.g. one per board, is
    matched in order); a figure not there yet goes after the last row of
    its area (or at the end)."""
    areas = set(c[0] for c in new)
    # An area that ran again has no ERROR left from an earlier run.
    out = [c for c in old if not (c[1] == "ERROR" and c[0] in areas)]
    used = set()
    for c in new:
        k = (c[0], c[1].strip())
        i = next((j for j, o in enumerate(out)
                  if j not in used and (o[0], o[1].strip()) == k), None)
        if i is None:
            last = max([j for j, o in enumerate(out) if o[0] == c[0]], default=len(out) - 1)
            i = last + 1
            out.insert(i, c)
            used = set(j + 1 if j >= i else j for j in used)
        else:
            out[i] = c
        used.add(i)
    return out


def write_readme(rows, wall, partial=""):
    path = os.path.join(ROOT, "README.md")
    marker = "<!-- bench-figures -->"
    text = open(path).read()
    head, _, tail = text.partition(marker)
    cells = [_cells(r) for r in rows]
    title = "### Latest figures: %s, %s (%s), `make bench` took %.0f s" % (
        datetime.date.today(), platform.machine(), platform.processor() or "x86_64", wall)
    if partial:
        # Only some modules ran: keep the full run's other rows and its title,
        # and say which rows are newer.
        old_title = ""
        old = []
        for line in tail.splitlines():
            if line.startswith("### Latest figures"):
                old_title = line
            elif line.startswith("| ") and not line.startswith("| area |"):
                # One space of padding each side; a sub-row's name keeps its indent.
                old.append(tuple(_unpad(x) for x in line.strip()[1:-1].split("|")))
        cells = merge_rows(old, cells)
        # Earlier partial runs keep their mention (a run of the same rows replaces it).
        parts = old_title.split("; rows of")
        seg = " `make bench ARGS=\"--only %s\"` re-measured %s (%.0f s)" % (
            partial, datetime.date.today(), wall)
        keep = [p for p in parts[1:] if "--only %s\"" % partial not in p]
        title = "; rows of".join([parts[0] or title] + keep + [seg])
    lines = [marker, "", title, "",
             "| area | figure | value | unit | goal | note |",
             "|---|---|---|---|---|---|"]
    for c in cells:
        lines.append("| %s |" % " | ".join(c))
    with open(path, "w") as f:
        f.write(head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
