"""The estimator never forms an integer outside the RP2040 small-int range.

On the board a MicroPython int outside -2**30 .. 2**30-1 is a heap-allocated
big int (and every float is heap-boxed): the slow task would allocate again.
The unix port is 64-bit, so its heap_lock test (host_tests/core/test_alloc.py)
cannot see this.  Here the real firmware modules (bms.fixmath, bms.ocv,
bms.soc) are recompiled with every arithmetic result range-checked
(host_tests/soc_intcheck.py) and run over the benchmark's LFP and NMC days
(the first 5 h here; all 24 h in `make bench`) and the scenario tests' situations; any out-of-range integer, or any
float computed in those modules inside the slow task, fails the test with
its file and line.
"""
import pytest

from bms import faults as F
from soc_intcheck import RangeError, checked_estimator, compile_checked, Checker
from tools.bench.soc_profile import Day
from tools.sim.simulator import Simulation

LIMIT = 1 << 30


def _coarse(sim, seconds, dt_ms=1000, until=None):
    for _ in range(int(seconds * 1000 // dt_ms)):
        sim.pack.step(dt_ms / 1000.0)
        sim.clock.advance(dt_ms)
        sim.bms.step()
        if until is not None and until(sim):
            return True
    return False


def test_checker_fails_on_a_big_int_and_on_a_float_in_the_slow_path():
    # The check must be able to fail: a naive fixed-point product of two
    # 2**29 operands is a big int on the board; the split helper is not.
    chk = Checker()
    m = compile_checked("def naive(a, b, s):\n    return (a * b) >> s\n", "naive", "naive.py", chk)
    assert m.naive(1 << 14, 1 << 14, 0) == 1 << 28
    with pytest.raises(RangeError):
        m.naive(1 << 29, 1 << 29, 30)
    with checked_estimator() as chk2:
        from bms import fixmath
        assert fixmath.mul(1 << 29, (1 << 29) - 1, 30) == (1 << 28) - 1
        with pytest.raises(RangeError, match="fixmath.py"):
            fixmath.mul(1 << 31, 1 << 29, 60)   # outside its contract: 2**30 partial product
        chk2.slow = True
        with pytest.raises(RangeError, match="float"):
            fixmath.div(0.5, 3, 0)
    m = compile_checked("def f(x):\n    x += 1\n    return -x\n", "f", "f.py", Checker())
    with pytest.raises(RangeError, match="f.py:2"):
        m.f((1 << 30) - 1)                    # the augmented assignment is checked too


def _day(chem, hours):
    with checked_estimator(deep=False) as chk:
        d = Day(chem, cells=8, soc_true=0.6, soc_bms=0.8, gain=1.01, offset_ma=50)
        d.run(hours=hours, sample_s=300)
        est = d.bms.soc.est_updates
    # Really instrumented and really estimating (one update a second).
    assert est > hours * 3600 - 100, est
    assert chk.ops > hours * 400 * 1000, chk.ops
    assert chk.peak < LIMIT
    return chk


# The benchmark day's first 5 h: rest, mixed load, rest and the CC part of the
# charge (plateau and knees).  `make bench` (soc area) runs the same check
# over both whole 24 h days and prints the peak; kept out of `make test` for time.
def test_lfp_day_stays_in_small_int_range():
    _day("LFP", 5.0)


def test_nmc_day_stays_in_small_int_range():
    _day("NMC", 5.0)


def test_boot_under_load_calibration_and_cold_stay_in_range():
    with checked_estimator() as chk:
        # Fresh boot straight into +-20 A on the LFP plateau.
        for cur in (20.0, -20.0):
            sim = Simulation("LFP", cells=16, soc=0.5, seed=1)
            _coarse(sim, 3)
            if cur > 0:
                sim.pack.charger_a = cur
            else:
                sim.pack.load_a = -cur
            _coarse(sim, 67)
            assert sim.bms.soc.est_updates > 60
        # The manual's calibration with the estimator running: discharge to
        # the UV cut-off, charge to the OV cut-off (capacity learning).
        sim = Simulation("LFP", cells=8, capacity_ah=20.0, soc=0.3, seed=2, bms_soc_pm=800,
                         spread=0.0)
        sim.pack.load_a = 40.0
        assert _coarse(sim, 2 * 3600, 1000, lambda s: s.bms.prot.active(F.UV1))
        _coarse(sim, 5)
        sim.pack.load_a = 0.0
        sim.pack.charger_a = 20.0
        assert _coarse(sim, 4 * 3600, 1000, lambda s: s.bms.prot.active(F.OV1))
        _coarse(sim, 5)
        soc = sim.bms.soc
        assert soc.cal_empty == 1 and soc.cal_full == 1 and soc.learned_mah
        # Cold: -15 degC cells under load on NMC (R0 and table error grow).
        sim = Simulation("NMC", cells=16, soc=0.7, seed=6)
        for k in range(len(sim.board.temp_override)):
            sim.board.temp_override[k] = -15.0
        sim.pack.load_a = 30.0
        _coarse(sim, 1800)
        sim.pack.load_a = 0.0
        _coarse(sim, 600)
        assert sim.bms.soc.est_updates > 2300
    assert chk.ops > 1000000
    assert chk.peak < LIMIT


def test_extreme_packs_currents_and_steps_stay_in_range():
    # The largest and smallest packs the parameters allow, at currents far
    # beyond their ratings, with 1 ms and 60 s (and longer) update gaps: the
    # saturating helpers must keep every intermediate small.
    from bms import params as P
    from soc_helpers import Snap, params
    with checked_estimator() as chk:
        from bms.soc import Soc
        for chem in range(4):
            for cap_dah, cur in ((10, 200000), (10, -200000), (65000, 1000000), (65000, -1000000),
                                 (1000, 0), (1000, 1000000)):
                p = params(chem, cells=16)
                p.set(P.P_CAPACITY, cap_dah)
                for restored in (False, True):
                    s = Soc(p, 500)
                    if restored:
                        s.set_pm(500)
                        # the state limits at their worst sign (with 5 V cells
                        # and a discharge: v - R0*I - v1 - bias at its largest)
                        s.v1 = s.bias = -(1 << 27)
                    for mv, t_c in ((1500, -40), (5000, 80), (3300, 25), (4200, 0), (65535, 25)):
                        sn = Snap(16, mv, temp_c=t_c, current_ma=cur)
                        now = 0
                        for dt in (1, 1, 1000, 60000, 3600000, 1000, 1):
                            now += dt
                            s.estimate(sn.m, now)
                            sn.m.current_ma = -sn.m.current_ma
                    s.calibrate_full()
                    s.calibrate_empty()
                    assert 0 <= s.soc_pm <= 1000
    assert chk.ops > 100000


def test_anchor_gate_lost_and_cold_paths_stay_in_range():
    # The issue-20 paths at the extremes: CV tails on the smallest and
    # largest packs (capacity learning over the span), a restored SOC far
    # from the reading at rest (lost: restart from the table), the plateau
    # gate with a long rest and a wide SOC prior, cold capacity at -40 degC.
    from bms import ocv
    from bms import params as P
    from soc_helpers import Snap, params
    with checked_estimator() as chk:
        from bms.soc import V_TAIL_MV, Soc
        for chem in range(4):
            for cap_dah in (10, 1000, 65000):
                p = params(chem, cells=16)
                p.set(P.P_CAPACITY, cap_dah)
                s = Soc(p, 500)
                s.calibrate_empty()
                tail = max(1, cap_dah * 100 // 40)   # C/40 of the rated capacity
                sn = Snap(16, V_TAIL_MV[chem] + 40, temp_c=-40, current_ma=tail)
                now = 0
                for _ in range(45):
                    now += 1000
                    s.integrate(sn.m.current_ma, 1000)
                    s.estimate(sn.m, now)
                assert s.cal_tail == 1 and 0 <= s.soc_pm <= 1000
                s.set_pm(100)
                sn = Snap(16, ocv.ocv_mv(chem, 800), temp_c=25, current_ma=0)
                for _ in range(2000):
                    now += 1000
                    s.estimate(sn.m, now)
                s.sd0 = 1 << 29
                for _ in range(2000):
                    now += 1000
                    s.estimate(sn.m, now)
                assert 0 <= s.soc_pm <= 1000
    assert chk.ops > 100000


def test_fixmath_intermediates_at_the_contract_limits():
    # Deep check of the helpers themselves: every intermediate of mul, div,
    # sqrt, hypot and exp_neg for operands at and between the contract
    # limits (|x| <= 2**30 - 1, shifts 0..62), so the 24 h runs above may
    # check the helpers at their boundary only.
    import random
    top = (1 << 30) - 1
    edges = [0, 1, 3, 0x7FFF, 0x8000, 0x8001, 0xFFFFF, 0x100000, (1 << 29) - 1, 1 << 29, top]
    edges += [-x for x in edges if x]
    rng = random.Random(9)
    rand = [rng.randrange(-top, top + 1) >> rng.randrange(30) for _ in range(60)]
    with checked_estimator(deep=True) as chk:
        from bms import fixmath as fm
        for a in edges + rand:
            for b in edges + rand[:20]:
                for s in (0, 1, 9, 14, 15, 16, 20, 24, 28, 29, 30, 31, 44, 62):
                    fm.mul(a, b, s)
                    if b:
                        fm.div(a, b, s)
                fm.hypot(a, b)
                fm.clamp(a, b if b > 0 else -b)
            if a >= 0:
                for q in range(0, 29, 2):
                    fm.sqrt(a, q)
                fm.isqrt(a)
                fm.exp_neg(a)
        for k in range(0, 1 << 30, 1 << 16):
            fm.exp_neg(k)
            fm.sqrt(k, 28)
    assert chk.ops > 1000000
    assert chk.peak <= top
