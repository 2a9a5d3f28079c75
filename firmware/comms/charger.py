"""Special charger control: the BMS tells the charger its targets and stops it.

Message contents follow the widely used Elcon / TC-Charger CAN protocol
(J1939-style 29-bit ids, 250 kbit/s, big-endian), byte for byte:

  BMS -> charger, id 0x1806E5F4, every second:
    0-1  maximum charge voltage, 0.1 V     2-3  maximum charge current, 0.1 A
    4    control: 0 = charge, 1 = stop (battery protection)
    5-7  0
  charger -> BMS, id 0x18FF50E5, every second:
    0-1  output voltage, 0.1 V              2-3  output current, 0.1 A
    4    status: b0 hardware failure, b1 over-temperature, b2 input voltage
         wrong, b3 battery not detected / reversed, b4 communication
         time-out (no BMS message for 5 s: the charger stops by itself)
    5-7  0

Transports: a CAN controller (the brief's interface, 29-bit ids as above),
or the RS485-1 port, where each 8-byte payload travels in the display
port's frame (docs/charger_protocol.md)::

    A5 5A | 08 | CMD | payload[8] | CRC-16/Modbus LE over LEN, CMD, payload
    CMD 0x10 = BMS command (0x1806E5F4 payload), 0x90 = charger status

Fail-safe: targets come from the limits source (``comms.limits``); the
command is "stop" with 0 V / 0 A whenever the charge limit is 0 (any fault
that opens the charge path, charge switch off), the BMS data are stale, the
``special_charger`` parameter is off or the charger reports a fault.  A
change to "stop" is sent at once, not at the next period; and the charger's
own 5 s communication time-out covers a dead BMS.
"""
from micropython import const

from bms.params import P_SPECIAL_CHARGER
from bms.ticks import ticks_add, ticks_diff
from comms.crc16 import crc16
from comms.limits import limits_for
from comms.packing import put16be

_ID_COMMAND = const(0x1806E5F4)
ID_STATUS = const(0x18FF50E5)
_CTRL_CHARGE = const(0)
_CTRL_STOP = const(1)
_ST_HW_FAIL = const(0x01)
_ST_OVER_TEMP = const(0x02)
_ST_INPUT = const(0x04)
_ST_NO_BATTERY = const(0x08)
_ST_COMM_TIMEOUT = const(0x10)
_ST_FAULTS = const(0x0F)  # anything but the time-out means: do not charge

H0 = const(0xA5)
H1 = const(0x5A)
_CMD_TO_CHARGER = const(0x10)
_CMD_FROM_CHARGER = const(0x90)
_FRAME_LEN = const(14)
PERIOD_MS = const(1000)
STALE_MS = const(3000)
_PRESENT_MS = const(5000)


class Charger:
    def __init__(self, bms, clock, port=None, can=None, limits=None, period_ms=PERIOD_MS,
                 stale_ms=STALE_MS, present_ms=_PRESENT_MS):
        self.bms = bms
        self.clock = clock
        self.port = port
        self.can = can
        self.limits = limits if limits is not None else limits_for(bms)
        self.period_ms = period_ms
        self.stale_ms = stale_ms
        self.present_ms = present_ms
        self.cmd = bytearray(8)
        self.frame = bytearray(_FRAME_LEN)
        self.rx = bytearray(32)
        self._n = 0
        self._chunk = bytearray(16)
        self._rxcan = bytearray(8)
        now = clock.ticks_ms()
        self._due = now
        self._seen = now
        self.present = False
        self.out_dv = 0
        self.out_da = 0
        self.status = 0
        self.charging = False   # what the last command said
        self.sent = 0
        self.received = 0
        self.crc_errors = 0
        self.internal_errors = 0
        self.cmd[4] = _CTRL_STOP

    def poll(self):
        try:
            self._poll()
        except Exception:  # noqa: BLE001 - comms must never stop the control loop
            self.internal_errors += 1

    def _poll(self):
        now = self.clock.ticks_ms()
        self._receive(now)
        if self.present and ticks_diff(now, self._seen) > self.present_ms:
            self.present = False
        want = self._decide(now)
        if ticks_diff(now, self._due) >= 0 or (self.charging and not want):
            self._due = ticks_add(now, self.period_ms)
            self._send(want)

    def _fresh(self, now):
        b = self.bms
        return b.running and b.meas.fresh(now, self.stale_ms)

    def _decide(self, now):
        lim = self.limits
        lim.update(now)
        return (self.bms.params[P_SPECIAL_CHARGER] != 0 and self._fresh(now)
                and lim.ccl_ma >= 100 and not (self.status & _ST_FAULTS))   # 0.1 A steps: never 'charge at 0.0 A'

    def _send(self, charge):
        c = self.cmd
        lim = self.limits
        if charge:
            v = lim.cvl_mv // 100
            i = lim.ccl_ma // 100
            put16be(c, 0, v if v < 0xFFFF else 0xFFFF)
            put16be(c, 2, i if i < 0xFFFF else 0xFFFF)
            c[4] = _CTRL_CHARGE
        else:
            for k in range(5):
                c[k] = 0
            c[4] = _CTRL_STOP
        self.charging = charge
        self.sent += 1
        if self.can is not None:
            self.can.send(_ID_COMMAND, c, True)
        if self.port is not None:
            f = self.frame
            f[0] = H0
            f[1] = H1
            f[2] = 8
            f[3] = _CMD_TO_CHARGER
            for k in range(8):
                f[4 + k] = c[k]
            crc = crc16(f, 2, 12)
            f[12] = crc & 0xFF
            f[13] = crc >> 8
            self.port.write(f)

    # ---- status from the charger ----------------------------------------
    def _status(self, d, off, now):
        self.out_dv = (d[off] << 8) | d[off + 1]
        self.out_da = (d[off + 2] << 8) | d[off + 3]
        self.status = d[off + 4]
        self.present = True
        self._seen = now
        self.received += 1

    def _receive(self, now):
        can = self.can
        if can is not None:
            for _ in range(8):
                n = can.recv(self._rxcan)
                if n < 0:
                    break
                if can.rx_ext and can.rx_id == ID_STATUS and n >= 5:   # up to the status byte
                    self._status(self._rxcan, 0, now)
        port = self.port
        if port is None or not port.any():
            return
        k = port.readinto(self._chunk)
        if not k:
            return
        rx = self.rx
        for i in range(k):
            if self._n >= len(rx):
                self._n = 0
            rx[self._n] = self._chunk[i]
            self._n += 1
        # Resynchronise on the header; a frame is always 14 bytes.
        while self._n >= 2:
            if rx[0] != H0 or rx[1] != H1 or (self._n >= 4 and (rx[2] != 8 or rx[3] != _CMD_FROM_CHARGER)):
                self._shift(1)
                continue
            if self._n < _FRAME_LEN:
                return
            c = crc16(rx, 2, 12)
            if rx[12] == (c & 0xFF) and rx[13] == (c >> 8):
                self._status(rx, 4, now)
                self._shift(_FRAME_LEN)
            else:
                self.crc_errors += 1
                self._shift(1)

    def _shift(self, k):
        rx = self.rx
        n = self._n
        for i in range(k, n):
            rx[i - k] = rx[i]
        self._n = n - k if n > k else 0
