"""Pylon LV inverter frames: byte layout, fault mapping, fail-safe, keep-alive, TX queue.

Expected bytes are typed in from the protocol description (little-endian,
units 0.1 V / 0.1 A / 0.01 V / 1 % / 0.1 degC), not from the module's
constants.
"""
from bms import faults as F
from bms.derating import RAMP_MS
from comms import inverter_can as IC
from harness import Rig
from inv_rig import STATE_BUS_OFF, LoopCan, s16, u16

ORDER = [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]


def make(tx_slots=8, current_ma=0, settle_ms=2000, estimator=True, **kw):
    r = Rig()
    r.board.current_ma = current_ma
    r.bms.soc.est_enabled = estimator
    r.run(settle_ms)
    can = LoopCan(tx_slots)
    inv = IC.InverterCan(can, r.bms, r.clock, **kw)
    return r, can, inv


def step(r, inv, ms, can=None):
    """Control loop and inverter task together, 10 ms at a time."""
    t = 0
    while t < ms:
        r.clock.advance(10)
        t += 10
        r.bms.step()
        inv.poll()
        if can is not None:
            can.drain()


def test_burst_layout_bytes():
    # Past the derating's soft start (0 -> full limits in RAMP_MS after boot);
    # SOC from the coulomb counter alone, so it stays at the typed 50 %.
    r, can, inv = make(current_ma=12345, settle_ms=RAMP_MS + 2000, estimator=False)
    assert r.bms.running
    inv.poll()
    w = can.take()
    assert [f[0] for f in w] == ORDER
    assert [f[1] for f in w] == [False] * 6
    d = dict((f[0], f[2]) for f in w)
    # CVL 16 x 3.550 V = 56.8 V, CCL 80 % of 100 A, DCL 80 % of 150 A, DVL 16 x 2.900 V.
    assert d[0x351] == b"\x38\x02\x20\x03\xb0\x04\xd0\x01"
    assert d[0x355] == b"\x32\x00\x64\x00"           # 50 %, 100 %
    # 52.80 V, 12.3 A, 25.0 degC
    assert d[0x356] == b"\xa0\x14\x7b\x00\xfa\x00"
    assert d[0x359] == b"\x00\x00\x00\x00\x01\x50\x4e\x00"
    assert d[0x35C] == b"\xc0\x00"
    assert d[0x35E] == b"PYLON   "


def test_negative_current_and_cold():
    r, can, inv = make(current_ma=-12399)
    r.board.temps[2] = -55
    r.board.temps[3] = -75   # the hottest cell sensor is reported
    step(r, inv, 300)
    can.take()
    inv.build(r.clock.ticks_ms())
    f = inv.frames[IC.I_ACTUAL]
    assert s16(f, 2) == -123
    assert s16(f, 4) == -55


def test_every_fault_has_one_bit():
    seen = [0] * F.N_FAULTS
    for fid, bit in IC.FAULT_BITS:
        seen[fid] += 1
        assert 0 <= bit[0] <= 3 and bit[1] in (1, 2, 4, 8, 16, 32, 64, 128)
    assert seen == [1] * F.N_FAULTS


def test_over_temperature_within_one_period():
    r, can, inv = make(settle_ms=RAMP_MS + 2000)    # full limits: soft start over
    step(r, inv, 1500, can)
    assert u16(can.last(0x351), 2) == 800
    assert u16(can.last(0x351), 4) == 1200
    can.take()
    r.board.temps[2] = 600   # 60 degC: above t_chg_ot 55, below t_cell_ot 65
    t = 0
    t_trip = -1
    while t < 10000:
        step(r, inv, 10, can)
        t += 10
        if t_trip < 0 and (r.bms.prot.active(F.T_CHG) or r.bms.prot.active(F.T_CELL)):
            t_trip = t
            mark = len(can.wire)
        if t_trip >= 0 and t - t_trip >= 1000:
            break
    assert t_trip > 0
    after = [f for f in can.wire[mark:] if f[0] == 0x351]
    assert after and u16(after[0][2], 2) == 0            # CCL 0 in the first frame after the trip
    alarms = [f[2] for f in can.wire[mark:] if f[0] == 0x359]
    assert alarms and alarms[0][0] & 0x08                # over-temperature protection bit
    req = [f[2] for f in can.wire[mark:] if f[0] == 0x35C]
    assert req[0][0] & 0x80 == 0 and req[0][0] & 0x40    # no charging; discharge stays allowed
    # Discharge derated, not stopped: 100 % up to t_cell_ot - 10 degC, 0 at
    # t_cell_ot 65 degC, so 50 % of 120 A at 60 degC.
    assert u16(after[0][2], 4) == 600


def test_hung_core_stops_requests():
    r, can, inv = make()
    step(r, inv, 1000, can)
    assert can.last(0x35C)[0] == 0xC0
    can.take()
    t = 0
    while t < 5000:          # the core stops stepping; the comms task goes on
        r.clock.advance(10)
        t += 10
        inv.poll()
        can.drain()
    assert not inv.data_ok
    assert can.last(0x35C)[0] == 0
    lim = can.last(0x351)
    assert u16(lim, 2) == 0 and u16(lim, 4) == 0
    assert u16(lim, 0) == 568                            # voltage limits stay
    assert can.last(0x359)[3] & 0x08                     # internal communication failure


def test_lost_cell_data_stops_requests():
    r, can, inv = make()
    step(r, inv, 1000, can)
    r.board.fail_cells = 1000000
    step(r, inv, 3000, can)
    assert r.bms.prot.active(F.CELL_STALE)
    assert can.last(0x35C)[0] == 0
    assert can.last(0x359)[3] & 0x08


def test_not_running_sends_nothing_enabled():
    r = Rig()
    can = LoopCan(8)
    inv = IC.InverterCan(can, r.bms, r.clock)
    inv.poll()
    assert not r.bms.running
    assert can.last(0x35C)[0] == 0
    assert u16(can.last(0x351), 2) == 0


def test_period_without_changes():
    r, can, inv = make()
    step(r, inv, 10000, can)
    n = len([f for f in can.wire if f[0] == 0x351])
    assert 10 <= n <= 11


def test_full_tx_queue_resumes_in_order():
    r, can, inv = make(tx_slots=2)
    inv.poll()
    assert [f[0] for f in can.wire] == ORDER[:2]
    inv.poll()                                           # queue still full
    assert len(can.wire) == 2 and inv.tx_full >= 1
    can.drain()
    inv.poll()
    can.drain()
    inv.poll()
    assert [f[0] for f in can.wire] == ORDER


def test_bus_off_restart_once_per_period():
    r, can, inv = make()
    can.bus_state = STATE_BUS_OFF
    inv.poll()
    assert can.restarts == 1 and can.wire == []
    can.bus_state = STATE_BUS_OFF
    inv.poll()
    assert can.restarts == 1                             # no restart storm
    step(r, inv, 1000, can)
    assert can.restarts == 2
    step(r, inv, 20, can)
    assert can.last(0x351) is not None


def test_bus_off_a_week_after_boot_restarts_at_once():
    # Bus-off restarts at most once per period; the last restart's time is a
    # tick stamp: a week later (tick differences wrap after 2**29 ms, 6.2
    # days) it must not read as recent and leave the bus off for days.
    r, can, inv = make()
    for _ in range(7 * 24 * 30):          # a week, 2 min a step
        r.run(120000, step=120000)
        inv.poll()
        can.drain()
    can.bus_state = STATE_BUS_OFF
    inv.poll()
    assert can.restarts == 1
    step(r, inv, 20, can)
    assert can.last(0x351) is not None

def test_keepalive_presence_and_loss():
    r, can, inv = make()
    assert not inv.inverter_present
    can.inject(0x305, b"\x00" * 8, ext=True)             # extended id: not the inverter
    inv.poll()
    assert not inv.inverter_present and inv.rx_other == 1
    for _ in range(5):
        can.inject(0x305, b"\x00" * 8)
        step(r, inv, 1000, can)
    assert inv.inverter_present and inv.keepalive_frames == 5
    step(r, inv, 9000, can)
    assert inv.inverter_present
    step(r, inv, 2000, can)
    assert not inv.inverter_present and inv.keepalive_lost == 1
    can.inject(0x305, b"\x00" * 8)
    step(r, inv, 20, can)
    assert inv.inverter_present


def test_low_cells_request_force_charge():
    r, can, inv = make()
    for i in range(16):
        r.board.cells[i] = 2540                          # below uv1 + alarm margin (2550)
    step(r, inv, 3000, can)
    assert r.bms.prot.active(F.UV_ALARM) and not r.bms.prot.active(F.UV1)
    assert can.last(0x35C)[0] == 0xE0                    # charge, discharge, force charge I
    assert can.last(0x359)[2] & 0x04                     # low-voltage warning


class NullCan:
    rx_id = 0
    rx_ext = False

    def send(self, can_id, data, ext=False):
        return True

    def recv(self, buf):
        return -1

    def state(self):
        return 0


def test_steady_state_poll_allocates_nothing():
    try:
        import micropython
        lock = micropython.heap_lock
        unlock = micropython.heap_unlock
    except (ImportError, AttributeError):
        return  # CPython: nothing to measure
    r, _can, _inv = make()
    inv = IC.InverterCan(NullCan(), r.bms, r.clock)
    inv.poll()
    r.clock.advance(1000)
    lock()
    try:
        inv.poll()              # a full burst
        inv.poll()              # an idle poll with the change check
    finally:
        unlock()
    assert inv.bursts == 2


def test_charge_enable_only_with_a_limit_the_frame_can_carry():
    # 0x351 carries the charge current limit in 0.1 A steps; 0x35C's charge
    # enable must not say "charge" while 0x351 says 0.0 A (a limit under
    # 100 mA: a tiny chg_oc, the first steps of a ramp).  The inverter would
    # see charging enabled at a zero limit.
    r = Rig(chg_oc=1)          # 0.1 A: the published limit is 80 mA
    r.bms.soc.est_enabled = False
    r.run(RAMP_MS + 2000)
    can = LoopCan(8)
    inv = IC.InverterCan(can, r.bms, r.clock)
    inv.poll()
    d = dict((f[0], f[2]) for f in can.take())
    assert u16(d[0x351], 2) == 0                 # CCL 0.0 A
    assert not d[0x35C][0] & 0x80, d[0x35C]
    assert d[0x35C][0] & 0x40                    # discharge still enabled
