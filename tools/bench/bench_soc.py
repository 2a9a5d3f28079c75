"""SOC accuracy (the issue 20 acceptance rows), and passive balancing speed vs physics.

SOC on the bench's own pack model: the 24 h profile of ``soc_profile``
(charge, mixed load, rests) on LFP and NMC packs with a 1 % current-gain
error, a 50 mA offset and a BMS that starts 20 % (absolute) off; the max
error after 1 h per profile (``PROFILES``: nominal, OCV table +-5 / +-10 mV
off, cold 0 / -10 degC, aged 80 %, a week without a full charge), each with
plain coulomb counting's error beside it and the ratio to its goal.  Learned
OCV points (``LEARN_RUNS``): the test day, then the solar week, on cells
10 mV off the table, against the same run with learning switched off.  The
cells follow the firmware's own table in every profile (``Day(ocv_curve=
"table")``: "nominal" is a right table, "+5 mV" exactly 5 mV off it); one
more row per chemistry runs on the simulator's own curve, 0-5 mV off.

SOC on a cell model the project did not write: PyBaMM DFN traces
(``soc_traces``, committed in ``data/``): max error after a CV-tail full
charge (LFP, NMC), after 1 h without one (NMC), and max / RMS against
coulomb counting without one (LFP plateau).

``python -m tools.bench --only soc --soc-only`` runs just these rows.

Balancing: a 16S NMC pack (5 Ah cells, 100 mA bleed) whose cells sit at
random places within a 100 mV spread, at rest, balancing allowed at rest;
time until the true OCV spread is <= 10 mV, against the physical minimum
(every cell bleeding continuously at the balance current, no duty cycle,
no adjacency rule).
"""
import random

from tools.bench.common import Row
from tools.bench.soc_profile import Day, metrics

AREA = "soc"


def _err(log, h0=0.0, col=1):
    e = [abs(r[col] - r[2]) for r in log if r[0] >= h0]
    return max(e), (sum(x * x for x in e) / len(e)) ** 0.5


def _row_pair(name, log, h0, goal, note=""):
    """The estimator's max error after ``h0`` h with plain coulomb counting beside it."""
    est, _ = _err(log, h0, 1)
    cc, _ = _err(log, h0, 3)
    ratio = "; est/goal %.2f" % (est * 100 / goal) if goal else ""
    return [Row(AREA, name, round(est * 100, 2), "%", "<= %g" % goal if goal else "",
                "coulomb counting %.2f %%%s%s" % (cc * 100, ratio, ("; " + note) if note else ""))]


# Bench-model profiles: (tag, Day keyword arguments, goal for max error after 1 h in %).
PROFILES = (
    ("nominal", {}, 0.7),
    ("OCV +5 mV", {"ocv_shift_mv": 5}, 2.0),
    ("OCV -5 mV", {"ocv_shift_mv": -5}, 2.0),
    ("OCV +10 mV", {"ocv_shift_mv": 10}, 3.0),
    ("OCV -10 mV", {"ocv_shift_mv": -10}, 3.0),
    ("cold 0 degC", {"ambient_c": 0.0}, 3.0),
    ("cold -10 degC", {"ambient_c": -10.0}, 3.0),
    ("aged 80 %", {"capacity_factor": 0.8}, 3.0),
    # 1 s steps like every day here (the core counts at most 1 s per step).
    ("week, no full charge", {"profile": "week"}, 5.0),
    # The simulator's own curve: 0-5 mV off the table (no goal: shows a table
    # error of the size every real pack has, unannounced).
    ("on the simulator's own OCV curve", {"ocv_curve": "sim"}, None),
)


def _table_floor(chem, shift_mv, soc_pm):
    """What the table alone says at the first hour's rest (true SOC ``soc_pm``)
    on cells ``shift_mv`` off it: the error of any estimator that believes
    the table at that hour, and it has nothing else to go on from a fresh
    boot that starts 20 % off."""
    from bms import ocv as fw_ocv
    from bms.params import CHEM_NAMES
    k = CHEM_NAMES.index(chem)
    seen = fw_ocv.soc_pm(k, fw_ocv.ocv_mv(k, soc_pm) + shift_mv)
    return "the table itself reads %.1f %% off at the first hour's rest (true SOC %d %%)" % (
        abs(seen - soc_pm) / 10.0, soc_pm // 10)


class _PlateauFloor:
    """What no estimator can beat on an aged pack before it has measured the
    capacity: one that knows SOC exactly wherever the voltage can tell it
    (where the table's slope passes the estimator's slope gate: the knees)
    and counts the true current with the rated capacity across the flat
    part between them (the LFP plateau, where the voltage has no say).  Its
    largest error on the flat part, from the first hour to the first
    CV-tail end of charge (the day's 7th hour: the capacity can have been
    measured after it); 0 on a curve without a flat part."""

    def __init__(self, chem):
        from bms import ocv
        from bms.params import CHEM_NAMES
        from bms.soc import _H_GATE_UV
        self.k = CHEM_NAMES.index(chem)
        self.slope = ocv.slope_uv       # looked up once: the hook runs every simulated second
        self.gate = _H_GATE_UV
        self.s = None
        self.worst = 0.0

    def __call__(self, d):
        t = d.clock.elapsed_ms / 3.6e6
        if t < 1.0 or t > 7.0:
            return
        true = d.pack.true_soc()
        if self.s is None or self.slope(self.k, int(true * (1 << 28))) >= self.gate:
            self.s = true       # the first hour's rest, or a knee: SOC known
            return
        self.s += d.pack.current_a * d.dt_ms / 1000.0 / d.rated_as
        e = abs(self.s - true)
        if e > self.worst:
            self.worst = e


def _soc_rows(chem, tag, kw, goal):
    d = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8, gain=1.01, offset_ma=50, **kw)
    floor = _PlateauFloor(chem) if "capacity_factor" in kw else None
    log = d.run(sample_s=60, hook=floor)
    note = ""
    if floor is not None:
        s = d.bms.soc
        note = "capacity at the end %.1f %% of rated (pack %.0f %%), %d on-line measurements" % (
            s.capacity_mah * 100.0 / s.rated_mah, kw["capacity_factor"] * 100, s.cap_updates)
        if floor.worst > 0.0:
            note += ("; floor before the first full charge: exact SOC at every knee, an exact "
                     "count with the rated capacity across the flat part between them: %.1f %% "
                     "off there" % (floor.worst * 100))
    if kw.get("ocv_shift_mv"):
        note = _table_floor(chem, kw["ocv_shift_mv"], 600)
    rows = _row_pair("%s %s: max error after 1 h" % (chem, tag), log, 1.0, goal, note)
    if tag == "nominal":
        m2 = metrics(log, 0.02)
        rows.append(Row(AREA, "%s nominal: RMS error 24 h" % chem, round(m2["rms"] * 100, 2), "%",
                        "", "1% gain, 50 mA offset, start +20% (fresh boot: table start)"))
    return rows


# Learned OCV points (bms.soc): the one-day profiles learn them only after
# the day's end anchor.  These runs take the test day (with its CC/CV
# charge) and then the solar week without a full charge, on cells off the
# table: (chemistry, table shift in mV).
LEARN_RUNS = (("LFP", 10), ("LFP", -10))


def _week_run(chem, shift, learn):
    from bms import soc as fw_soc
    real = fw_soc.Soc._learn_point
    if not learn:
        fw_soc.Soc._learn_point = lambda self, y, t2, chem: False
    try:
        d = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8, gain=1.01, offset_ma=50,
                ocv_shift_mv=shift, profile="day+week")
        log = d.run(sample_s=60)
    finally:
        fw_soc.Soc._learn_point = real
    return d, log


def _learn_rows(chem, shift):
    """The week after a full-charge day, with the learned points and with the
    same run on the bare table (learning switched off)."""
    d, log = _week_run(chem, shift, True)
    _, bare = _week_run(chem, shift, False)
    est, est_rms = _err(log, 24.0, 1)
    cc, _ = _err(log, 24.0, 3)
    b, b_rms = _err(bare, 24.0, 1)
    s = d.bms.soc
    name = "%s OCV %+d mV, full-charge day then solar week: max error in the week" % (chem, shift)
    note = ("bare table %.2f %%, coulomb counting %.2f %%; %d rests learned, the table moved "
            "%+.1f..%+.1f mV (the cells are %+d mV off it)" % (
                b * 100, cc * 100, s.ocv_learned, s.ocv_offset_dmv(False) / 10.0,
                s.ocv_offset_dmv(True) / 10.0, shift))
    return [Row(AREA, name, round(est * 100, 2), "%", "", note),
            Row(AREA, "  learned / bare table, max and RMS error in the week",
                "%.2f / %.2f" % (est / b, est_rms / b_rms), "ratio", "< 1",
                "RMS %.2f %% learned, %.2f %% bare" % (est_rms * 100, b_rms * 100))]


def _rests(name, kind, h0, rest_s=1800):
    """Where the model cell's own OCV puts our table at the trace's rests."""
    from tools.bench import soc_traces as st
    pts = st.table_at_rests(name, kind, h0, rest_s)
    return "our table at the cell's rests after it: " + ", ".join(
        "%+.1f %% at %.0f %%" % (e * 100, s * 100) for s, e in pts)


def _trace_rows(name):
    """Acceptance rows on the PyBaMM cell (an OCV curve that is not our table)."""
    from tools.bench import soc_traces as st
    chem = st.CHEM[name]
    lo, hi = st.ocv_vs_table(name)
    rows = [Row(AREA, "%s PyBaMM cell: OCV - table, 20-90 %% SOC" % chem,
                "%+.0f..%+.0f" % (lo, hi), "mV", "", "DFN %s, C/50" % (
                    "Prada2013 LFP" if name == "lfp" else "Chen2020 NMC811"))]
    log, _ = st.replay(name, "full")
    tf = st.full_time(name) + 1.0 / 60.0   # the charge ended; the tail detector holds 30 s
    rows += _row_pair("%s PyBaMM cell: max error after CV-tail full charge" % chem, log, tf, 2.0,
                      "charge ended %.1f h; %s" % (tf, _rests(name, "full", tf - 0.1)))
    log, _ = st.replay(name, "nofull")
    if name == "nmc":
        rows += _row_pair("NMC PyBaMM cell, no full charge: max error after 1 h", log, 1.0, 5.0,
                          _rests(name, "nofull", 1.0, 1500))
    else:
        em, er = _err(log, 0.0, 1)
        cm, cr = _err(log, 0.0, 3)
        rows.append(Row(AREA, "LFP PyBaMM cell, no full charge: max error / coulomb counting",
                        round(em / cm, 3), "", "<= 1", "est %.2f %%, coulomb counting %.2f %%"
                        % (em * 100, cm * 100)))
        rows.append(Row(AREA, "LFP PyBaMM cell, no full charge: RMS error / coulomb counting",
                        round(er / cr, 3), "", "<= 1", "est %.2f %%, coulomb counting %.2f %%"
                        % (er * 100, cr * 100)))
    return rows


def _balance_rows(quick=False):
    from tools.sim import pack as packmod
    from tools.sim.simulator import Simulation
    cap_ah = 5.0
    bal_ma = 100.0
    sim = Simulation("NMC", cells=16, capacity_ah=cap_ah, soc=0.75, seed=11, balance_ma=bal_ma,
                     spread=0.0, params={"bal_start": 3800, "bal_mode": 1, "bal_diff": 16})
    rng = random.Random(5)
    targets = [3.95 + 0.1 * k / 15 for k in range(16)]
    rng.shuffle(targets)
    for c, v in zip(sim.pack.cells, targets):
        c.soc = packmod.soc_at_ocv("NMC", v)
        c.self_dis = 0.0
    v_lo = min(targets)
    s_goal = packmod.soc_at_ocv("NMC", v_lo + 0.010)
    t_min = max((c.soc - s_goal) * c.capacity_as for c in sim.pack.cells) / (bal_ma / 1000.0)
    dt = 1000
    limit = int(t_min * 3)
    t = 0
    done = None
    while t < limit:
        sim.pack.step(dt / 1000.0)
        sim.clock.advance(dt)
        sim.bms.step()
        t += 1
        if t % 30 == 0:
            vs = [c.voltage(0.0) for c in sim.pack.cells]
            if max(vs) - min(vs) <= 0.010:
                done = t
                break
    note = "16S NMC %g Ah, %d mA bleed, 3/4 duty, no adjacent" % (cap_ah, bal_ma)
    rows = [
        Row(AREA, "balance 100->10 mV", round(done / 3600.0, 2) if done else "> %.1f" % (limit / 3600.0),
            "h", "", note),
        Row(AREA, "balance physical minimum", round(t_min / 3600.0, 2), "h", "",
            "all cells bleeding continuously"),
    ]
    if done:
        rows.append(Row(AREA, "balance time / minimum", round(done / t_min, 2), "x", "",
                        "duty 0.75 alone gives 1.33"))
    return rows


def _range_rows(chem):
    """The small-int check of host_tests/test_soc_intrange.py over the whole day:
    every arithmetic result of bms.soc/ocv/fixmath range-checked (a violation
    raises and shows as an ERROR row)."""
    import os
    import sys
    from tools.bench.common import ROOT
    sys.path.insert(0, os.path.join(ROOT, "host_tests"))
    from soc_intcheck import checked_estimator
    with checked_estimator(deep=False) as chk:
        d = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8, gain=1.01, offset_ma=50)
        d.run(sample_s=600)
        n = d.bms.soc.est_updates
    return [Row(AREA, "%s 24 h: largest integer / 2**30" % chem, round(chk.peak / float(1 << 30), 3),
                "", "< 1", "%d updates, %.0f M checked operations, no float; RP2040 small int"
                % (n, chk.ops / 1e6))]


def _soc_job(job):
    kind = job[0]
    if kind == "range":
        return _range_rows(job[1])
    if kind == "trace":
        return _trace_rows(job[1])
    if kind == "learn":
        return _learn_rows(job[1], job[2])
    return _soc_rows(*job[1:])


def jobs(quick=False):
    out = []
    for chem in ("LFP", "NMC"):
        for tag, kw, goal in PROFILES:
            if quick and tag != "nominal":
                continue
            out.append(("day", chem, tag, kw, goal))
    if not quick:
        out += [("learn", c, sh) for c, sh in LEARN_RUNS]
    # The week runs are the longest: start them first.
    out.sort(key=lambda j: 0 if j[0] == "learn" or (j[0] == "day" and j[2].startswith("week"))
             else 1)
    out += [("trace", "lfp"), ("trace", "nmc")]
    if not quick:
        out += [("range", "LFP"), ("range", "NMC")]
    return out


def run(ctx):
    # The days are independent simulations: two worker processes halve the
    # wall time (the fixed-point estimator costs CPython ~10-20 s per day).
    todo = jobs(getattr(ctx, "quick", False))
    try:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=2) as ex:
            per_job = list(ex.map(_soc_job, todo))
    except (ImportError, OSError):
        per_job = [_soc_job(j) for j in todo]
    rows = []
    for r in per_job:
        rows.extend(r)
    if not getattr(ctx, "soc_only", False):
        rows.extend(_balance_rows())
    return rows
