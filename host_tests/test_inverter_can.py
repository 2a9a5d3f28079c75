"""Inverter CAN against real third-party tools: python-can carries the frames
(virtual bus), cantools decodes them with the published DBC, and the values
are compared with the simulated pack and the firmware's own snapshot.
"""
import os
import itertools

import can
import cantools

from bms import faults as F
from bms.derating import RAMP_MS
from comms.inverter_can import InverterCan
from tools.sim.simulator import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = cantools.database.load_file(os.path.join(ROOT, "docs", "inverter_pylon.dbc"))
_chan = itertools.count()


class PyCanController:
    """The firmware's CAN controller interface on a python-can bus."""

    def __init__(self, bus):
        self.bus = bus
        self.rx_id = 0
        self.rx_ext = False
        self.tec = self.rec = self.rx_overflow = 0

    def send(self, can_id, data, ext=False):
        self.bus.send(can.Message(arbitration_id=can_id, data=bytes(data),
                                  is_extended_id=ext))
        return True

    def recv(self, buf):
        m = self.bus.recv(timeout=0)
        if m is None:
            return -1
        buf[:len(m.data)] = m.data
        self.rx_id = m.arbitration_id
        self.rx_ext = m.is_extended_id
        return m.dlc

    def set_filters(self, filters):
        self.bus.set_filters([{"can_id": i, "can_mask": m, "extended": e}
                              for i, m, e in filters])

    def state(self):
        return 0

    def restart(self):
        pass


class Inverter:
    """The inverter's side: a python-can bus that decodes what it hears."""

    def __init__(self, channel):
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.log = []  # (t_ms, message name, decoded dict)

    def listen(self, t_ms):
        while True:
            m = self.bus.recv(timeout=0)
            if m is None:
                return
            msg = DB.get_message_by_frame_id(m.arbitration_id)
            assert m.dlc == msg.length
            self.log.append((t_ms, msg.name, msg.decode(m.data, decode_choices=False)))

    def keepalive(self):
        self.bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))

    def last(self, name):
        for t, n, d in reversed(self.log):
            if n == name:
                return d
        return None

    def close(self):
        self.bus.shutdown()


def setup(**kw):
    ch = "inv%d" % next(_chan)
    bms_bus = can.Bus(interface="virtual", channel=ch)
    inverter = Inverter(ch)
    sim = Simulation(chem="LFP", cells=16, capacity_ah=100.0, soc=0.6, **kw)
    link = InverterCan(PyCanController(bms_bus), sim.bms, sim.clock)

    def poller(s):
        link.poll()
        n = len(inverter.log)
        inverter.listen(s.t_ms)
        if len(inverter.log) > n:
            # The firmware's snapshot the frames of this poll were built from.
            m = s.bms.meas
            lim = s.bms.limits
            inverter.snap = (m.pack_mv, m.current_ma, m.tmax[2], s.bms.soc.soc_pm,
                             lim.ccl_ma, lim.dcl_ma)
    sim.pollers.append(poller)
    return sim, link, inverter, bms_bus


def teardown(inverter, bms_bus):
    inverter.close()
    bms_bus.shutdown()


def test_every_frame_decodes_and_matches_the_sim():
    sim, link, inv, bus = setup()
    try:
        sim.pack.charger_a = 20.0  # a charger pushing 20 A
        sim.run(5)
        names = set(n for _t, n, _d in inv.log)
        assert names == {"BMS_Limits", "BMS_SocSoh", "BMS_Actual", "BMS_Alarms",
                         "BMS_Request", "BMS_Name"}
        pack_mv, current_ma, tmax_dc, soc_pm, ccl_ma, dcl_ma = inv.snap
        a = inv.last("BMS_Actual")
        assert abs(a["Voltage"] - pack_mv / 1000.0) < 0.011
        assert abs(a["Voltage"] - sim.pack.pack_voltage()) < 0.1
        assert abs(a["Current"] - current_ma / 1000.0) < 0.11
        assert abs(a["Current"] - 20.0) < 0.3
        assert abs(a["Temperature"] - tmax_dc / 10.0) < 0.051
        s = inv.last("BMS_SocSoh")
        assert abs(s["SOC"] - soc_pm / 10.0) <= 1
        assert abs(s["SOC"] - sim.pack.true_soc() * 100) <= 2
        assert s["SOH"] == 100
        lim = inv.last("BMS_Limits")
        # CVL/DVL = cells x ov_rec / uv_rec.  CCL/DCL are the full limits
        # from the first complete measurement on (80 % of chg_oc 100 A /
        # dsg_oc 150 A; no soft start after boot), in 0.1 A.
        assert abs(lim["ChargeVoltageLimit"] - 16 * 3.55) < 0.01
        assert abs(lim["DischargeVoltageLimit"] - 16 * 2.90) < 0.01
        assert ccl_ma == 80000 and dcl_ma == 120000
        assert abs(lim["ChargeCurrentLimit"] - ccl_ma // 100 / 10.0) < 0.001
        assert abs(lim["DischargeCurrentLimit"] - dcl_ma // 100 / 10.0) < 0.001
        al = inv.last("BMS_Alarms")
        assert all(v == 0 for k, v in al.items() if k.startswith(("Prot", "Warn")))
        assert (al["ModuleCount"], al["MarkerP"], al["MarkerN"]) == (1, ord("P"), ord("N"))
        rq = inv.last("BMS_Request")
        assert rq["ChargeEnable"] == 1 and rq["DischargeEnable"] == 1
        assert rq["ForceCharge1"] == rq["ForceCharge2"] == rq["FullChargeRequest"] == 0
        name = inv.last("BMS_Name")["Name"]
        assert name.to_bytes(8, "little") == b"PYLON   "
        # One burst per second.
        n = len([1 for _t, n, _d in inv.log if n == "BMS_Limits"])
        assert 5 <= n <= 6
    finally:
        teardown(inv, bus)


def test_over_temperature_alarm_bit_and_ccl_zero_within_one_period():
    sim, link, inv, bus = setup()
    try:
        sim.run(2)
        assert inv.last("BMS_Limits")["ChargeCurrentLimit"] == 80.0
        sim.board.temp_override[2] = 60.0   # above t_chg_ot 55, below t_cell_ot 65
        sim.board.temp_override[3] = 60.0
        assert sim.run_until(lambda s: s.bms.prot.active(F.T_CHG), 10)
        t_trip = sim.t_ms
        sim.run(1.0)
        after = [(t, d) for t, n, d in inv.log if t >= t_trip and n == "BMS_Limits"]
        assert after and after[0][0] - t_trip <= 1000
        assert after[0][1]["ChargeCurrentLimit"] == 0
        # Discharge is derated, not stopped: 100 % up to t_cell_ot - 10 degC,
        # 0 at t_cell_ot 65 degC, so 50 % of 120 A at 60 degC.
        assert after[0][1]["DischargeCurrentLimit"] == 60.0
        al = [(t, d) for t, n, d in inv.log if t >= t_trip and n == "BMS_Alarms"]
        assert al[0][0] - t_trip <= 1000 and al[0][1]["ProtOverTemperature"] == 1
        assert al[0][1]["WarnHighTemperature"] == 1          # the OT alarm warned first
        rq = inv.last("BMS_Request")
        assert rq["ChargeEnable"] == 0 and rq["DischargeEnable"] == 1
        # Cooling down clears it again (recovery 50 degC + 5 s clear delay).
        sim.board.temp_override[2] = sim.board.temp_override[3] = 25.0
        sim.run(10)
        assert inv.last("BMS_Alarms")["ProtOverTemperature"] == 0
        assert inv.last("BMS_Request")["ChargeEnable"] == 1
    finally:
        teardown(inv, bus)


def test_losing_bms_data_stops_charge_and_discharge_requests():
    sim, link, inv, bus = setup()
    try:
        sim.run(3)
        assert inv.last("BMS_Request")["ChargeEnable"] == 1
        sim.board.afe_dead = True           # the AFE stops answering: no cell data
        sim.run(3)
        rq = inv.last("BMS_Request")
        assert rq["ChargeEnable"] == 0 and rq["DischargeEnable"] == 0
        lim = inv.last("BMS_Limits")
        assert lim["ChargeCurrentLimit"] == 0 and lim["DischargeCurrentLimit"] == 0
        assert inv.last("BMS_Alarms")["WarnInternalCommFail"] == 1
    finally:
        teardown(inv, bus)


def test_frozen_core_stops_requests_within_the_stale_bound():
    sim, link, inv, bus = setup()
    try:
        sim.run(3)
        t0 = sim.t_ms
        # The control loop stops (a hung task); the CAN task and the clock go on.
        t = 0
        while t < 5000:
            sim.clock.advance(10)
            t += 10
            link.poll()
            inv.listen(t0 + t)
        off = [tt for tt, n, d in inv.log if tt > t0 and n == "BMS_Request"
               and d["ChargeEnable"] == 0 and d["DischargeEnable"] == 0]
        assert off and off[0] - t0 <= 3000 + 20
    finally:
        teardown(inv, bus)


def test_inverter_keepalive_loss_is_reported():
    sim, link, inv, bus = setup()
    try:
        sim.hooks.append(lambda s: inv.keepalive() if s.t_ms % 1000 < 20 and s.t_ms < 5000
                         else None)
        sim.run(4)
        assert link.inverter_present and link.keepalive_frames >= 3
        sim.run(8)
        assert link.inverter_present           # last keep-alive < 10 s ago
        sim.run(4)
        assert not link.inverter_present and link.keepalive_lost == 1
    finally:
        teardown(inv, bus)


def test_full_charge_request_reaches_the_wire_after_full_chg_days():
    # docs/parameters.md full_chg_days: past it without a full anchor, 0x35C
    # FullChargeRequest (bit 3) asks the inverter for a full charge.
    from bms import params as P
    sim, link, inv, bus = setup()
    try:
        sim.bms.params.set(P.P_FULL_CHG_DAYS, 1)
        sim.run(3)
        assert inv.last("BMS_Request")["FullChargeRequest"] == 0
        for _ in range(25):           # a day of operation, in hours
            sim.clock.advance(3599000)
            sim.run(1)
        sim.run(3)
        rq = inv.last("BMS_Request")
        assert rq["FullChargeRequest"] == 1 and rq["ChargeEnable"] == 1, rq
    finally:
        teardown(inv, bus)
