"""Master discovery, auto-addressing along the chain, layout and snapshot."""
from bms.measurements import Measurements, ROLE_CELL
from can_helpers import Rig, raw_frames
from comms import can_ids as C
from comms.can_master import CHECK_MS, MS_ABSENT, MS_BAD, MS_OK, W_COUNT, CanMaster, layout


def test_layout():
    assert layout(256, 16) == (16, 16)
    assert layout(250, 16) == (16, 10)
    assert layout(48, 12) == (4, 12)
    assert layout(257, 16) is None
    assert layout(20, 0) is None
    assert layout(100, 5) is None   # 20 modules


def test_fixed_addresses_discovered_in_one_sweep():
    r = Rig(n=4)
    assert r.states() == [MS_ABSENT] * 4 and r.master.comm_fault
    t = r.run_until(lambda: r.states() == [MS_OK] * 4, 2000)
    # slot 4 ends 5 slots after the first SYNC, seen at the next health check
    assert 0 <= t <= 5 * C.SLOT_MS + CHECK_MS, t
    r.run(50)
    assert not r.master.comm_fault
    r.run(1000)
    # every module got its CONFIG at the next sweep and told its version
    for k in range(4):
        assert len(raw_frames(r.mnode, C.ID_CONFIG + k)) == 1
        assert r.master.mod_version[4 * k + 3] == C.PROTO_VERSION


def test_snapshot_cells_and_timestamps():
    r = Rig(n=3, cells=16)
    r.afes[1].mv[5] = 3555            # module 2, cell 6 -> pack cell 22 (index 21)
    r.run(1100)
    m = Measurements(256, (ROLE_CELL,) * 9)
    m.set_cell_count(48)
    now = r.clock.ticks_ms()
    r.master.fill_cells(m, now)
    assert m.cell_mv[21] == 3555
    assert m.cell_mv[0] == 3300 and m.cell_mv[16] == 3301 and m.cell_mv[47] == 3302
    assert sum(m.cell_ok[:48]) == 48
    for i in range(48):
        age = (now - m.cell_ts[i]) & 0x3FFFFFFF
        assert age < 1000, (i, age)
    r.master.fill_temps(m, 0, 3)
    assert list(m.temp_dc) == [250] * 9 and list(m.temp_status) == [0] * 9


def test_auto_addressing_follows_the_chain_not_the_uid():
    # uids in descending order: only the chain can produce 1, 2, 3
    r = Rig(n=3, auto=True, uids=[0x300, 0x200, 0x100])
    t = r.run_until(lambda: r.states() == [MS_OK] * 3, 5000)
    assert t >= 0
    assert [s.addr for s in r.slaves] == [1, 2, 3]
    assert r.master.uids == [0x300, 0x200, 0x100]
    # module 2's cells are at pack cells 17..32
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)
    r.master.fill_cells(m, r.clock.ticks_ms())
    assert m.cell_mv[16] == 3301


def test_auto_addressing_after_a_week_without_a_master():
    # Unaddressed modules powered a week before the master (commissioning,
    # a master off for service): they announce once it is there.  The last
    # announce is a tick stamp: a week later (tick differences wrap after
    # 2**29 ms, 6.2 days) it must not read as recent and hold them silent.
    r = Rig(n=3, auto=True, uids=[0x300, 0x200, 0x100])
    for _ in range(7 * 24 * 30):           # a week, 2 min a step, no master
        r.clock.advance(120000)
        now = r.clock.ticks_ms()
        for s in r.slaves:
            s.step(now)
    assert all(s.sleeping for s in r.slaves)
    r.master = CanMaster(r.mnode, 3, now=r.clock.ticks_ms())   # the master boots
    r.master.configure(48, 16, 2500)
    t = r.run_until(lambda: r.states() == [MS_OK] * 3, 5000)
    assert t >= 0
    assert [s.addr for s in r.slaves] == [1, 2, 3]

def test_rebooted_auto_slave_gets_its_old_address():
    r = Rig(n=3, auto=True, uids=[0x300, 0x200, 0x100])
    r.run_until(lambda: r.states() == [MS_OK] * 3, 5000)
    s = r.slaves[1]
    s.addr = 0                 # as after a power cycle
    s._set_filters()
    r.run(1500)
    assert s.addr == 2


def test_wrong_cell_count_is_inconsistent_until_configured():
    r = Rig(n=2, cells=16)
    r.slaves[1].locked = True
    r.slaves[1].cells = 12     # set on the module, locked there
    r.run(1500)
    assert r.states() == [MS_OK, MS_BAD]
    assert r.master.mod_why[1] & W_COUNT
    assert r.master.comm_fault
    # unlocked: the master's CONFIG sets it, the module becomes consistent
    r.slaves[1].locked = False
    r.run(6000)
    assert r.slaves[1].cells == 16
    assert r.states() == [MS_OK, MS_OK] and not r.master.comm_fault


def test_balance_flags_reach_the_right_module():
    r = Rig(n=3, cells=16)
    r.run(1100)
    flags = bytearray(48)
    flags[16 + 3] = 1
    flags[47] = 1
    r.master.set_balance(flags)
    r.run(1000)
    assert r.afes[0].mask == 0
    assert r.afes[1].mask == 1 << 3
    assert r.afes[2].mask == 1 << 15
    r.master.set_balance(bytearray(48))
    r.run(1000)
    assert r.afes[1].mask == 0 and r.afes[2].mask == 0


def test_layout_change_needing_other_module_count_is_a_fault():
    r = Rig(n=2, cells=16)
    r.run(1100)
    assert not r.master.comm_fault
    assert not r.master.configure(48, 16, 2500)   # would need 3 modules: restart first
    r.run(100)
    assert r.master.comm_fault


def test_master_rejects_impossible_schedule():
    from can_helpers import LoopBus, LoopNode
    try:
        CanMaster(LoopNode(LoopBus()), 16, slot=80)
    except ValueError:
        return
    raise AssertionError("17 slots of 80 ms cannot fit a 1 s sweep")


def test_new_limits_reach_every_module_while_all_balance():
    # docs/can_internal.md "Second line of defence on the slave": each module's
    # hard limits are ov2 + 50 mV, uv2 - 100 mV, t_cell_ot + 5 degC, sent by
    # the master in CONFIG.  A change of those parameters must reach all 16
    # modules, also while all of them balance (16 BAL frames every sweep).
    r = Rig(n=16, cells=16)
    assert r.run_until(lambda: r.states() == [MS_OK] * 16, 3000) >= 0
    r.run(1000)
    flags = bytearray(256)
    for i in range(0, 256, 2):
        flags[i] = 1
    r.master.set_balance(flags)
    r.run(2000)
    assert all(a.mask for a in r.afes)
    assert r.master.configure(256, 16, 2500, ov_mv=3700, uv_mv=2400, ot_c=55)
    r.run(3000)
    assert [s.ov_mv for s in r.slaves] == [3700] * 16
    assert [s.uv_mv for s in r.slaves] == [2400] * 16
    assert [s.ot_dc for s in r.slaves] == [550] * 16


def test_limits_lost_at_a_module_reach_it_within_a_refresh_period():
    # docs/can_internal.md "Second line of defence on the slave": the module's
    # hard limits come from the master's CONFIG.  STATUS does not echo them,
    # so a CONFIG lost at the module (receive buffer full, a controller
    # restart) must not leave it on old limits for good: the master sends
    # every module's CONFIG again within 30 sweeps.
    r = Rig(n=3, cells=16)
    assert r.run_until(lambda: r.states() == [MS_OK] * 3, 3000) >= 0
    assert r.master.configure(48, 16, 2500, ov_mv=3750, uv_mv=2450, ot_c=60)
    r.run(3000)       # every module on these (not on its defaults any more)
    assert [s.ov_mv for s in r.slaves] == [3750] * 3
    node = r.snodes[1]
    real = node.deliver
    lost = []

    def deaf_to_config(can_id, data, ext):
        if can_id == C.ID_CONFIG + 1 and not lost:
            lost.append(can_id)        # this one frame never arrives
            return
        real(can_id, data, ext)
    node.deliver = deaf_to_config
    assert r.master.configure(48, 16, 2500, ov_mv=3700, uv_mv=2400, ot_c=55)
    r.run(3000)
    assert lost and r.slaves[1].ov_mv == 3750     # the module kept its old limits
    assert r.slaves[0].ov_mv == 3700 and r.slaves[2].ov_mv == 3700
    assert r.run_until(lambda: r.slaves[1].ov_mv == 3700, 31000) >= 0
    assert r.slaves[1].uv_mv == 2400 and r.slaves[1].ot_dc == 550
    assert r.states() == [MS_OK] * 3
