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
    assert len(a.log) == len(b.log) >= hours * 60
    worst = max(abs(x[1] - y[1]) for x, y in zip(a.log, b.log))
    return worst, a, b


def _final_states(a, b):
    xs = a.bms.soc
    fs = b.bms.soc
    return (abs(xs.v1_v - fs.v1), abs(xs.bias_v - fs.bias),
            abs(xs.sigma_pm - math.sqrt(fs.p00) * 1000.0))


def test_lfp_fixed_point_tracks_the_float_filter():
    worst, a, b = _pair("LFP", 2.5)
    assert worst < 0.001, worst             # SOC within 0.1 % (goal: 1 %)
    dv1, dbias, dsig = _final_states(a, b)
    assert dv1 < 0.0002 and dbias < 0.0002 and dsig <= 1, (dv1, dbias, dsig)


def test_nmc_fixed_point_tracks_the_float_filter():
    worst, a, b = _pair("NMC", 2.5)
    assert worst < 0.001, worst
    dv1, dbias, dsig = _final_states(a, b)
    assert dv1 < 0.0002 and dbias < 0.0002 and dsig <= 1, (dv1, dbias, dsig)


def test_snapshot_situations_match_the_float_filter():
    # Restored state, and a fresh boot at rest; rest and load, cold (the
    # table-error prior grows to 6.5x at -40 degC), hot, cells above the
    # table top while charging: every state of the two filters agrees after
    # 30 min of alternating load and rest.
    from bms import ocv
    from bms.params import CHEM_LFP, CHEM_NMC
    from bms.soc import Soc
    from soc_helpers import Snap, params
    cases = []
    for chem in (CHEM_LFP, CHEM_NMC):
        for t_c in (-40, -10, 25, 55):
            for cur, dmv in ((0, 0), (-30000, -25), (30000, 25)):
                cases.append((chem, t_c, cur, dmv, 600))
    cases.append((CHEM_NMC, 25, 100000, 4300 - ocv.ocv_mv(CHEM_NMC, 500), 500))
    n = 0
    for chem, t_c, cur, dmv, start in cases:
        for restored in (False, True):
            if not restored and cur:
                continue    # a fresh boot under load: see the next test
            p = params(chem, cells=16)
            a = Soc(p, start)
            b = FloatSoc(p, start)
            if restored:
                a.set_pm(start)
                b.set_pm(start)
            mv = ocv.ocv_mv(chem, 500, t_c * 10) + dmv
            sn = Snap(16, mv, temp_c=t_c, current_ma=cur)
            for k in range(1800):
                sn.m.current_ma = cur if (k // 300) % 2 == 0 else 0
                a.integrate(sn.m.current_ma, 1000)
                b.integrate(sn.m.current_ma, 1000)
                a.estimate(sn.m, k * 1000)
                b.estimate(sn.m, k * 1000)
            what = (chem, t_c, cur, dmv, restored)
            assert abs(a.soc_frac() - b.soc_frac()) < 0.001, (what, a.soc_frac(), b.soc_frac())
            assert abs(a.sd2 / 1.28e8 - math.sqrt(b.p22)) < 2e-5 + 0.015 * math.sqrt(b.p22), what
            assert abs(a.sd1 / 1.28e8 - math.sqrt(b.p11)) < 2e-5 + 0.015 * math.sqrt(b.p11), what
            assert abs(a.sigma_pm - math.sqrt(b.p00) * 1000.0) <= 1.0, (what, a.sigma_pm, b.p00)
            # Table-error state within a quarter of its prior std (1 mV when that was 4 mV).
            from tools.sim.soc_float import SIG_BIAS_V
            tol_b = 0.25 * SIG_BIAS_V[chem]
            assert abs(a.v1_v - b.v1) < 1e-4 and abs(a.bias_v - b.bias) < tol_b, (what, a.bias_v, b.bias)
            assert abs(a.r0_ohm(25.0) - b.r0_ohm(25.0)) < 1e-6 + 1e-3 * b.r0_ohm(25.0), what
            n += 1
    assert n == 33


def test_reboot_under_load_differs_only_by_the_sigma_limit():
    # A reboot without stored state while 20-60 A flow: the flat-prior
    # update's SOC uncertainty is (sd_v1 + sd_bias + noise) / slope, which
    # on the LFP plateau under load is several 100 %.  The fixed-point
    # filter limits it to 50 % (no SOC spreads wider than 0..100 %); the
    # float filter did not.  That is the one intended difference: SOC
    # then differs by < 2.5 % for minutes and the fixed filter's error is
    # never the larger one by more than 0.2 %.
    import math as m_
    from bms.soc import Soc
    from test_soc_scenarios import coarse
    from tools.sim.simulator import Simulation
    for chem, cur in (("LFP", 60.0), ("LFP", -20.0), ("NMC", -60.0)):
        res = []
        sig = []
        for ref in (False, True):
            sim = Simulation(chem, cells=16, soc=0.5, seed=1)
            coarse(sim, 3)
            if cur > 0:
                sim.pack.charger_a = cur
            else:
                sim.pack.load_a = -cur
            coarse(sim, 10)
            sim.bms.soc = (FloatSoc if ref else Soc)(sim.params, 800)
            coarse(sim, 2)
            s = sim.bms.soc
            sig.append(m_.sqrt(s.p00) * 1000.0 if ref else s.sigma_pm)
            errs = []
            for _ in range(20):
                coarse(sim, 60)
                errs.append(s.soc_frac() - sim.pack.true_soc())
            res.append(errs)
        assert sig[0] == 500 and sig[1] > 500, (chem, cur, sig)
        assert max(abs(x - y) for x, y in zip(*res)) < 0.025, (chem, cur)
        assert max(map(abs, res[0])) <= max(map(abs, res[1])) + 0.002, (chem, cur)
