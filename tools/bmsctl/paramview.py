"""How `bmsctl params get` presents the parameter table: grouped like the
vendor tool's Param pages, enum values by name, 80 columns.

Everything comes from ``bms.params.TABLE``: the enum names are parsed from
the row's description ("0 off, 1 while charging, ..."), chemistry names from
``CHEM_NAMES``; a parameter no group names falls into "Other", so a new row
is never hidden.
"""
import re

import tools  # noqa: F401
from bms.params import CHEM_NAMES, P_CHEMISTRY, TABLE

# (page, names) in the order of the vendor's Param pages.
GROUPS = (
    ("Pack", ("chemistry", "custom_chem", "cell_count", "capacity", "module_cells")),
    ("Cell voltage", ("ov1", "ov2", "ov_rec", "ov_delay", "ov2_delay", "uv1", "uv2", "uv_rec",
                      "uv_delay", "uv2_delay", "diff_prot", "diff_rec", "alarm_margin_mv")),
    ("Current", ("chg_oc", "chg_oc_delay", "dsg_oc", "dsg_oc_delay", "peak", "peak_delay",
                 "short_circuit", "oc_release", "oc_retries", "oc_window")),
    ("Temperature", ("t_power_ot", "t_power_rec", "t_bal_ot", "t_bal_rec", "t_cell_ot",
                     "t_cell_rec", "t_chg_ot", "t_chg_rec", "lt_chg", "lt_chg_rec", "lt_dsg",
                     "lt_dsg_rec", "alarm_margin_c")),
    ("Balancing", ("bal_enable", "bal_mode", "bal_start", "bal_diff", "bal_current")),
    ("Switches", ("chg_switch", "dsg_switch", "key_enable", "buzzer", "precharge_pct",
                  "precharge_timeout")),
    ("Heater", ("heater_mode", "heat_on", "heat_off")),
    ("Sleep", ("sleep_idle", "sleep_current")),
    ("Calibration", ("cur_gain", "cur_offset")),
    ("Communication", ("modbus_addr", "modbus_baud", "special_charger", "module_timeout")),
)

_ENUM_RE = re.compile(r"(\d+) ([^,;:()]+?)(?=,|;|$| \d+ )")


def enum_names(i):
    """{value: name} of an enum or bool row, else None."""
    name, unit = TABLE[i][0], TABLE[i][1]
    if i == P_CHEMISTRY:
        return dict(enumerate(CHEM_NAMES))
    if unit == "bool":
        return {0: "off", 1: "on"}
    if unit != "enum":
        return None
    text = TABLE[i][6]
    if ":" in text:
        text = text.split(":", 1)[1]
    out = {}
    for m in _ENUM_RE.finditer(text):
        out[int(m.group(1))] = m.group(2).strip()
    return out or None


def enum_name(i, raw):
    names = enum_names(i)
    if names is None:
        return None
    return names.get(raw, str(raw))


def enum_value(i, text):
    """The raw value of enum/bool name ``text`` for row ``i``, else None."""
    names = enum_names(i)
    if not names:
        return None
    t = text.strip().lower()
    for v, n in names.items():
        if n.lower() == t:
            return v
    return None


def grouped(rows):
    """[(page, [row, ...]), ...] of client.params() rows, every row once."""
    by_name = {r["name"]: r for r in rows}
    out = []
    seen = set()
    for page, names in GROUPS:
        sel = [by_name[n] for n in names if n in by_name]
        if sel:
            out.append((page, sel))
            seen.update(r["name"] for r in sel)
    rest = [r for r in rows if r["name"] not in seen]
    if rest:
        out.append(("Other", rest))
    return out
