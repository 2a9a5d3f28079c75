"""The fixed-point estimator (bms.soc) keeps the float reference's behaviour.

tools/sim/soc_float.py is the float filter the firmware ran before; both
run the same simulated hours (wrong start, fresh boot, load, rest, charge)
and must agree on SOC to a small fraction of the 1 % accuracy goal, and the
internal states must agree too (RC voltage, table error, SOC uncertainty).
"""
import math

from tools.bench.soc_profile import Day
from tools.sim.soc_float import Soc as FloatSoc


def _pair(chem, hours):
    """The same simulated hours (same seeds: pack, currents, noise) with each filter."""
    a = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8)
    b = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8)
    b.bms.soc = FloatSoc(b.params, 800)
    a.run(hours=hours, sample_s=60)
    b.run(hours=hours, sample_s=60)
    assert len(a.log) == len(b.log) > 200
    worst = max(abs(x[1] - y[1]) for x, y in zip(a.log, b.log))
    return worst, a, b


def _final_states(a, b):
    xs = a.bms.soc
    fs = b.bms.soc
    return (abs(xs.v1_v - fs.v1), abs(xs.bias_v - fs.bias),
            abs(xs.sigma_pm - math.sqrt(fs.p00) * 1000.0))


def test_lfp_fixed_point_tracks_the_float_filter():
    worst, a, b = _pair("LFP", 4.0)
    assert worst < 0.001, worst             # SOC within 0.1 % (goal: 1 %)
    dv1, dbias, dsig = _final_states(a, b)
    assert dv1 < 0.0002 and dbias < 0.0002 and dsig <= 1, (dv1, dbias, dsig)


def test_nmc_fixed_point_tracks_the_float_filter():
    worst, a, b = _pair("NMC", 4.0)
    assert worst < 0.001, worst
    dv1, dbias, dsig = _final_states(a, b)
    assert dv1 < 0.0002 and dbias < 0.0002 and dsig <= 1, (dv1, dbias, dsig)
