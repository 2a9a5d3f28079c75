"""Replay the committed PyBaMM cell traces (``cell_traces.py``) through the SOC estimator.

The estimator (``bms.soc.Soc``, the firmware's fixed-point code) sees what a
BMS would: the mean cell voltage of an 8S pack of identical cells (each
cell read to 1 mV with +-1 mV noise), the pack current with the bench's
sensor errors (1 % gain, 50 mA offset on a 100 Ah pack: the model cell is
scaled to 100 Ah as parallel cells), 25 degC, one reading every 10 s (the
trace period; the counter integrates the interval's mean current exactly).
It starts 20 % high (a set / restored SOC that is wrong), like the plain
coulomb counter it is compared with, which counts the same measured
current from the same start, clamped to 0..100 %.
"""
import csv
import functools
import gzip
import os
import random

from bms import ocv
from bms.measurements import Measurements, ROLE_CELL
from bms.params import CHEM_NAMES, P_CAPACITY, ParamSet
from bms.soc import Soc

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CHEM = {"lfp": "LFP", "nmc": "NMC"}
NOMINAL_AH = {"lfp": 2.3, "nmc": 5.0}
CELLS = 8


def load(name, kind):
    with gzip.open(os.path.join(DATA, "%s_%s.csv.gz" % (name, kind)), "rt") as f:
        r = csv.reader(f)
        next(r)
        return [tuple(int(x) for x in row) for row in r]


@functools.lru_cache(maxsize=None)
def _ocv_points(name):
    """The model cell's C/50 quasi-OCV: sorted (SOC fraction, mV)."""
    return tuple(sorted((s / 1e6, v / 1000.0) for s, v in load(name, "ocv")))


def ocv_vs_table(name, lo=0.2, hi=0.9):
    """(min, max) of the model cell's C/50 OCV minus our table, mV, for SOC lo..hi."""
    chem = CHEM_NAMES.index(CHEM[name])
    d = [v - ocv.ocv_mv(chem, int(s * 1000)) for s, v in _ocv_points(name) if lo <= s <= hi]
    return min(d), max(d)


def replay(name, kind, start=0.8, gain=1.01, offset_ma=50, seed=7):
    """Log rows (t_h, est, true, cc) every 10 s, and the Soc object."""
    rows = load(name, kind)
    chem = CHEM_NAMES.index(CHEM[name])
    k = 100.0 / NOMINAL_AH[name]
    p = ParamSet(chem, max_cells=CELLS)
    p.set_many([(P_CAPACITY, 1000)])           # 100.0 Ah rated
    soc = Soc(p, 500)
    soc.set_pm(int(round(start * 1000)))
    m = Measurements(CELLS, (ROLE_CELL,))
    m.n_cells = CELLS
    m.cells_seen = True
    m.current_seen = True
    m.bad_cells = 0
    m.tmin[ROLE_CELL] = 250
    m.tmax[ROLE_CELL] = 250
    rng = random.Random(seed)
    cc = start
    rated_mas = 100.0 * 3600.0 * 1000.0 * 1000.0   # mA*ms in 100 Ah
    log = []
    now = 0
    prev_t = rows[0][0]
    for t_s, i_ma, v_uv, s_ppm in rows:
        dt_ms = (t_s - prev_t) * 1000
        prev_t = t_s
        i_meas = int(round(i_ma * k * gain + offset_ma))
        if dt_ms > 0:
            soc.integrate(i_meas, dt_ms)
            cc += i_meas * dt_ms / rated_mas
            cc = 0.0 if cc < 0.0 else (1.0 if cc > 1.0 else cc)
        now += dt_ms
        mv = v_uv / 1000.0
        m.sum_mv = sum(int(round(mv + rng.uniform(-1.0, 1.0))) for _ in range(CELLS))
        m.current_ma = i_meas
        soc.estimate(m, now)
        log.append((t_s / 3600.0, soc.soc_frac(), s_ppm / 1e6, cc))
    return log, soc


def full_time(name):
    """Hour at which the full day's CV charge ended (its highest true SOC in the first 10 h)."""
    rows = load(name, "full")
    best = max((r for r in rows if r[0] < 36000), key=lambda r: r[3])
    return best[0] / 3600.0


def _cell_ocv_mv(name, soc):
    """The model cell's own C/50 OCV (mV) at SOC fraction ``soc`` (its ocv trace, interpolated)."""
    pts = _ocv_points(name)
    for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
        if s0 <= soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0) if s1 > s0 else v0
    return pts[0][1] if soc < pts[0][0] else pts[-1][1]


def table_at_rests(name, kind, h0, rest_s=1800):
    """What our table reads at each rest of ``rest_s`` or more that ends after
    ``h0`` h, on the model cell's own OCV at the rest's true SOC: [(true SOC,
    table SOC - true SOC)], fractions.  An estimator that believes the table
    at a rest is that far off there; one that does not has only the count
    since a point it trusted."""
    chem = CHEM_NAMES.index(CHEM[name])
    rows = load(name, kind)
    out = []
    start = None
    for i, (t_s, i_ma, _v, s_ppm) in enumerate(rows + [(None, 1, 0, 0)]):
        if i_ma == 0 and t_s is not None:
            if start is None:
                start = t_s
            continue
        if start is not None and i > 0:
            t_end, s_true = rows[i - 1][0], rows[i - 1][3] / 1e6
            if t_end - start >= rest_s and t_end / 3600.0 >= h0:
                read = ocv.soc_pm(chem, int(round(_cell_ocv_mv(name, s_true)))) / 1000.0
                out.append((s_true, read - s_true))
        start = None
    return out
