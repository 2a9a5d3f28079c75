"""SOC accuracy over a simulated day, and passive balancing speed vs physics.

SOC: the 24 h profile of ``soc_profile`` (charge, mixed load, rests) on LFP
and NMC packs with a 1 % current-gain error, a 50 mA offset and a BMS that
starts 20 % (absolute) off.  Figures: max and RMS error over the day, the
time after which the error stays within 2 % (and 1 %), and the max error
after convergence (goal <= 1 %).  Sensitivity rows repeat the day with the
simulated cells' OCV 5 mV above the firmware table (what a real cell that
differs from the datasheet curve does).

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


def _soc_rows(chem, shift_mv=0):
    d = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8, gain=1.01, offset_ma=50,
            ocv_shift_mv=shift_mv)
    log = d.run(sample_s=60)
    m2 = metrics(log, 0.02)
    m1 = metrics(log, 0.01)
    tag = chem if not shift_mv else "%s OCV%+d mV" % (chem, shift_mv)
    note = "1% gain, 50 mA offset, start +20%"
    rows = [
        Row(AREA, "%s max error 24 h" % tag, round(m2["max"] * 100, 2), "%", "", note),
        Row(AREA, "%s RMS error 24 h" % tag, round(m2["rms"] * 100, 2), "%", ""),
        Row(AREA, "%s converge to 2 %%" % tag,
            round(m2["converge_h"] * 60, 1) if m2["converge_h"] is not None else "never", "min", ""),
        Row(AREA, "%s converge to 1 %%" % tag,
            round(m1["converge_h"] * 60, 1) if m1["converge_h"] is not None else "never", "min", ""),
        Row(AREA, "%s max error after 2 %% conv." % tag,
            round(m2["max_after"] * 100, 2) if m2["max_after"] is not None else "-", "%", "<= 1"),
        Row(AREA, "%s max error after 1 h" % tag,
            round(max(abs(e - t) for (h, e, t) in log if h >= 1.0) * 100, 2), "%", "<= 1"),
    ]
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

    def soc_at(v):
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if packmod.ocv("NMC", mid) < v:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2
    for c, v in zip(sim.pack.cells, targets):
        c.soc = soc_at(v)
        c.self_dis = 0.0
    v_lo = min(targets)
    s_goal = soc_at(v_lo + 0.010)
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


def _soc_day(args):
    if args[1] == "range":
        return _range_rows(args[0])
    return _soc_rows(*args)


def run(ctx):
    days = [("LFP", 0), ("NMC", 0)]
    if not getattr(ctx, "quick", False):
        days += [("LFP", 5), ("NMC", 5), ("LFP", "range"), ("NMC", "range")]
    # The days are independent simulations: two worker processes halve the
    # wall time (the fixed-point estimator costs CPython ~10 s per day).
    try:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=2) as ex:
            per_day = list(ex.map(_soc_day, days))
    except (ImportError, OSError):
        per_day = [_soc_day(d) for d in days]
    rows = []
    for r in per_day:
        rows.extend(r)
    rows.extend(_balance_rows())
    return rows
