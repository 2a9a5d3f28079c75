# Passive balancing rules: start/stop, modes, temperature, adjacency, duty cycle.
from bms.balancing import (PERIOD, ST_ACTIVE, ST_BLOCKED, ST_DISABLED, ST_HOT, ST_IDLE,
                           ST_WAIT, Balancer)
from bms.faults import R_BAL, R_CHG
from bms.params import CHEM_LFP
from soc_helpers import Snap, params

START = 3400  # LFP default balance start; bal_diff 20 mV


def _rig(mvs, current_ma=2000, adj=True, **over):
    p = params(CHEM_LFP, cells=len(mvs), **over)
    sn = Snap(len(mvs), 3300, current_ma=current_ma)
    sn.set_cells(mvs)
    return p, sn, Balancer(p, len(mvs), adj)


def _period(b, m, block=0):
    """One balancing period; returns the flags seen after each sweep."""
    seen = []
    for _ in range(PERIOD):
        b.step(m, block)
        seen.append(bytes(b.flags))
    return seen


def test_starts_only_above_start_voltage_and_difference():
    p, sn, b = _rig([3390, 3350] + [3340] * 6)  # below start
    _period(b, sn.m)
    assert b.state == ST_IDLE and b.count == 0
    sn.set_cells([3420, 3405] + [3400] * 6)  # above start, spread 20 = not > 20
    _period(b, sn.m)
    assert not b.active
    sn.set_cells([3430, 3405] + [3400] * 6)  # spread 30
    seen = _period(b, sn.m)
    assert b.active and b.state == ST_ACTIVE
    assert seen[0][0] == 1 and seen[0][1] == 0  # 3405 is within min + 10 mV


def test_stops_within_half_difference_with_hysteresis():
    p, sn, b = _rig([3430, 3400, 3400, 3400])
    _period(b, sn.m)
    assert b.active
    sn.set_cells([3415, 3400, 3400, 3400])  # 15 > 10: keeps going
    _period(b, sn.m)
    assert b.active
    sn.set_cells([3410, 3400, 3400, 3400])
    _period(b, sn.m)
    assert not b.active and b.count == 0


def test_charging_only_or_also_at_rest():
    p, sn, b = _rig([3450, 3400, 3400, 3400], current_ma=0)
    _period(b, sn.m)
    assert b.state == ST_WAIT and b.count == 0
    p2, sn2, b2 = _rig([3450, 3400, 3400, 3400], current_ma=0, bal_mode=1)
    _period(b2, sn2.m)
    assert b2.state == ST_ACTIVE
    sn2.m.current_ma = -5000  # discharging: never
    b2.step(sn2.m, 0)
    assert b2.state == ST_WAIT and sum(b2.flags) == 0


def test_disabled_and_blocked_stop_at_once():
    p, sn, b = _rig([3450, 3400, 3400, 3400])
    b.step(sn.m, 0)
    assert b.count == 1
    assert b.step(sn.m, R_BAL)  # flags changed: the board must be told now
    assert b.state == ST_BLOCKED and sum(b.flags) == 0
    b.step(sn.m, R_CHG)  # other reactions do not stop balancing
    assert b.count == 1
    p.set(p_index("bal_enable"), 0)
    assert b.step(sn.m, 0) is True
    assert b.state == ST_DISABLED and sum(b.flags) == 0
    assert b.step(sn.m, 0) is False  # nothing new to write
    sn.m.cell_ok[2] = 0
    sn.m.update_cell_stats()
    p.set(p_index("bal_enable"), 1)
    b.step(sn.m, 0)
    assert b.state == ST_BLOCKED


def test_never_bleeds_a_cell_at_or_below_uv_rec():
    # bms/balancing.py's rule: no cell at or below uv_rec is bled.  bal_start
    # may be set anywhere above uv1 (2500 mV for LFP), so a pack resting at
    # 2.6-2.7 V would otherwise bleed its low cells further towards uv1.
    p, sn, b = _rig([2700, 2650, 2620, 2580], current_ma=0, bal_mode=1, bal_start=2600)
    seen = _period(b, sn.m)
    assert all(f == 0 for fl in seen for f in fl)
    sn.set_cells([2950, 2650, 2620, 2580])  # only the cell above uv_rec (2900)
    _period(b, sn.m)
    seen = _period(b, sn.m)
    assert seen[0][0] == 1 and not any(seen[0][1:])


def p_index(name):
    from bms.params import index
    return index(name)


def test_stops_on_balance_resistor_temperature_with_hysteresis():
    p, sn, b = _rig([3450, 3400, 3400, 3400])  # t_bal_rec 65 degC
    sn.set_temps(25, bal_c=64)
    b.step(sn.m, 0)
    assert b.count == 1
    sn.set_temps(25, bal_c=65)
    b.step(sn.m, 0)
    assert b.state == ST_HOT and sum(b.flags) == 0
    sn.set_temps(25, bal_c=61)
    _period(b, sn.m)
    assert b.state == ST_HOT
    sn.set_temps(25, bal_c=59)
    _period(b, sn.m)
    assert b.state == ST_ACTIVE


def test_never_two_adjacent_cells_and_lone_cells_every_period():
    mvs = [3450, 3450, 3450, 3400, 3450, 3400, 3400, 3450]
    p, sn, b = _rig(mvs)
    served = [0] * 8
    for _ in range(6):
        for f in _period(b, sn.m):
            for i in range(7):
                assert not (f[i] and f[i + 1]), f
            for i in range(8):
                served[i] += f[i]
    # Every high cell bleeds in some period; the lone cells 5 and 8 in every period.
    for i in (0, 1, 2, 4, 7):
        assert served[i] > 0, served
    assert served[4] == served[7] == 6 * (PERIOD - 1)
    # Without the AFE restriction all high cells bleed together.
    p, sn, b = _rig(mvs, adj=False)
    f = _period(b, sn.m)[0]
    assert list(f) == [1, 1, 1, 0, 1, 0, 0, 1]


def test_duty_cycle_quiet_sweep_decides():
    p, sn, b = _rig([3450, 3400, 3400, 3400])
    seen = _period(b, sn.m)
    assert [s[0] for s in seen] == [1, 1, 1, 0]  # off in the last interval
    b.step(sn.m, 0)
    assert b.quiet and b.flags[0] == 1  # quiet sweep: decided, bleeding again
    # Readings taken while bleeding (the cell sags) do not change the choice.
    sn.set_cells([3405, 3400, 3400, 3400])
    b.step(sn.m, 0)
    assert not b.quiet and b.flags[0] == 1
    b.step(sn.m, 0)
    assert b.flags[0] == 1
    b.step(sn.m, 0)
    assert b.flags[0] == 0  # off ahead of the quiet sweep
    b.step(sn.m, 0)
    assert b.quiet and not b.active  # the quiet reading ends it


def test_bleed_time_per_cell():
    p, sn, b = _rig([3450, 3400, 3400, 3450])
    for _ in range(10):
        _period(b, sn.m)
    assert b.on_count[0] > 0 and b.on_count[1] == 0
    assert b.bleed_s(0) == b.on_count[0] * 250 // 1000
