# Heater modes, hysteresis, minimum on/off times, safety cut-offs, cold charge inhibit.
from bms.faults import R_HEAT
from bms.heater import DEMAND_MS, MIN_OFF_MS, MIN_ON_MS, WARM_HOLD_MS, Heater
from bms.params import (CHEM_LFP, HEATER_CHARGE, HEATER_DISCHARGE, HEATER_FORCED,
                        HEATER_KEEP, HEATER_OFF)
from soc_helpers import Snap, params

# LFP defaults: heat_on 0 degC, heat_off 8 degC, lt_chg 0, lt_chg_rec 5.


def _rig(mode, temp_c=-5):
    p = params(CHEM_LFP, cells=4, heater_mode=mode)
    sn = Snap(4, 3300, temp_c=temp_c)
    return p, sn, Heater(p)


def test_keep_mode_hysteresis():
    p, sn, h = _rig(HEATER_KEEP, -5)
    t = 0
    assert not h.step(sn.m, False, False, t)  # a demand must last DEMAND_MS
    t = DEMAND_MS
    assert h.step(sn.m, False, False, t)
    for c in (0, 3, 7):  # stays on below heat_off
        sn.set_temps(c)
        t += MIN_ON_MS
        assert h.step(sn.m, False, False, t), c
    sn.set_temps(8)
    t += 1000
    assert not h.step(sn.m, False, False, t)
    for c in (7, 3, 1):  # stays off above heat_on
        sn.set_temps(c)
        t += MIN_OFF_MS
        assert not h.step(sn.m, False, False, t), c
    sn.set_temps(-0.5)
    t += 1000
    h.step(sn.m, False, False, t)
    assert h.step(sn.m, False, False, t + DEMAND_MS)


def test_minimum_on_and_off_times_against_chatter():
    p, sn, h = _rig(HEATER_KEEP, -5)
    h.step(sn.m, False, False, 0)
    t = DEMAND_MS
    h.step(sn.m, False, False, t)
    assert h.on
    sn.set_temps(9)  # the NTC next to the heater warms at once
    t += 1000
    assert h.step(sn.m, False, False, t)  # held on
    t = DEMAND_MS + MIN_ON_MS
    assert not h.step(sn.m, False, False, t)
    sn.set_temps(-5)
    t += DEMAND_MS
    assert not h.step(sn.m, False, False, t)  # held off
    t += MIN_OFF_MS
    assert h.step(sn.m, False, False, t)
    # A temperature flicking across both thresholds every second for an
    # hour switches the relay at most once per minimum time.
    for k in range(3600):
        sn.set_temps(10 if k & 1 else -3)
        h.step(sn.m, False, False, t + k * 1000)
    assert h.switches <= 3 + 3600 * 1000 // MIN_ON_MS


def test_modes():
    for mode, chg, dsg, want in ((HEATER_OFF, True, True, False),
                                 (HEATER_CHARGE, True, False, True),
                                 (HEATER_CHARGE, False, True, False),
                                 (HEATER_DISCHARGE, False, True, True),
                                 (HEATER_DISCHARGE, True, False, False),
                                 (HEATER_KEEP, False, False, True)):
        p, sn, h = _rig(mode, -5)
        h.step(sn.m, chg, dsg, 0)
        assert h.step(sn.m, chg, dsg, DEMAND_MS) == want, (mode, chg, dsg)
    # A short demand (a precharge pulse, a brief load) does not start it.
    p, sn, h = _rig(HEATER_DISCHARGE, -5)
    h.step(sn.m, False, True, 0)
    assert not h.step(sn.m, False, False, 1000)
    assert not h.step(sn.m, False, True, 2000)
    assert not h.step(sn.m, False, True, 2000 + DEMAND_MS - 1)


def test_forced_heats_when_warm_but_guard_cuts():
    p, sn, h = _rig(HEATER_FORCED, 12)
    assert h.step(sn.m, False, False, 0)
    sn.set_temps(18)  # heat_off + 10
    assert not h.step(sn.m, False, False, 1000)  # guard: at once, no minimum time


def test_safety_switches_off_at_once():
    p, sn, h = _rig(HEATER_KEEP, -5)
    h.step(sn.m, False, False, -DEMAND_MS)
    h.step(sn.m, False, False, 0)
    assert h.on
    assert not h.step(sn.m, False, False, 1000, R_HEAT)
    p2, sn2, h2 = _rig(HEATER_KEEP, -5)
    h2.step(sn2.m, False, False, -DEMAND_MS)
    h2.step(sn2.m, False, False, 0)
    sn2.m.temp_status[2] = 1
    sn2.m.temp_status[3] = 1
    sn2.m.update_temp_stats()
    assert not h2.step(sn2.m, False, False, 1000)  # never heat blind
    p3, sn3, h3 = _rig(HEATER_DISCHARGE, -5)
    sn3.set_cells([2800, 3300, 3300, 3300])  # below uv_rec (2900): nearly empty
    assert not h3.step(sn3.m, False, True, 0)
    p.set(p_index("heater_mode"), HEATER_OFF)
    assert not h.step(sn.m, False, False, 2000)
    p.set(p_index("heater_mode"), HEATER_KEEP)
    assert not h.step(sn.m, False, False, 3000)  # minimum off time since 1000
    h.step(sn.m, False, False, 1000 + MIN_OFF_MS)
    assert h.step(sn.m, False, False, 3000 + MIN_OFF_MS + DEMAND_MS)


def p_index(name):
    from bms.params import index
    return index(name)


def test_cold_charge_inhibit_until_warm_and_heater_done():
    p, sn, h = _rig(HEATER_CHARGE, 3)
    h.step(sn.m, True, False, 0)
    assert not h.charge_inhibit  # 3 degC: above lt_chg, no inhibit yet
    sn.set_temps(-1)
    h.step(sn.m, True, False, 1000)
    assert h.charge_inhibit  # at once
    h.step(sn.m, True, False, 1000 + DEMAND_MS)
    assert h.on
    t = 1000
    for c in (2, 5, 6, 7):  # warm enough for the fault, but the heater still runs
        sn.set_temps(c)
        t += 20000
        h.step(sn.m, True, False, t)
        assert h.charge_inhibit, c
    sn.set_temps(8)
    t = max(t, MIN_ON_MS + 1000) + 1000
    h.step(sn.m, True, False, t)
    assert not h.on and h.charge_inhibit
    h.step(sn.m, True, False, t + WARM_HOLD_MS - 1000)
    assert h.charge_inhibit
    h.step(sn.m, True, False, t + WARM_HOLD_MS + 1000)
    assert not h.charge_inhibit


def test_heating_for_charging_can_always_end_the_cold_charge_inhibit():
    # bms/heater.py: mode 1 heats "while the cold charge inhibit is what
    # keeps the charger off, so the pack can warm up"; the inhibit releases
    # at or above lt_chg_rec with the heater off.  A heater that stops at
    # heat_off 3 degC below lt_chg_rec 5 degC never gets there: it cycled
    # between heat_on and heat_off for ever and the pack never charged.
    # Toy thermal model: +0.1 degC/s heating, -0.02 degC/s cooling (cold air).
    from bms.params import ParamError
    for heat_off, accepted in ((3, False), (8, True)):
        try:
            p = params(CHEM_LFP, cells=4, heater_mode=HEATER_CHARGE, heat_off=heat_off)
        except ParamError as e:
            assert not accepted and "heat_off" in e.reason, e.reason
            continue
        assert accepted, heat_off
        sn = Snap(4, 3300, temp_c=-5)
        h = Heater(p)
        dc = -50
        released = False
        for s in range(7200):
            sn.set_temps(dc / 10)
            h.step(sn.m, True, False, s * 1000)
            dc += 1 if h.on else (-1 if s % 5 == 0 else 0)
            if not h.charge_inhibit:
                released = True
                break
        assert released, heat_off


def test_minimum_times_hold_only_after_a_switch_not_a_week_later():
    # MIN_ON_MS / MIN_OFF_MS count from the last switch; tick differences
    # wrap after 2**29 ms (6.2 days), so a switch a week ago must not read
    # as recent (heater held off in the cold, or held on past heat_off).
    week = 7 * 24 * 3600 * 1000
    p, sn, h = _rig(HEATER_KEEP, -5)
    h.step(sn.m, False, False, 0)
    t = DEMAND_MS
    assert h.step(sn.m, False, False, t)
    sn.set_temps(9)
    t += MIN_ON_MS
    assert not h.step(sn.m, False, False, t)      # off at heat_off
    end = t + week
    while t < end:                                # warm for a week, the slow task stepping it
        t += 10000
        h.step(sn.m, False, False, t)
    sn.set_temps(-5)
    assert not h.step(sn.m, False, False, t)      # a demand must last DEMAND_MS
    t += DEMAND_MS
    assert h.step(sn.m, False, False, t)          # not held off by last week's switch
    end = t + week
    sn.set_temps(3)                               # on for a week, below heat_off
    while t < end:
        t += 10000
        assert h.step(sn.m, False, False, t)
    sn.set_temps(8)
    t += 1000
    assert not h.step(sn.m, False, False, t)      # off at heat_off, not held on
