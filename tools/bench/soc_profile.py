"""The 24 h SOC test day on the simulated pack, at coarse steps.

Used by ``bench_soc`` and the scenario tests.  The firmware core runs
unchanged; the virtual clock moves ``dt_ms`` per step (1 s by default: the
scheduler then runs every task once per step, the coulomb counter sees 1 s
intervals, which it integrates exactly), so a day costs 86 400 steps.

The day (times in hours, currents for a 100 Ah pack, scaled with capacity):
  0-1    rest
  1-3    mixed discharge, 8-40 A changing every 5 min
  3-3.5  rest
  3.5-7  CC/CV charge 40 A to the charge voltage, then tail
  7-8    rest
  8-12   household load 5-25 A changing every 10 min
  12-13  rest
  13-16  solar-like charge, half sine up to 35 A (CV-limited at the top)
  16-20  evening load 5-30 A
  20-24  rest
The current sensor has the given gain and offset errors; the BMS starts
with a wrong SOC.

Variants (what real packs do to an estimator):
* ``ocv_curve``: "table" (default): the simulated cells follow the
  firmware's own OCV table (``bms.ocv``), so "nominal" means the table is
  right and ``ocv_shift_mv`` is exactly the table's error; "sim": the
  simulator's own curve (``tools.sim.pack``), 0-5 mV from the table
  (5 mV at 15 %, 1 mV on the LFP plateau);
* ``ocv_shift_mv``: the simulated cells' OCV curve sits this far from the
  firmware's table (every point);
* ``ambient_c``: a cold day: the cells sit at that temperature, their
  resistance rises (pack model, 4 %/K) and their capacity falls
  (``COLD_CAP``: typical published 0.2C capacity retention, the sim's own
  numbers, not the firmware's);
* ``capacity_factor``: an aged pack (0.8: 80 % of the capacity left, the
  parameters still say the rated capacity), resistance x1.5;
* ``profile="week"``: seven solar-storage days that never reach the charge
  voltage (``WEEK_DAY``), starting at night; ``"day+week"``: the test day
  (with its full charge), then that week.
A plain coulomb counter runs beside the BMS on the same measured current,
started at the same wrong SOC and clamped to 0..100 % (``log`` column 4):
what the estimator must beat.
"""
import math
import random

from bms.core import Bms
from bms.eventlog import EventLog
from bms.params import CHEM_NAMES, ParamSet
from bms.params import index as param_index
from bms.ticks import VirtualClock

from tools.sim import pack as packmod
from tools.sim.fakeboard import FakeBoard
from tools.sim.pack import Pack

# Charge voltage per cell for the CV phase (what a typical charger uses).
CV_PER_CELL = {"LFP": 3.45, "NMC": 4.10, "LTO": 2.65, "NA": 3.85}
SEGMENTS = (
    (1.0, "rest"), (2.0, "mixed"), (0.5, "rest"), (3.5, "cccv"), (1.0, "rest"),
    (4.0, "house"), (1.0, "rest"), (3.0, "solar"), (4.0, "evening"), (4.0, "rest"),
)
# One solar-storage day of the week profile; the sun's strength changes every day.
WEEK_DAY = ((7.0, "night"), (2.0, "rest"), (6.0, "sun"), (9.0, "day"))
PROFILES = {
    "day": SEGMENTS,
    "week": WEEK_DAY * 7,
    # The test day (one CC/CV charge to its tail), then the solar week: the
    # rests of the first day teach the estimator the pack's OCV points.
    "day+week": SEGMENTS + WEEK_DAY * 7,
}
# Capacity retention at 0.2C vs 25 degC (typical published cell data; per chemistry).
COLD_CAP = {"LFP": ((-20.0, 0.62), (-10.0, 0.78), (0.0, 0.89), (25.0, 1.0)),
            "NMC": ((-20.0, 0.75), (-10.0, 0.85), (0.0, 0.93), (25.0, 1.0))}


def firmware_curve(chem):
    """The firmware's OCV table (``bms.ocv``, per mille / mV) as the pack model's (0..1, V)."""
    from bms import ocv as fw_ocv
    k = CHEM_NAMES.index(chem)
    return ([x / 1000.0 for x in fw_ocv._SOC[k]], [y / 1000.0 for y in fw_ocv._MV[k]])


def cold_capacity(chem, t_c):
    pts = COLD_CAP.get(chem, COLD_CAP["NMC"])
    if t_c >= pts[-1][0]:
        return 1.0
    if t_c <= pts[0][0]:
        return pts[0][1]
    for (t0, c0), (t1, c1) in zip(pts, pts[1:]):
        if t0 <= t_c <= t1:
            return c0 + (c1 - c0) * (t_c - t0) / (t1 - t0)
    return 1.0


class Day:
    def __init__(self, chem="LFP", cells=8, capacity_ah=100.0, soc_true=0.6, soc_bms=0.8,
                 gain=1.01, offset_ma=50, seed=3, dt_ms=1000, params=None, ocv_shift_mv=0,
                 ambient_c=25.0, capacity_factor=1.0, profile="day", ocv_curve="table"):
        self.chem = chem
        self.dt_ms = dt_ms
        self.profile = profile
        self.pack = Pack(chem, cells, capacity_ah, soc_true, seed, ambient_c=ambient_c)
        f = capacity_factor * cold_capacity(chem, ambient_c)
        for c in self.pack.cells:
            c.capacity_as *= f
            if capacity_factor < 1.0:
                c.r0 *= 1.5
                c.r1 *= 1.5
        self.cc = soc_bms
        self.rated_as = capacity_ah * 3600.0
        self.board = FakeBoard(self.pack, seed + 1)
        self.board.current_gain = gain
        self.board.current_offset_ma = offset_ma
        self.params = ParamSet(CHEM_NAMES.index(chem), max_cells=cells)
        over = {"cell_count": cells, "capacity": int(round(capacity_ah * 10))}
        over.update(params or {})
        self.params.set_many([(param_index(k), v) for k, v in over.items()])
        self.clock = VirtualClock(0)
        self.bms = Bms(self.board, self.params, self.clock, EventLog(256),
                       soc_pm=int(round(soc_bms * 1000)))
        self.rng = random.Random(seed)
        self.scale = capacity_ah / 100.0
        self.t_s = 0.0
        self.ocv_shift_mv = ocv_shift_mv
        self.ocv_curve = ocv_curve
        self.log = []  # (t_h, est, true)

    def _apply(self, kind, t_in, k):
        p = self.pack
        s = self.scale
        p.charger_cv = None
        p.charger_a = 0.0
        p.load_a = 0.0
        if kind == "mixed":
            p.load_a = self._level(k, 300, 8, 40) * s
        elif kind == "cccv":
            p.charger_a = 40.0 * s
            p.charger_cv = CV_PER_CELL[self.chem] * p.n
        elif kind == "house":
            p.load_a = self._level(k, 600, 5, 25) * s
        elif kind == "solar":
            p.charger_a = 35.0 * s * math.sin(math.pi * t_in / (3 * 3600.0))
            p.charger_cv = CV_PER_CELL[self.chem] * p.n
        elif kind == "evening":
            p.load_a = self._level(k, 400, 5, 30) * s
        elif kind == "night":
            p.load_a = self._level(k, 900, 2, 5) * s
        elif kind == "day":
            p.load_a = self._level(k, 600, 3, 7) * s
        elif kind == "sun":
            peak = random.Random(k // 86400 * 31 + 5).uniform(8.0, 20.0)
            p.charger_a = peak * s * math.sin(math.pi * t_in / (6 * 3600.0))
            p.charger_cv = CV_PER_CELL[self.chem] * p.n

    def _level(self, k, period_s, lo, hi):
        r = random.Random(k // period_s * 7919 + 13)
        return r.uniform(lo, hi)

    def run(self, hours=None, sample_s=60, hook=None):
        dt = self.dt_ms
        bms = self.bms
        pack = self.pack
        total = 0.0
        sched = []
        segs = PROFILES[self.profile]
        for h, kind in segs:
            sched.append((total, total + h * 3600.0, kind))
            total += h * 3600.0
        if hours is not None:
            total = hours * 3600.0
        saved = packmod.OCV_TABLES[self.chem]
        if self.ocv_curve == "table":
            xs, ys = firmware_curve(self.chem)
        else:
            xs, ys = saved
        # The real cells differ from the firmware's table by this much.
        packmod.OCV_TABLES[self.chem] = (xs, [y + self.ocv_shift_mv / 1000.0 for y in ys])
        try:
            seg = 0
            next_sample = 0.0
            steps = int(total * 1000 / dt)
            for k in range(steps):
                t = k * dt / 1000.0
                while seg < len(sched) - 1 and t >= sched[seg][1]:
                    seg += 1
                t0, _, kind = sched[seg]
                self._apply(kind, t - t0, int(t))
                pack.step(dt / 1000.0)
                self.clock.advance(dt)
                bms.step()
                # Plain coulomb counting on the same measured current, clamped.
                cc = self.cc + bms.meas.current_ma * dt / 1000.0 / 1000.0 / self.rated_as
                self.cc = 0.0 if cc < 0.0 else (1.0 if cc > 1.0 else cc)
                if hook is not None:
                    hook(self)
                if t >= next_sample:
                    next_sample += sample_s
                    self.log.append((t / 3600.0, bms.soc.soc_frac(), pack.true_soc(), self.cc))
            self.t_s = total
        finally:
            packmod.OCV_TABLES[self.chem] = saved
        return self.log


def metrics(log, band=0.02):
    """max/RMS |error| overall, convergence time into ``band``, max/RMS after it."""
    errs = [abs(r[1] - r[2]) for r in log]
    n = len(errs)
    conv = None
    # Converged: from this sample on the error never leaves the band again.
    for i in range(n - 1, -1, -1):
        if errs[i] > band:
            conv = i + 1
            break
    else:
        conv = 0
    after = errs[conv:] if conv < n else []
    rms = (sum(e * e for e in errs) / n) ** 0.5 if n else 0.0
    return {
        "max": max(errs) if errs else 0.0,
        "rms": rms,
        "converge_h": log[conv][0] if conv < n else None,
        "max_after": max(after) if after else None,
        "rms_after": (sum(e * e for e in after) / len(after)) ** 0.5 if after else None,
    }
