"""What `make sim` shows: a live table on a terminal, plain periodic lines in a pipe.

The table draws each cell as a bar between the chemistry's ``uv1`` and
``ov1`` (so a full bar is the cut-off), marks the lowest and highest cell,
flags the cells being balanced, and lists the pack values with the current
limits the inverter / charger get.  Piped (``make sim | tee log``) rich's
live view would print nothing useful, so ``plain_line`` gives one line per
period instead.
"""
from bms import faults as F
from bms.contactors import RELAY_NAMES
from bms.core import MODE_NAMES
from bms.measurements import ROLE_NAMES
from bms.params import P_OV1, P_UV1

BAR_WIDTH = 24
MAX_ROWS = 32


def bar(mv, lo_mv, hi_mv, width=BAR_WIDTH):
    """A bar of ``width`` characters: empty at ``lo_mv``, full at ``hi_mv``."""
    if hi_mv <= lo_mv:
        return " " * width
    f = (mv - lo_mv) / float(hi_mv - lo_mv)
    f = 0.0 if f < 0 else 1.0 if f > 1 else f
    n = int(round(f * width))
    return "#" * n + "." * (width - n)


def cell_rows(sim):
    """(number, mV, bar, marks) per shown cell; marks: min / max / bal."""
    m = sim.bms.meas
    p = sim.bms.params
    lo, hi = p[P_UV1], p[P_OV1]
    bal = sim.bms.balancer.flags
    out = []
    for i in range(min(m.n_cells, MAX_ROWS)):
        marks = []
        if i == m.max_idx:
            marks.append("max")
        if i == m.min_idx:
            marks.append("min")
        if bal[i]:
            marks.append("bal")
        out.append(("%d" % (i + 1), "%d" % m.cell_mv[i], bar(m.cell_mv[i], lo, hi),
                    " ".join(marks)))
    return out


def pack_rows(sim, ports):
    m = sim.bms.meas
    bms = sim.bms
    c = bms.contactors.state
    faults = [F.TABLE[i][F.F_NAME] for i in range(F.N_FAULTS) if bms.prot.active(i)]
    lim = bms.limits
    rows = [
        ("voltage", "%.2f V" % (m.pack_mv / 1000.0)),
        ("current", "%+.1f A" % (m.current_ma / 1000.0)),
        ("SOC", "%.1f %%" % (bms.soc.soc_pm / 10.0)),
        ("true SOC", "%.1f %%" % (sim.pack.true_soc() * 100.0)),
        ("mode", MODE_NAMES[bms.mode]),
        ("max/min", "%d (#%d) / %d (#%d)" % (m.max_mv, m.max_idx + 1, m.min_mv, m.min_idx + 1)),
        ("diff", "%d mV" % m.diff_mv),
        ("balancing", "%d cells" % bms.balancer.count),
        ("CCL / DCL", "%.1f / %.1f A" % (lim.ccl_ma / 1000.0, lim.dcl_ma / 1000.0)),
        ("CVL / DVL", "%.2f / %.2f V" % (lim.cvl_mv / 1000.0, lim.dvl_mv / 1000.0)),
        ("relays", " ".join(n for i, n in enumerate(RELAY_NAMES) if c[i]) or "all open"),
        ("faults", ", ".join(faults) or "none"),
        ("level", F.LEVEL_NAMES[bms.prot.level]),
    ]
    for role in range(len(ROLE_NAMES)):
        n = sum(1 for i in range(m.n_temps) if m.temp_role[i] == role)
        if n:
            rows.append(("T " + ROLE_NAMES[role], "%.1f .. %.1f degC (%d)" % (
                m.tmin[role] / 10.0, m.tmax[role] / 10.0, n)))
    rows += list(ports)
    return rows


def table(sim, ports=()):
    from rich.table import Table
    m = sim.bms.meas
    t = Table(title="MicroPython BMS on a simulated %dS %s pack - t=%.0f s" % (
        m.n_cells, sim.pack.chem, sim.t_ms / 1000.0), expand=False)
    for name, just in (("cell", "right"), ("mV", "right"), ("uv1 .. ov1", "left"),
                       ("", "left"), (" ", "left"), ("pack", "left"), ("value", "right")):
        t.add_column(name, justify=just)
    cells = cell_rows(sim)
    right = pack_rows(sim, ports)
    for i in range(max(len(cells), len(right))):
        c = cells[i] if i < len(cells) else ("", "", "", "")
        r = right[i] if i < len(right) else ("", "")
        t.add_row(c[0], c[1], c[2], c[3], "", r[0], r[1])
    if m.n_cells > MAX_ROWS:
        t.caption = "%d cells: showing 1-%d (bmsctl monitor shows all)" % (m.n_cells, MAX_ROWS)
    return t


def plain_line(sim):
    """One line of the state, for piped output."""
    m = sim.bms.meas
    bms = sim.bms
    lim = bms.limits
    faults = [F.TABLE[i][F.F_NAME] for i in range(F.N_FAULTS) if bms.prot.active(i)]
    return ("t=%.0fs %.2fV %+.1fA SOC %.1f%% cells %d..%d mV (#%d..#%d) bal %d "
            "CCL %.1fA DCL %.1fA mode %s faults %s" % (
                sim.t_ms / 1000.0, m.pack_mv / 1000.0, m.current_ma / 1000.0,
                bms.soc.soc_pm / 10.0, m.min_mv, m.max_mv, m.min_idx + 1, m.max_idx + 1,
                bms.balancer.count, lim.ccl_ma / 1000.0, lim.dcl_ma / 1000.0,
                MODE_NAMES[bms.mode], ",".join(faults) or "none"))
