"""Inverter limits from the first second, and what "blocked" means on the wire.

Every check decodes the Pylontech frames with docs/inverter_pylon.dbc (cantools),
the way an inverter reads them:
- a healthy pack publishes non-zero CCL / DCL within 2 s of boot, also when the
  boot is a watchdog reset under load (no soft start from 0);
- every blocking state (each fault row whose reaction opens a path, the user
  switches, the key, sleep, the low-temperature charge inhibit, stale data)
  gives that direction limit 0 and a cleared request flag in 0x35C, while CVL
  and DVL stay real voltages (a Victron reads CVL 0 V as "no limit", a Deye
  reads 0.1 V as a communication fault) and CVL never exceeds cells x ov1;
- recovery from a fault ramps; it is not a jump back to full current.
"""
import itertools
import os

import can
import cantools
import pytest

from bms import faults as F
from bms.derating import RAMP_MS
from bms.params import P_CHG_SWITCH, P_DSG_SWITCH, P_KEY_ENABLE
from comms.inverter_can import InverterCan
from tools.sim.simulator import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = cantools.database.load_file(os.path.join(ROOT, "docs", "inverter_pylon.dbc"))
CELLS = 16
OV1_V, OV_REC_V, UV_REC_V, UV2_V = 3.65, 3.55, 2.90, 2.30   # LFP defaults, from docs/parameters.md
_chan = itertools.count()


class BusCan:
    """The firmware's CAN controller interface on a python-can bus."""

    def __init__(self, bus):
        self.bus = bus
        self.rx_id = 0
        self.rx_ext = False

    def send(self, can_id, data, ext=False):
        self.bus.send(can.Message(arbitration_id=can_id, data=bytes(data), is_extended_id=ext))
        return True

    def recv(self, buf):
        return -1

    def set_filters(self, filters):
        pass

    def state(self):
        return 0

    def restart(self):
        pass


class Listener:
    """The inverter: decodes every frame it hears with the DBC."""

    def __init__(self, channel):
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.log = []

    def listen(self, t_ms):
        while True:
            m = self.bus.recv(timeout=0)
            if m is None:
                return
            msg = DB.get_message_by_frame_id(m.arbitration_id)
            self.log.append((t_ms, msg.name, msg.decode(m.data, decode_choices=False)))

    def last(self, name):
        for _t, n, d in reversed(self.log):
            if n == name:
                return d
        return None


@pytest.fixture
def rig():
    ch = "invlim%d" % next(_chan)
    tx = can.Bus(interface="virtual", channel=ch)
    inv = Listener(ch)
    made = []

    def make(**kw):
        sim = Simulation(chem="LFP", cells=CELLS, capacity_ah=100.0, soc=0.6, **kw)
        link = InverterCan(BusCan(tx), sim.bms, sim.clock)

        def poller(s):
            link.poll()
            inv.listen(s.t_ms)
        sim.pollers.append(poller)
        made.append(sim)
        return sim, link, inv
    yield make
    inv.bus.shutdown()
    tx.shutdown()


def decode(link, now):
    """Build the frames now and decode them as an inverter would."""
    link.build(now)
    out = {}
    for i, fid in enumerate((0x351, 0x355, 0x356, 0x359, 0x35C)):
        msg = DB.get_message_by_frame_id(fid)
        out[msg.name] = msg.decode(bytes(link.frames[i]), decode_choices=False)
    return out


def assert_real_voltages(lim):
    assert 0 < CELLS * UV2_V <= lim["ChargeVoltageLimit"] <= CELLS * OV1_V + 1e-6
    assert abs(lim["ChargeVoltageLimit"] - CELLS * OV_REC_V) < 0.01
    assert abs(lim["DischargeVoltageLimit"] - CELLS * UV_REC_V) < 0.01


@pytest.mark.parametrize("load_a", [0.0, 60.0])
def test_limits_are_full_within_two_seconds_of_boot(rig, load_a):
    # load_a 60: the boot is a watchdog reset while the inverter draws 60 A.
    sim, link, inv = rig()
    sim.pack.load_a = load_a
    sim.run(2.0)
    lims = [(t, d) for t, n, d in inv.log if n == "BMS_Limits"]
    on = [(t, d) for t, d in lims if d["ChargeCurrentLimit"] > 0 and d["DischargeCurrentLimit"] > 0]
    assert on, lims
    t_on, d = on[0]
    assert t_on <= 2000
    # The first non-zero frame already carries the full limits (80 % of
    # chg_oc 100 A / dsg_oc 150 A): no soft start after a reset.
    assert d["ChargeCurrentLimit"] == 80.0 and d["DischargeCurrentLimit"] == 120.0
    assert_real_voltages(d)
    rq = inv.last("BMS_Request")
    assert rq["ChargeEnable"] == 1 and rq["DischargeEnable"] == 1
    # Before the first complete measurement nothing is promised.
    for t, d in lims:
        if t < t_on:
            assert d["ChargeCurrentLimit"] == 0 and d["DischargeCurrentLimit"] == 0


BLOCKING = [(i, row[0], row[8]) for i, row in enumerate(F.TABLE)
            if row[8] & (F.R_CHG | F.R_DSG | F.R_L2)]


def test_blocking_rows_exist():
    # The matrix below is not empty by accident.
    names = set(n for _i, n, _r in BLOCKING)
    assert {"ov1", "ov2", "uv1", "uv2", "short", "t_cell", "lt_chg"} <= names


@pytest.mark.parametrize("fid,name,reaction", BLOCKING, ids=[b[1] for b in BLOCKING])
def test_each_blocking_fault_on_the_wire(rig, fid, name, reaction):
    sim, link, inv = rig()
    sim.run(2.0)
    now = sim.clock.ticks_ms()
    sim.bms.prot.force(fid, now)
    d = decode(link, now)
    lim, rq, al = d["BMS_Limits"], d["BMS_Request"], d["BMS_Alarms"]
    chg_blocked = bool(reaction & (F.R_CHG | F.R_L2))
    dsg_blocked = bool(reaction & (F.R_DSG | F.R_L2))
    assert (lim["ChargeCurrentLimit"] == 0) == chg_blocked, (name, lim)
    assert (lim["DischargeCurrentLimit"] == 0) == dsg_blocked, (name, lim)
    assert rq["ChargeEnable"] == (0 if chg_blocked else 1), (name, rq)
    assert rq["DischargeEnable"] == (0 if dsg_blocked else 1), (name, rq)
    if chg_blocked:
        assert rq["ForceCharge1"] == rq["ForceCharge2"] == rq["FullChargeRequest"] == 0
    assert_real_voltages(lim)
    # The inverter sees why: at least one protection or warning bit.
    assert any(v for k, v in al.items() if k.startswith(("Prot", "Warn"))), (name, al)


def _switch_off(sim, idx):
    sim.params.set_many([(idx, 0)])


BLOCK_STATES = {
    "charge switch off": (lambda s: _switch_off(s, P_CHG_SWITCH), True, False),
    "discharge switch off": (lambda s: _switch_off(s, P_DSG_SWITCH), False, True),
    "key off": (lambda s: (s.params.set_many([(P_KEY_ENABLE, 1)]),
                           setattr(s.board, "key_on", False)), False, True),
    "sleep requested": (lambda s: setattr(s.bms, "sleep_requested", True), True, True),
    "cold charge inhibit": (lambda s: setattr(s.bms.heater, "charge_inhibit", True), True, False),
    # A slave firmware update holds charge and discharge open (docs/safety.md).
    "slave update inhibit": (lambda s: setattr(s.bms, "inhibit", F.R_CHG | F.R_DSG), True, True),
}


@pytest.mark.parametrize("state", sorted(BLOCK_STATES))
def test_each_blocking_state_on_the_wire(rig, state):
    sim, link, inv = rig()
    sim.run(2.0)
    act, chg_blocked, dsg_blocked = BLOCK_STATES[state]
    act(sim)
    d = decode(link, sim.clock.ticks_ms())
    lim, rq = d["BMS_Limits"], d["BMS_Request"]
    assert (lim["ChargeCurrentLimit"] == 0) == chg_blocked, lim
    assert (lim["DischargeCurrentLimit"] == 0) == dsg_blocked, lim
    assert rq["ChargeEnable"] == (0 if chg_blocked else 1)
    assert rq["DischargeEnable"] == (0 if dsg_blocked else 1)
    assert_real_voltages(lim)


def test_stale_data_blocks_both_and_keeps_voltages(rig):
    sim, link, inv = rig()
    sim.run(2.0)
    sim.board.afe_dead = True
    sim.run(4.0)
    lim, rq = inv.last("BMS_Limits"), inv.last("BMS_Request")
    assert lim["ChargeCurrentLimit"] == 0 and lim["DischargeCurrentLimit"] == 0
    assert rq["ChargeEnable"] == 0 and rq["DischargeEnable"] == 0
    assert_real_voltages(lim)


def test_recovery_after_a_fault_ramps(rig):
    sim, link, inv = rig()
    sim.run(2.0)
    sim.board.temp_override[2] = sim.board.temp_override[3] = 60.0   # above t_chg_ot 55
    assert sim.run_until(lambda s: s.bms.prot.active(F.T_CHG), 15)
    sim.run(1.0)
    assert inv.last("BMS_Limits")["ChargeCurrentLimit"] == 0
    sim.board.temp_override[2] = sim.board.temp_override[3] = 25.0
    assert sim.run_until(lambda s: not s.bms.prot.active(F.T_CHG), 20)
    sim.run(5.0)
    ccl = inv.last("BMS_Limits")["ChargeCurrentLimit"]
    assert 0 < ccl < 80.0 * 8000 / RAMP_MS + 0.2      # creeping up, not a jump
    assert inv.last("BMS_Request")["ChargeEnable"] == 1
    sim.run(RAMP_MS / 1000.0)
    assert inv.last("BMS_Limits")["ChargeCurrentLimit"] == 80.0


def test_a_direction_blocked_at_boot_is_published_at_once_when_allowed(rig):
    # Cold cells at boot: charge blocked (lt_chg), discharge published at once.
    # Once warm, the charge limit appears at once too (the first time it is
    # allowed), not after a minute's ramp: the boot is not a fault recovery.
    sim, link, inv = rig()
    sim.board.temp_override[2] = sim.board.temp_override[3] = -5.0
    sim.run(2.0)
    lim = inv.last("BMS_Limits")
    assert lim["ChargeCurrentLimit"] == 0 and lim["DischargeCurrentLimit"] > 0
    assert inv.last("BMS_Request")["ChargeEnable"] == 0
    sim.board.temp_override[2] = sim.board.temp_override[3] = 25.0
    assert sim.run_until(lambda s: s.bms.limits.ccl_ma > 0, 30)
    sim.run(1.5)
    assert inv.last("BMS_Limits")["ChargeCurrentLimit"] == 80.0
    # A fault after that is a fault event: its recovery ramps.
    sim.board.temp_override[2] = sim.board.temp_override[3] = -5.0
    assert sim.run_until(lambda s: s.bms.limits.ccl_ma == 0, 30)
    sim.board.temp_override[2] = sim.board.temp_override[3] = 25.0
    assert sim.run_until(lambda s: s.bms.limits.ccl_ma > 0, 30)
    sim.run(2.0)
    assert 0 < inv.last("BMS_Limits")["ChargeCurrentLimit"] < 80.0 * 5000 / RAMP_MS + 0.2
