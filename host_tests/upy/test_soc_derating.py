# Derating curves and ramped recovery of the charge/discharge limits.
from bms.derating import RAMP_MS, Derating, ramp_pm
from bms.params import CHEM_LFP, CHEM_NMC
from soc_helpers import Snap, params

# LFP defaults: chg_oc 100 A, dsg_oc 150 A -> base CCL 80 A, DCL 120 A.


def _rig(chem=CHEM_LFP, mv=3300, temp_c=25):
    p = params(chem, cells=16)
    return p, Snap(16, mv, temp_c=temp_c), Derating(p)


def _settle(d, m, soc, t0=0, chg=True, dsg=True):
    t = t0
    for _ in range(200):
        d.step(m, soc, chg, dsg, t)
        t += 1000
    return t


def test_ramp_pm():
    assert ramp_pm(5, 0, 0, 10, 1000) == 500
    assert ramp_pm(-1, 0, 0, 10, 1000) == 0 and ramp_pm(11, 0, 0, 10, 1000) == 1000
    assert ramp_pm(5, 10, 1000, 0, 100) == 550  # falling direction


def test_full_limits_in_the_comfort_zone():
    p, sn, d = _rig()
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 80000 and d.dcl_ma == 120000
    assert d.ccl_da == 800 and d.dcl_da == 1200
    assert d.cvl_mv == 16 * 3550 and d.dvl_mv == 16 * 2900
    assert d.charge_enable and d.discharge_enable


def test_temperature_derating():
    p, sn, d = _rig(temp_c=4)  # below lt_chg_rec 5 degC: no charging
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 0 and not d.charge_enable
    sn.set_temps(12.5)  # halfway 5 -> 20 degC: 10 % + 90 % / 2
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 80000 * 550 // 1000
    sn.set_temps(50)  # charge OT 55: -10 degC starts the ramp -> 50 %
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 40000
    sn.set_temps(-10)  # discharge: lt_dsg_rec -15 -> 20 % ... 100 % at 0 degC
    _settle(d, sn.m, 500)
    assert d.dcl_ma == 120000 * (200 + 800 * 5 // 15) // 1000


def test_voltage_and_soc_derating():
    p, sn, d = _rig()
    sn.set_cells([3550] + [3400] * 15)  # ov1 3650, knee 200 mV: 50 %
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 40000
    sn.set_cells([2600] + [3300] * 15)  # uv1 2500 + 200 knee: 50 %
    _settle(d, sn.m, 500)
    assert d.dcl_ma == 60000
    sn.set_cells([3300] * 16)
    _settle(d, sn.m, 975)  # 95 % -> 100 %: 1000 -> 200
    assert d.ccl_ma == 80000 * 600 // 1000
    _settle(d, sn.m, 50)
    assert d.dcl_ma == 120000 * 550 // 1000


def test_falls_at_once_recovers_on_a_ramp():
    p, sn, d = _rig()
    t = _settle(d, sn.m, 500)
    d.step(sn.m, 500, False, True, t)  # a fault opens the charge path
    assert d.ccl_ma == 0 and d.dcl_ma == 120000
    t += 1000
    d.step(sn.m, 500, True, True, t)
    assert 0 < d.ccl_ma <= 80000 * 1000 // RAMP_MS + 1
    half = t + RAMP_MS // 2
    while t < half:
        t += 1000
        d.step(sn.m, 500, True, True, t)
    assert abs(d.ccl_ma - 40000) <= 80000 * 1000 // RAMP_MS + 1
    t = _settle(d, sn.m, 500, t)
    assert d.ccl_ma == 80000
    # A voltage that hovers at a breakpoint cannot bang the limit between
    # full and zero: it drops once, then creeps.
    lo = [3640] + [3400] * 15
    hi = [3400] * 16
    seen = []
    for k in range(120):
        sn.set_cells(lo if k % 2 else hi)
        t += 1000
        d.step(sn.m, 500, True, True, t)
        seen.append(d.ccl_ma)
    assert max(seen[10:]) < 80000 // 10


def test_nmc_uses_its_own_thresholds():
    p, sn, d = _rig(CHEM_NMC, mv=3700)
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 80000
    sn.set_cells([4125] + [3700] * 15)  # ov1 4200, knee 150: 50 %
    _settle(d, sn.m, 500)
    assert d.ccl_ma == 40000
    assert d.cvl_mv == 16 * 4100
