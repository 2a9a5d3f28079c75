"""Whole-system CAN scenarios: master core + 16 real slaves on the simulated bus."""
import os

import can
import cantools
import pytest

import tools
from bms import faults as F
from comms import can_ids as C
from comms import can_master as CM
from comms.can_master import CHECK_MS, MASTER_CELL_MS
from tools.sim.modular import build_modular
from tools.sim.pycan_bridge import SimBus

DBC = os.path.join(tools.ROOT, "docs", "bms_internal.dbc")
TIMEOUT = 2500            # module_timeout default (params)
FAST_MS = 50              # core fast task
# Documented bound (docs/can_internal.md): relays open at most
# module_timeout + CHECK_MS + one fast tick (+ main-loop tick) after the last frame.
BOUND_MS = TIMEOUT + CHECK_MS + FAST_MS + 30


@pytest.fixture(scope="module")
def db():
    return cantools.database.load_file(DBC)


def _closed(sim):
    r = sim.bms.contactors.state
    return r[0] == 1 and r[2] == 1          # discharge and charge


def _open(sim):
    r = sim.bms.contactors.state
    return r[0] == 0 and r[1] == 0 and r[2] == 0   # discharge, precharge, charge


def _comm(sim):
    return sim.bms.prot.active(F.COMM)


def _drop_sent(node, drop):
    """Frames ``node`` sends with ``drop(can_id, data)`` true never reach the bus."""
    plain = node.send

    def send(can_id, data, ext=False):
        if drop(can_id, data):
            return True
        return plain(can_id, data, ext)
    node.send = send


def _boot(**kw):
    sim = build_modular(slaves=16, cells=16, **kw)
    assert sim.run_until(_closed, 8), sim.sample()
    return sim


def test_16_slaves_256_cells_discovered():
    sim = build_modular(slaves=16, cells=16, chem="LFP")
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 16, 1.5)
    assert sim.t_ms <= (C.MAX_MODULES + 1) * C.SLOT_MS + CHECK_MS   # within the first sweep
    assert sim.run_until(_closed, 5)
    m = sim.bms.meas
    assert m.n_cells == 256 and m.bad_cells == 0
    assert sim.active_faults() == []
    # every cell in the snapshot is the right cell of the pack, and recent
    sim.run(3)   # past the step response of closing the relays (sampled at SYNC)
    true = sim.pack.cell_voltages()
    now = sim.clock.ticks_ms()
    for i in (0, 15, 16, 199, 255):
        assert abs(m.cell_mv[i] - true[i] * 1000) < 5, i
    ages = [(now - m.cell_ts[i]) & 0x3FFFFFFF for i in range(256)]
    # One sweep per second; the master's sync follows its own poll phase, so
    # allow one cell-task period of jitter on top of the sweep period.
    assert max(ages) <= C.SWEEP_MS + MASTER_CELL_MS, max(ages)
    # the MCP2515-sized RX buffers never overflowed: TDMA pacing holds
    assert sim.master_node.rx_overflow == 0
    assert all(n.rx_overflow == 0 for n in sim.nodes)


def test_unplugged_slave_comm_fault_then_recovery():
    sim = _boot()
    sim.run(2.3)
    t_u = sim.t_ms
    sim.unplug(7)
    assert sim.run_until(lambda s: s.bms.prot.active(F.COMM) and _open(s), 5)
    dt = sim.t_ms - t_u
    assert dt <= BOUND_MS, dt
    assert dt >= TIMEOUT - C.SWEEP_MS, dt      # not before the module can be late
    assert sim.module_states()[6] == "lost"
    assert [x for i, x in enumerate(sim.module_states()) if i != 6] == ["ok"] * 15
    sim.run(5)
    assert _open(sim) and sim.bms.prot.active(F.COMM)
    assert sim.bms.meas.bad_cells == 16
    assert all(sim.bms.meas.cell_ok[i] == 0 for i in range(96, 112))
    # plug back: recovery per the comm fault's rule (auto, 2 s clear delay)
    t_p = sim.t_ms
    sim.plug(7)
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 16, 2)
    t_ok = sim.t_ms
    assert t_ok - t_p <= C.SWEEP_MS + 16 * C.SLOT_MS + CHECK_MS + 10
    assert sim.run_until(lambda s: not s.bms.prot.active(F.COMM), 4)
    clear = sim.t_ms - t_ok
    # the core's debounce counts in fast ticks: the 2 s hold can end one tick early
    assert 2000 - FAST_MS <= clear <= 2000 + FAST_MS + CHECK_MS, clear
    assert sim.run_until(_closed, 5)
    assert sim.active_faults() == []


def test_over_voltage_on_cell_200_trips_the_pack():
    sim = _boot()
    sim.pack.cells[199].soc = 1.03            # LFP: about 3.84 V, above ov2 (3.75 V)
    t0 = sim.t_ms
    assert sim.run_until(lambda s: s.bms.prot.active(F.OV2), 5)
    dt = sim.t_ms - t0
    # data latency (next SYNC, module 13's slot, the core's 250 ms cell task),
    # then the 2 s level-2 delay and one fast tick
    latency = C.SWEEP_MS + 14 * C.SLOT_MS + 250
    assert dt <= latency + 2000 + FAST_MS, dt
    assert sim.bms.meas.max_idx == 199
    r = sim.bms.contactors.state
    assert r[3] == 0 and r[2] == 0            # level-2 and charge open
    # the slave's own hard limit (module 13, cell 8) also tripped: latched AFE fault
    assert sim.run_until(lambda s: s.bms.prot.active(F.AFE), 5)
    assert sim.master.mod_faults[12] & C.LF_OV
    assert sim.slaves[12].faults & C.LF_OV
    assert not any(sim.slaves[k].faults & C.LF_HARD for k in range(16) if k != 12)


def test_cantools_decodes_every_frame_on_the_bus(db):
    seen = {}
    bad = []
    sim = build_modular(slaves=16, cells=16, chem="NMC", soc=0.5, soc_spread=0.05,
                        params={"bal_mode": 1, "bal_start": 3500})

    def sniff(t_us, can_id, data, ext):
        try:
            msg = db.get_message_by_frame_id(can_id)
            d = msg.decode(data)
        except Exception as e:  # noqa: BLE001
            bad.append((can_id, data, e))
            return
        seen.setdefault(msg.name.split("_", 1)[-1] if msg.name.startswith("M") else msg.name,
                        []).append((msg.name, d))
    sim.bus.sniffers.append(sniff)
    sim.run(6)
    assert not bad, bad[:3]
    # Balancing runs duty-cycled (bleeders off for the quiet sweep of each
    # period), so the count at the last instant may be 0: check that it is
    # active and that cells have bled.
    b = sim.bms.balancer
    assert b.active and sum(b.on_count) > 0
    kinds = {k.split("_")[0] for k in seen}
    assert {"SYNC", "CONFIG", "STATUS", "CELLS", "TEMPS", "VERSION", "BAL"} <= kinds, kinds
    # decoded values agree with what the master assembled
    last = {}
    for name, d in [x for k, v in seen.items() if k.startswith("CELLS") for x in v]:
        last[name] = d
    d = last["M13_CELLS_1"]
    assert d["Cell08"] == sim.master.cell_mv[12 * 16 + 7]
    bal = [d for name, d in seen["BAL"] if d["Mask"]]
    assert bal and all(d["TimeoutMs"] == 3 * C.SWEEP_MS for d in bal)
    st = seen["STATUS"][-1][1]
    assert st["State"] == "run" and st["Cells"] == 16


def test_auto_addressing_16_modules_in_chain_order(db):
    names = []
    sim = build_modular(slaves=16, cells=16, auto_address=True)
    sim.bus.sniffers.append(lambda t, i, d, e: names.append(db.get_message_by_frame_id(i).name))
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 16, 10)
    assert [s.addr for s in sim.slaves] == list(range(1, 17))
    assert "ANNOUNCE" in names and "ASSIGN" in names
    sim.run(1)
    true = sim.pack.cell_voltages()
    assert abs(sim.bms.meas.cell_mv[200] - true[200] * 1000) < 5


def _replace_module(sim, addr, uid):
    """Module ``addr`` swapped for a new one (another uid, no address yet)."""
    sim.power(addr, False)
    assert sim.run_until(lambda s: s.module_states()[addr - 1] == "lost", 5)
    sim.slaves[addr - 1].uid = uid
    sim.power(addr, True)


def test_auto_addressing_gives_a_replaced_module_the_lost_ones_address():
    # docs/can_internal.md: the master answers an ANNOUNCE with a free address;
    # the address of a lost module is free for the module that replaces it.
    sim = build_modular(slaves=4, cells=16, auto_address=True)
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 4, 10)
    _replace_module(sim, 3, 0xC0FFEE000003)
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 4, 5)
    assert [s.addr for s in sim.slaves] == [1, 2, 3, 4]
    assert sim.master.uids[2] == 0xC0FFEE000003


def test_after_a_master_restart_a_new_module_never_gets_a_talking_modules_address():
    # The master's table of uids lives in RAM: after its restart the modules
    # keep their addresses while the table is empty.
    sim = build_modular(slaves=4, cells=16, auto_address=True)
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 4, 10)
    sim.master.uids = [0] * 4          # what a master restart leaves
    _replace_module(sim, 2, 0xC0FFEE000002)
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 4, 5)
    assert [s.addr for s in sim.slaves] == [1, 2, 3, 4]


def test_two_modules_at_one_address_open_the_relays_and_say_why():
    # docs/can_internal.md: two modules answering at one address (a spare left
    # at a taken address, a copied slave.json) mix their cells in the master's
    # view, and the cells of one of them go unwatched; the master treats that
    # address as bad (comm fault: relays open) and names the cause, until one
    # of them is gone.
    sim = _boot()
    k = sim.add_module(7, 0xC0FFEE000007)
    assert sim.run_until(lambda s: _comm(s) and _open(s), 6)
    assert sim.module_states()[6] == "bad"
    why = sim.master.mod_why[6]
    assert why & CM.W_DUP, why
    assert [x for i, x in enumerate(sim.module_states()) if i != 6] == ["ok"] * 15
    sim.run(3)
    assert _open(sim)
    sim.powered[k] = False                  # the spare taken off the bus
    sim.bus.unplug(sim.nodes[k])
    assert sim.run_until(lambda s: s.module_states() == ["ok"] * 16, 5)
    assert sim.run_until(lambda s: not _comm(s), 5)
    assert sim.run_until(_closed, 5)


def test_two_modules_at_one_address_whose_status_frames_merge_on_the_wire():
    # The same rule when both STATUS frames are bit for bit alike and sent
    # together: CAN makes one frame of them, the master sees one STATUS a
    # sweep; their cell frames differ (two packs of cells never read alike)
    # and each comes twice.
    sim = _boot()
    k = sim.add_module(7, 0xC0FFEE000007)
    # its STATUS merged with module 7's own
    _drop_sent(sim.nodes[k], lambda cid, data: cid == C.ID_STATUS + 6)
    assert sim.run_until(lambda s: _comm(s) and _open(s), 6)
    assert sim.master.mod_why[6] & CM.W_DUP


def test_a_module_losing_every_other_status_is_not_two_modules():
    # Its cell frames of a sweep without a STATUS are not taken (nothing asked
    # for them); they are no second copy of the last sweep's.
    sim = _boot()
    # lost on the way in every odd sweep
    _drop_sent(sim.nodes[4], lambda cid, data: cid == C.ID_STATUS + 4 and data[2] % 2)
    t0 = sim.t_ms
    while sim.t_ms - t0 < 8000:
        sim.run(0.1)
        assert not sim.master.mod_why[4] & CM.W_DUP, sim.t_ms
    assert not _comm(sim)


def test_one_repeated_status_frame_is_not_two_modules():
    # A CAN receiver can take a frame twice (an error in the last bit of its
    # end of frame makes the sender repeat it): one repeated STATUS is no
    # reason to open the relays.
    sim = _boot()
    m = sim.master
    orig = m._on_status
    twice = [3]

    def on_status(k, b, now):
        orig(k, b, now)
        if k == 4 and twice[0] > 0 and b[2] % 3 == 0:
            twice[0] -= 1
            orig(k, b, now)
    m._on_status = on_status
    t0 = sim.t_ms
    while sim.t_ms - t0 < 8000:
        sim.run(0.1)
        assert not _comm(sim), sim.t_ms
    assert twice[0] == 0


def test_python_can_sniffs_and_injects():
    sim = build_modular(slaves=4, cells=16)
    pc = SimBus(sim.bus)
    sim.run(1.5)
    got = list(iter(lambda: pc.recv(timeout=0), None))
    ids = {m.arbitration_id for m in got}
    assert C.ID_SYNC in ids and C.cells_id(4, 3) in ids and C.ID_STATUS + 3 in ids
    assert all(not m.is_extended_id and m.dlc in (2, 4, 8) for m in got)
    ts = [m.timestamp for m in got]
    assert ts == sorted(ts) and ts[-1] <= 1.5
    # inject a version request for module 3 and a junk extended frame
    pc.send(can.Message(arbitration_id=C.ID_REQUEST, data=[3, C.REQ_VERSION], is_extended_id=False))
    pc.send(can.Message(arbitration_id=0x1ABCDEF, data=[1, 2, 3], is_extended_id=True))
    sim.run(1.2)
    got = list(iter(lambda: pc.recv(timeout=0), None))
    assert C.ID_VERSION + 2 in {m.arbitration_id for m in got}
    assert sim.module_states() == ["ok"] * 4
    pc.shutdown()


def test_master_bus_off_restarts_with_back_off():
    sim = _boot()
    sim.bus.inject_errors(40, node=sim.master_node)
    assert sim.run_until(lambda s: s.master.guard.bus_off_count == 1, 3)
    assert sim.master_node.state() == 3 or sim.master.guard.restarts >= 1
    assert sim.run_until(lambda s: s.master.guard.restarts >= 1, 1)
    sim.run(6)
    assert sim.master.guard.bus_off_count == 1
    assert sim.module_states() == ["ok"] * 16
    assert sim.bus.error_frames == 40
    assert sim.run_until(_closed, 5)


def test_latched_faults_from_a_module_clear_only_on_reset():
    from bms.core import ACCEPTED, CMD_RESET_FAULTS
    sim = _boot()
    sim.pack.cells[199].soc = 1.03
    assert sim.run_until(lambda s: s.bms.prot.active(F.AFE) and s.bms.prot.active(F.OV2), 8)
    sim.pack.cells[199].soc = 0.5             # the cell is back in range
    sim.run(6)
    assert sim.master.hard_now == 0 and not sim.slaves[12].faults & C.LF_HARD
    assert sim.bms.prot.active(F.AFE) and sim.bms.prot.active(F.OV2)   # latched
    assert not _closed(sim)
    assert sim.bms.request(CMD_RESET_FAULTS) == ACCEPTED
    sim.run(0.2)
    assert not sim.bms.prot.active(F.AFE) and not sim.bms.prot.active(F.OV2)
    assert sim.run_until(_closed, 5)


# ---- the master's sleep (docs/can_internal.md, "The master's sleep") ------
def _sleep_cycle(sim, sleep_s, watch, before_wake=None):
    """CMD_SLEEP, ``sleep_s`` asleep, CMD_WAKE; ``watch(sim)`` at every 50 ms."""
    from bms.core import CMD_SLEEP, CMD_WAKE
    sim.bms.request(CMD_SLEEP, 1)
    for _ in range(int(sleep_s * 20)):
        sim.run(0.05)
        watch(sim)
    if before_wake is not None:
        before_wake(sim)
    sim.bms.request(CMD_WAKE, 1)
    sim.run(0.05)
    return sim.t_ms


def _boot4():
    sim = build_modular(slaves=4, cells=16)
    assert sim.run_until(_closed, 8), sim.sample()
    return sim


def test_a_sleeping_master_raises_no_fault_and_closes_only_on_data_from_after_the_wake():
    # The modules go silent because the master asked them to: no comm or
    # cell_stale fault, no alarm, while asleep.  Before, every sleep tripped
    # both (the buzzer sounding its protection alarm all through the sleep,
    # two fault records each way per sleep).  Waking, nothing closes before
    # every cell has a reading taken after the wake.
    sim = _boot4()
    sim.run(2)
    assert sim.active_faults() == []
    seen = set()

    def watch(s):
        seen.update(s.active_faults())
        assert not s.bms.buzzer.on
        assert _open(s) or s.t_ms - t0 < 200   # the sleep opens them at once

    t0 = sim.t_ms
    t_w = _sleep_cycle(sim, 40, watch)
    assert seen == set(), seen
    m = sim.bms.meas
    while not _closed(sim):
        assert sim.t_ms - t_w < 5000
        seen.update(sim.active_faults())
        sim.run(0.01)
    assert m.bad_cells == 0
    assert all(ticks_after(m.cell_ts[i], t_w) for i in range(m.n_cells))
    assert seen == set() and sim.active_faults() == [], seen


def test_a_module_that_does_not_wake_with_the_master_is_lost():
    sim = _boot4()
    sim.run(2)
    t_w = _sleep_cycle(sim, 10, lambda s: None, lambda s: s.unplug(3))   # never answers
    assert sim.run_until(lambda s: s.bms.prot.active(F.COMM), 5)
    assert sim.t_ms - t_w <= TIMEOUT + BOUND_MS, sim.t_ms - t_w
    assert sim.module_states()[2] == "lost"
    sim.run(3)
    assert _open(sim)


def ticks_after(t, t0):
    return ((t - t0) & 0x3FFFFFFF) < 0x20000000
