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


class Day:
    def __init__(self, chem="LFP", cells=8, capacity_ah=100.0, soc_true=0.6, soc_bms=0.8,
                 gain=1.01, offset_ma=50, seed=3, dt_ms=1000, params=None, ocv_shift_mv=0):
        self.chem = chem
        self.dt_ms = dt_ms
        self.pack = Pack(chem, cells, capacity_ah, soc_true, seed)
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

    def _level(self, k, period_s, lo, hi):
        r = random.Random(k // period_s * 7919 + 13)
        return r.uniform(lo, hi)

    def run(self, hours=None, sample_s=60, hook=None):
        dt = self.dt_ms
        bms = self.bms
        pack = self.pack
        total = 0.0
        sched = []
        for h, kind in SEGMENTS:
            sched.append((total, total + h * 3600.0, kind))
            total += h * 3600.0
        if hours is not None:
            total = hours * 3600.0
        saved = None
        if self.ocv_shift_mv:
            # The real cells differ from the firmware's table by this much.
            saved = packmod.OCV_TABLES[self.chem]
            xs, ys = saved
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
                if hook is not None:
                    hook(self)
                if t >= next_sample:
                    next_sample += sample_s
                    self.log.append((t / 3600.0, bms.soc.soc_frac(), pack.true_soc()))
            self.t_s = total
        finally:
            if saved is not None:
                packmod.OCV_TABLES[self.chem] = saved
        return self.log


def metrics(log, band=0.02):
    """max/RMS |error| overall, convergence time into ``band``, max/RMS after it."""
    errs = [abs(e - t) for (_, e, t) in log]
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
