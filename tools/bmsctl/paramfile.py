"""Parameter files for mass production: `bmsctl params save FILE`,
`params load FILE [--dry-run]` and `restore FILE` (a `dump` file).

A saved file holds every parameter by name as its raw table value, with the
table's unit next to it (a file from a firmware whose unit for a row
differs is refused rather than misread).  Hand edits may use units and
names instead ("3.65V", "LFP", "on"), read like `params set`.

Loading is all or nothing, by the firmware's own rules: the new set is
first built on a local ``bms.params.ParamSet`` holding the BMS's current
values, through the same ``set_many`` the BMS runs (chemistry defaults,
factory-only rows, step limits, cross rules), then written as one FC16 over
the whole block, which the BMS validates again as one change.  The
current calibration (cur_gain, cur_offset) belongs to one board and is
never copied to another; a file's calibration rows are reported and left
out.
"""
import csv
import datetime
import json

import tools  # noqa: F401
from bms.params import (CHEM_NAMES, N_PARAMS, P_CELL_COUNT, P_CHEMISTRY, ParamError, ParamSet,
                        TABLE)
from bms.params import index as param_index
from comms import registers as R
from tools.bmsctl.client import BmsError, param_parse, param_value_text

FORMAT = "mpy-bms-params"
SKIP = ("cur_gain", "cur_offset")   # per-board calibration


class FileError(Exception):
    pass


def save(c, path):
    rows = c.params()
    info = c.info()
    doc = {"format": FORMAT, "version": 1,
           "saved": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "model": info.get("model", ""), "serial": info.get("serial", ""),
           "firmware": info.get("firmware", ""),
           "params": {r["name"]: r["raw"] for r in rows},
           "units": {r["name"]: r["table_unit"] for r in rows}}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return len(rows)


def _s16(i, v):
    return v - 0x10000 if TABLE[i][2] < 0 and v & 0x8000 else v


def read_file(path):
    """{index: raw} from a params file or a `dump` file (JSON or CSV)."""
    with open(path) as f:
        text = f.read()
    out = {}
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        units = doc.get("units", {})
        for name, v in doc.get("params", {}).items():
            i = param_index(name)
            if i < 0:
                raise FileError("%s: unknown parameter %r" % (path, name))
            if name in units and units[name] != TABLE[i][1]:
                raise FileError("%s: %s is in %s there, %s in this firmware" %
                                (path, name, units[name], TABLE[i][1]))
            out[i] = v if isinstance(v, int) else param_parse(i, str(v))
        return out
    if doc is None:   # a CSV dump
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = doc
    if not isinstance(rows, list):
        raise FileError("%s: neither a params file nor a dump" % path)
    for r in rows:
        if r.get("block") != "params":
            continue
        i = param_index(r["name"])
        if i < 0:
            raise FileError("%s: unknown parameter %r" % (path, r["name"]))
        out[i] = _s16(i, int(r["raw"]))
    if not out:
        raise FileError("%s: no parameters in it" % path)
    return out


def plan(c, wanted):
    """(current values, new values, skipped names): the new set as the BMS
    would build it, or BmsError with the firmware's reason."""
    cur = [r["raw"] for r in c.params()]
    role = c.auth_state()["role"]
    max_cells = c.info().get("max_cells", 256) or 256
    ps = ParamSet(max_cells=max_cells)
    try:
        ps.replace(cur)
    except ParamError as e:
        raise BmsError("the BMS's own set does not pass the checks here (%s): "
                       "firmware versions differ?" % e.reason, 3)
    skipped = [TABLE[i][0] for i in sorted(wanted) if TABLE[i][0] in SKIP and wanted[i] != cur[i]]
    pairs = [(i, v) for i, v in sorted(wanted.items()) if TABLE[i][0] not in SKIP]
    try:
        ps.set_many(pairs, role == "factory")
    except ParamError as e:
        raise BmsError("refused, nothing written: %s" % e.reason, 3, e.index)
    return cur, list(ps.values), skipped


def diff_table(cur, new):
    from rich.table import Table
    t = Table(title="Changes")
    for col in ("parameter", "now", "from the file"):
        t.add_column(col)
    n = 0
    for i in range(N_PARAMS):
        if cur[i] != new[i]:
            t.add_row(TABLE[i][0], param_value_text(i, cur[i]), param_value_text(i, new[i]))
            n += 1
    return t, n


def load(c, path, console, dry_run=False):
    try:
        wanted = read_file(path)
    except (OSError, FileError, ValueError) as e:
        from tools.bmsctl.cli import UsageError
        raise UsageError(str(e))
    cur, new, skipped = plan(c, wanted)
    t, n = diff_table(cur, new)
    for name in skipped:
        console.print("[yellow]%s left as it is: calibration belongs to one board[/yellow]" % name)
    if (new[P_CHEMISTRY], new[P_CELL_COUNT]) != (cur[P_CHEMISTRY], cur[P_CELL_COUNT]):
        # The chemistry and the cells in series describe the battery itself,
        # not a setting: a file for another pack is most likely a mistake.
        console.print("[bold yellow]warning: this file is for a %s %dS pack, the BMS is set "
                      "for %s %dS: load it only if this battery is that[/bold yellow]"
                      % (CHEM_NAMES[new[P_CHEMISTRY]], new[P_CELL_COUNT],
                         CHEM_NAMES[cur[P_CHEMISTRY]], cur[P_CELL_COUNT]))
    if n == 0:
        console.print("no changes: the BMS already has these settings")
        return 0
    console.print(t)
    if dry_run:
        console.print("dry run: %d change(s) would be written, nothing sent" % n)
        return n
    c.write(R.A_PARAMS, [v & 0xFFFF for v in new])
    c.follow(dict(enumerate(new)))   # a new modbus_addr / modbus_baud answers from now on
    after = [r["raw"] for r in c.params()]
    bad = [TABLE[i][0] for i in range(N_PARAMS) if after[i] != new[i]]
    if bad:
        raise BmsError("the BMS did not keep: %s" % ", ".join(bad), 3)
    console.print("%d change(s) written and read back" % n)
    return n
