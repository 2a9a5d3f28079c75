"""Pylontech-compatible low-voltage battery protocol on the external CAN port.

What Victron, Deye, Growatt, Sofar, SMA SI and most LV hybrid inverters
accept as a "Pylontech" or "Pylon LV" battery: CAN 2.0A, 500 kbit/s, 11-bit
ids, little-endian, the battery broadcasts every ``period_ms`` (1 s):

  0x351 (8)  CVL charge voltage limit    u16 0.1 V
             CCL charge current limit    s16 0.1 A
             DCL discharge current limit s16 0.1 A (positive magnitude)
             DVL discharge voltage limit u16 0.1 V
  0x355 (4)  SOC u16 1 %, SOH u16 1 %
  0x356 (6)  pack voltage s16 0.01 V, current s16 0.1 A (+ = charging),
             temperature s16 0.1 degC (hottest cell sensor).  The pack
             voltage field ends at 327.67 V (it is clamped there): a
             low-voltage protocol, for packs up to 89S LFP (3.65 V) / 78S NMC;
             a high-voltage inverter needs its own protocol, not this one.
  0x359 (8)  byte0 protection: b1 over-voltage, b2 under-voltage,
                   b3 over-temperature, b4 under-temperature,
                   b7 discharge over-current
             byte1 protection: b0 charge over-current, b3 system error
             byte2 warning:    b1 high voltage, b2 low voltage,
                   b3 high temperature, b4 low temperature,
                   b7 discharge high current
             byte3 warning:    b0 charge high current,
                   b3 internal communication failure
             byte4 modules in parallel, byte5..6 "PN", byte7 0
  0x35C (2)  byte0: b7 charge enable, b6 discharge enable (each only with a
             limit of at least 0.1 A, the limits' own step),
             b5 force charge I, b4 force charge II, b3 full-charge request
  0x35E (8)  "PYLON   "

Layouts checked against public Pylon emulations (diyBMS v4 ESP32
``pylon_canbus.cpp``, a published Pylon LV DBC); ``docs/inverter_pylon.dbc``
is the machine-readable copy and the tests decode our frames with it.

The inverter answers with 0x305 (keep-alive, ~1 s).  ``inverter_present``
goes False (and ``keepalive_lost`` counts) when none came for
``keepalive_ms``; the battery keeps broadcasting either way.

Fail-safe: when the BMS data are stale (the core not running, or current,
cell or temperature data older than ``stale_ms``, which is also what a hung
core looks like) the frames say: charge and discharge disabled, both current
limits 0, "internal communication failure".  The voltage limits stay at
their configured values: they are settings, not measurements, and some
inverters treat a 0 V limit as a malformed frame.  A change of the request
byte or of the alarm bytes starts a new burst at once instead of waiting for
the period, so a new protection reaches the inverter within one poll.

Limits come from a limits source (``comms.limits``): the derating logic once
``bms.derating`` exists, a fault-table adapter until then.

``poll()`` never raises and allocates nothing in steady state: the frames
live in preallocated buffers and are sent as memoryviews.  A full transmit
queue (``send`` -> False) resumes the burst at the next poll.
"""
from micropython import const

from bms.measurements import ROLE_CELL, T_NONE_MAX
from bms.ticks import ticks_add, ticks_diff
from comms.limits import limits_for
from comms.packing import put16le as put16  # noqa: F401 (re-exported)

ID_LIMITS = const(0x351)
ID_SOC = const(0x355)
ID_ACTUAL = const(0x356)
ID_ALARMS = const(0x359)
ID_REQUEST = const(0x35C)
ID_NAME = const(0x35E)
ID_KEEPALIVE = const(0x305)

IDS = (ID_LIMITS, ID_SOC, ID_ACTUAL, ID_ALARMS, ID_REQUEST, ID_NAME)
LENGTHS = (8, 4, 6, 8, 2, 8)
N_FRAMES = const(6)
I_LIMITS = const(0)
I_SOC = const(1)
I_ACTUAL = const(2)
I_ALARMS = const(3)
I_REQUEST = const(4)
I_NAME = const(5)

REQ_CHARGE = const(0x80)
REQ_DISCHARGE = const(0x40)
REQ_FORCE_1 = const(0x20)
REQ_FORCE_2 = const(0x10)
REQ_FULL = const(0x08)

# Fault ids of bms.faults, as literal copies: names imported from another
# module are not folded, so FAULT_BITS would be built on the heap at import;
# host_tests/test_const_tables.py checks them against bms.faults.
_F_OV1 = const(0)
_F_OV2 = const(1)
_F_UV1 = const(2)
_F_UV2 = const(3)
_F_CHG_OC = const(4)
_F_DSG_OC = const(5)
_F_PEAK = const(6)
_F_SHORT = const(7)
_F_T_POWER = const(8)
_F_T_BAL = const(9)
_F_T_CELL = const(10)
_F_T_CHG = const(11)
_F_LT_CHG = const(12)
_F_LT_DSG = const(13)
_F_DIFF = const(14)
_F_T_SENSOR = const(15)
_F_BAL_SENSOR = const(16)
_F_CELL_STALE = const(17)
_F_CUR_STALE = const(18)
_F_PRECHARGE = const(19)
_F_INTERNAL = const(20)
_F_AFE = const(21)
_F_COMM = const(22)
_F_LEASE = const(23)
_F_OV_ALARM = const(24)
_F_UV_ALARM = const(25)
_F_OT_ALARM = const(26)
_F_LT_ALARM = const(27)
_F_CHG_OC_ALARM = const(28)
_F_DSG_OC_ALARM = const(29)
_F_RELAY_WELD = const(30)
_F_CURRENT_SENSOR = const(31)

# 0x359 bits (byte, mask).
A_OV = const((0, 0x02))
A_UV = const((0, 0x04))
A_OT = const((0, 0x08))
A_UT = const((0, 0x10))
A_DOC = const((0, 0x80))
A_COC = const((1, 0x01))
A_SYS = const((1, 0x08))
W_HV = const((2, 0x02))
W_LV = const((2, 0x04))
W_HT = const((2, 0x08))
W_LT = const((2, 0x10))
W_DHC = const((2, 0x80))
W_CHC = const((3, 0x01))
W_COMM = const((3, 0x08))

# Every fault of bms.faults.TABLE maps to exactly one 0x359 bit: the
# inverter always sees why the battery limits it (a test enforces that the
# table is complete).  Faults without a Pylon bit of their own that stop the
# battery are "system error"; lost module/sensor data is "communication".
FAULT_BITS = (
    (_F_OV1, A_OV), (_F_OV2, A_OV),
    (_F_UV1, A_UV), (_F_UV2, A_UV),
    (_F_CHG_OC, A_COC),
    (_F_DSG_OC, A_DOC), (_F_PEAK, A_DOC), (_F_SHORT, A_DOC),
    (_F_T_POWER, A_OT), (_F_T_CELL, A_OT), (_F_T_CHG, A_OT),
    (_F_T_BAL, W_HT),
    (_F_LT_CHG, A_UT), (_F_LT_DSG, A_UT),
    (_F_DIFF, A_SYS), (_F_T_SENSOR, A_SYS), (_F_PRECHARGE, A_SYS), (_F_INTERNAL, A_SYS),
    (_F_AFE, A_SYS), (_F_LEASE, A_SYS), (_F_RELAY_WELD, A_SYS), (_F_CURRENT_SENSOR, A_SYS),
    (_F_BAL_SENSOR, W_COMM), (_F_CELL_STALE, W_COMM), (_F_CUR_STALE, W_COMM), (_F_COMM, W_COMM),
    (_F_OV_ALARM, W_HV), (_F_UV_ALARM, W_LV), (_F_OT_ALARM, W_HT), (_F_LT_ALARM, W_LT),
    (_F_CHG_OC_ALARM, W_CHC), (_F_DSG_OC_ALARM, W_DHC),
)

NAME = b"PYLON   "
PERIOD_MS = const(1000)
STALE_MS = const(3000)
KEEPALIVE_MS = const(10000)
RX_PER_POLL = const(16)
STATE_BUS_OFF = const(3)


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


class InverterCan:
    def __init__(self, can, bms, clock, limits=None, period_ms=PERIOD_MS, stale_ms=STALE_MS,
                 keepalive_ms=KEEPALIVE_MS, modules=1):
        self.can = can
        self.bms = bms
        self.clock = clock
        self.limits = limits if limits is not None else limits_for(bms)
        self.period_ms = period_ms
        self.stale_ms = stale_ms
        self.keepalive_ms = keepalive_ms
        self.frames = [bytearray(n) for n in LENGTHS]
        self._views = [memoryview(f) for f in self.frames]
        for i in range(8):
            self.frames[I_NAME][i] = NAME[i]
        a = self.frames[I_ALARMS]
        a[4] = modules
        a[5] = 0x50  # "P"
        a[6] = 0x4E  # "N"
        self._alarm = bytearray(4)  # scratch for the change check
        self._rx = bytearray(8)
        self._next = N_FRAMES  # index in the burst; N_FRAMES: no burst running
        now = clock.ticks_ms()
        self._due = now
        self.data_ok = False
        self.request = 0
        # Inverter keep-alive.
        self.inverter_present = False
        self.inverter_seen = 0
        self.keepalive_frames = 0
        self.keepalive_lost = 0
        # Diagnostics.
        self.bursts = 0
        self.frames_sent = 0
        self.tx_full = 0
        self.rx_other = 0
        self.bus_off = 0
        self._restart_at = now
        self.internal_errors = 0
        try:
            can.set_filters([(ID_KEEPALIVE, 0x7FF, False)])
        except (AttributeError, NotImplementedError, OSError):
            pass  # no hardware filter: _receive drops what is not ours

    # ---- the task -------------------------------------------------------
    def poll(self):
        """Receive, check, send what is due; never raises."""
        try:
            self._poll()
        except Exception:  # noqa: BLE001 - comms must never stop the control loop
            self.internal_errors += 1
            self._next = N_FRAMES

    def _poll(self):
        now = self.clock.ticks_ms()
        self._receive(now)
        if self.inverter_present and ticks_diff(now, self.inverter_seen) > self.keepalive_ms:
            self.inverter_present = False
            self.keepalive_lost += 1
        can = self.can
        if can.state() == STATE_BUS_OFF:
            if ticks_diff(now, self._restart_at) >= 0:
                self.bus_off += 1
                self._restart_at = ticks_add(now, self.period_ms)
                can.restart()
            return
        if ticks_diff(now, self._restart_at) > 0:
            # Expired: held at now, so days on a good bus never leave it old
            # enough to read as ahead (tick differences wrap at 6.2 days).
            self._restart_at = now
        if self._next >= N_FRAMES:
            if ticks_diff(now, self._due) >= 0 or self._changed(now):
                self.build(now)
                self._next = 0
                self._due = ticks_add(now, self.period_ms)
                self.bursts += 1
        while self._next < N_FRAMES:
            i = self._next
            if not can.send(IDS[i], self._views[i]):
                self.tx_full += 1
                return
            self._next = i + 1
            self.frames_sent += 1

    def _receive(self, now):
        can = self.can
        buf = self._rx
        for _ in range(RX_PER_POLL):
            n = can.recv(buf)
            if n < 0:
                return
            if not can.rx_ext and can.rx_id == ID_KEEPALIVE:
                self.keepalive_frames += 1
                self.inverter_seen = now
                self.inverter_present = True
            else:
                self.rx_other += 1

    # ---- frame contents -------------------------------------------------
    def fresh(self, now):
        """True if the core runs and its measurements are recent."""
        b = self.bms
        return b.running and b.meas.fresh(now, self.stale_ms)

    def _alarm_bits(self, out, ok):
        for i in range(4):
            out[i] = 0
        st = self.bms.prot.state
        for fid, bit in FAULT_BITS:
            if st[fid]:
                out[bit[0]] |= bit[1]
        if not ok:
            out[W_COMM[0]] |= W_COMM[1]

    def _request_bits(self, ok):
        lim = self.limits
        if not ok:
            return 0
        r = 0
        prot = self.bms.prot
        # Enabled only with a limit 0x351 can carry (0.1 A steps): never
        # "charge" beside a limit of 0.0 A.
        if lim.ccl_ma >= 100:
            r |= REQ_CHARGE
            # Ask the inverter to charge from any source when the cells run low.
            if prot.active(_F_UV1):
                r |= REQ_FORCE_2
            elif prot.active(_F_UV_ALARM):
                r |= REQ_FORCE_1
            if getattr(self.bms, "full_charge_request", False):
                r |= REQ_FULL
        if lim.dcl_ma >= 100:
            r |= REQ_DISCHARGE
        return r

    def _changed(self, now):
        ok = self.fresh(now)
        self.limits.update(now)
        a = self._alarm
        self._alarm_bits(a, ok)
        f = self.frames[I_ALARMS]
        if a[0] != f[0] or a[1] != f[1] or a[2] != f[2] or a[3] != f[3]:
            return True
        return self._request_bits(ok) != self.frames[I_REQUEST][0]

    def build(self, now):
        """Fill every frame buffer from the current BMS state."""
        b = self.bms
        m = b.meas
        ok = self.fresh(now)
        self.data_ok = ok
        lim = self.limits
        lim.update(now)
        f = self.frames[I_LIMITS]
        put16(f, 0, clamp(lim.cvl_mv // 100, 0, 0xFFFF))
        put16(f, 2, clamp(lim.ccl_ma // 100, 0, 0x7FFF) if ok else 0)
        put16(f, 4, clamp(lim.dcl_ma // 100, 0, 0x7FFF) if ok else 0)
        put16(f, 6, clamp(lim.dvl_mv // 100, 0, 0xFFFF))

        f = self.frames[I_SOC]
        put16(f, 0, clamp((b.soc.soc_pm + 5) // 10, 0, 100))
        put16(f, 2, clamp((getattr(b.soc, "soh_pm", 1000) + 5) // 10, 0, 100))

        f = self.frames[I_ACTUAL]
        mv = m.pack_mv if m.pack_mv else m.sum_mv
        put16(f, 0, clamp(mv // 10, 0, 0x7FFF))
        i = m.current_ma
        # Truncate toward zero: a 0.05 A idle current shows as 0.0 A either way.
        di = i // 100 if i >= 0 else -((-i) // 100)
        put16(f, 2, clamp(di, -0x8000, 0x7FFF))
        t = m.tmax[ROLE_CELL]
        put16(f, 4, 0 if t == T_NONE_MAX else t)

        f = self.frames[I_ALARMS]
        a = self._alarm
        self._alarm_bits(a, ok)
        for k in range(4):
            f[k] = a[k]

        r = self._request_bits(ok)
        self.request = r
        self.frames[I_REQUEST][0] = r
