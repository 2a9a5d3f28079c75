"""Display protocol on the TTL / RS485-1 port (spec: docs/display_protocol.md).

A small display polls; the BMS answers.  Frame, both directions::

    A5 5A | LEN u8 | CMD u8 | PAYLOAD[LEN] | CRC-16/Modbus u16 LE

The CRC covers LEN, CMD and PAYLOAD.  Requests: 0x01 summary (no payload:
the 30-byte layout whose u8 cell count and cell indices saturate at 255;
a version byte 1: the same plus the three as u16, for packs above 255
cells), 0x02 cells (first u8, count u8 1..64), 0x03 temperatures,
0x04 lease; answers carry CMD | 0x80,
errors CMD 0xFF with a code (1 unknown command, 2 bad arguments).  Values are
little-endian in the core's units (mV, mA, per mille, 0.1 degC).

With ``jbd=True`` the same port also answers JBD/LLT read requests
(``DD A5 ...``, see ``comms.jbd``), told apart by the first byte, so
off-the-shelf JBD displays and monitoring tools work too.

Framing is by header, length and CRC (no silence timing): garbage or a frame
with a bad CRC costs one byte of resynchronisation, and a partial frame is
dropped after ``gap_ms`` without new bytes.  ``poll()`` never raises and
allocates nothing.
"""
from micropython import const

from bms import faults as F
from bms.ticks import ticks_diff
from comms.crc16 import crc16
from comms.jbd import START as JBD_START, JbdResponder
from comms.packing import put16le as put16  # noqa: F401 (re-exported)

H0 = const(0xA5)
H1 = const(0x5A)
_CMD_SUMMARY = const(0x01)
CMD_CELLS = const(0x02)
_CMD_TEMPS = const(0x03)
_CMD_LEASE = const(0x04)
_CMD_ERROR = const(0xFF)
_RESP = const(0x80)
_ERR_COMMAND = const(1)
_ERR_ARGS = const(2)
_MAX_REQ = const(16)      # longest request payload we accept
_MAX_CELLS_PER_REQ = const(64)
MAX_TEMPS = const(16)
_SUMMARY_LEN = const(30)    # version 0 (a request without payload)
_SUMMARY1_LEN = const(36)   # version 1: + cells in series, max / min cell index as u16
_U8_MAX = const(255)        # a u8 count or index saturates here (256S master)
_RX_SIZE = const(64)
_TX_SIZE = const(272)
GAP_MS = const(100)
CHUNK = const(32)


def put32(buf, pos, v):
    buf[pos] = v & 0xFF
    buf[pos + 1] = (v >> 8) & 0xFF
    buf[pos + 2] = (v >> 16) & 0xFF
    buf[pos + 3] = (v >> 24) & 0xFF


class DisplayPort:
    def __init__(self, port, bms, clock, jbd=False, gap_ms=GAP_MS, name=b"MPY-BMS", lease=None):
        self.port = port
        self.bms = bms
        self.lease = lease   # bms.lease.Lease (the services' one) or None
        self.clock = clock
        self.jbd = JbdResponder(bms, name) if jbd else None
        self.gap_ms = gap_ms
        self.rx = bytearray(_RX_SIZE)
        self.tx = bytearray(_TX_SIZE)
        self._chunk = bytearray(CHUNK)
        self._views = {}
        self.n = 0
        self._t = 0
        self.frames = 0
        self.crc_errors = 0
        self.garbage = 0
        self.internal_errors = 0

    def poll(self):
        try:
            self._poll()
        except Exception:  # noqa: BLE001 - comms must never stop the control loop
            self.internal_errors += 1
            self.n = 0

    def _poll(self):
        now = self.clock.ticks_ms()
        port = self.port
        if port.any():
            k = port.readinto(self._chunk)
            if k:
                rx = self.rx
                for i in range(k):
                    if self.n >= _RX_SIZE:
                        self._shift(1)
                        self.garbage += 1
                    rx[self.n] = self._chunk[i]
                    self.n += 1
                self._t = now
        elif self.n and ticks_diff(now, self._t) > self.gap_ms:
            self.garbage += self.n
            self.n = 0
        self._parse()

    def _shift(self, k):
        rx = self.rx
        n = self.n
        for i in range(k, n):
            rx[i - k] = rx[i]
        self.n = n - k if n > k else 0

    def _parse(self):
        rx = self.rx
        while self.n >= 2:
            b0 = rx[0]
            if b0 == H0 and rx[1] == H1:
                if self.n < 4:
                    return
                ln = rx[2]
                if ln > _MAX_REQ:
                    self._shift(1)
                    self.garbage += 1
                    continue
                total = 6 + ln
                if self.n < total:
                    return
                c = crc16(rx, 2, 4 + ln)
                if rx[4 + ln] != (c & 0xFF) or rx[5 + ln] != (c >> 8):
                    self.crc_errors += 1
                    self._shift(1)
                    continue
                self.frames += 1
                self._answer(rx[3], ln)
                self._shift(total)
            elif b0 == JBD_START and self.jbd is not None and (rx[1] == 0xA5 or rx[1] == 0x5A):
                j = self.jbd
                total = j.frame_length(rx, self.n)
                if total == 0 or total > _RX_SIZE:
                    if total > _RX_SIZE:
                        self._shift(1)
                        self.garbage += 1
                        continue
                    return
                if self.n < total:
                    return
                if not j.valid(rx, total):
                    self.crc_errors += 1
                    self._shift(1)
                    continue
                self.frames += 1
                self._send(j.respond(rx, self.tx))
                self._shift(total)
            else:
                self._shift(1)
                self.garbage += 1

    # ---- answers --------------------------------------------------------
    def _answer(self, cmd, ln):
        tx = self.tx
        rx = self.rx
        p = 4
        if cmd == _CMD_SUMMARY and ln <= 1:
            # Version byte: 0 (or none) the 30-byte layout old displays
            # decode, 1 and above the newest this firmware has (LEN says which).
            n = self._summary(tx, p, rx[4] if ln else 0)
        elif cmd == CMD_CELLS and ln == 2:
            first = rx[4]
            count = rx[5]
            m = self.bms.meas
            if count < 1 or count > _MAX_CELLS_PER_REQ or first + count > m.n_cells:
                return self._error(_ERR_ARGS)
            tx[p] = first
            tx[p + 1] = count
            for i in range(count):
                c = first + i
                put16(tx, p + 2 + 2 * i, m.cell_mv[c] if m.cell_ok[c] else 0xFFFF)
            n = 2 + 2 * count
        elif cmd == _CMD_TEMPS and ln == 0:
            m = self.bms.meas
            k = m.n_temps if m.n_temps < MAX_TEMPS else MAX_TEMPS
            tx[p] = k
            for i in range(k):
                q = p + 1 + 4 * i
                tx[q] = m.temp_role[i]
                tx[q + 1] = m.temp_status[i]
                put16(tx, q + 2, m.temp_dc[i] & 0xFFFF)
            n = 1 + 4 * k
        elif cmd == _CMD_LEASE and ln == 0:
            ls = self.lease
            st = 0
            rem = -1
            if ls is not None:
                rem = ls.remaining_s()
                st = (3 if ls.blocked else 2) if ls.active else 1
            tx[p] = st
            put32(tx, p + 1, rem)   # -1: 0xFFFFFFFF, no lease
            n = 5
        elif cmd in (_CMD_SUMMARY, CMD_CELLS, _CMD_TEMPS, _CMD_LEASE):
            return self._error(_ERR_ARGS)
        else:
            return self._error(_ERR_COMMAND)
        self._frame(cmd | _RESP, n)

    def _error(self, code):
        self.tx[4] = code
        self._frame(_CMD_ERROR, 1)

    def _frame(self, cmd, n):
        tx = self.tx
        tx[0] = H0
        tx[1] = H1
        tx[2] = n
        tx[3] = cmd
        c = crc16(tx, 2, 4 + n)
        tx[4 + n] = c & 0xFF
        tx[5 + n] = c >> 8
        self._send(6 + n)

    def _send(self, n):
        v = self._views.get(n)
        if v is None:
            v = memoryview(self.tx)[:n]
            self._views[n] = v
        self.port.write(v)

    def _summary(self, tx, p, ver):
        b = self.bms
        m = b.meas
        put32(tx, p, m.pack_mv if m.pack_mv else m.sum_mv)
        put32(tx, p + 4, m.current_ma)  # put32 masks per byte: no big int
        put16(tx, p + 8, b.soc.soc_pm)
        put16(tx, p + 10, b.soc.soh_pm)
        # u8 fields saturate at 255 ("255 or more"): a 256S master's count
        # wrapped to 0 and cell 256's index to 0.  Version 1 has them whole.
        nc = m.n_cells
        hi = m.max_idx + 1
        lo = m.min_idx + 1
        tx[p + 12] = nc if nc < _U8_MAX else _U8_MAX
        put16(tx, p + 13, m.max_mv)
        tx[p + 15] = hi if hi < _U8_MAX else _U8_MAX
        put16(tx, p + 16, m.min_mv)
        tx[p + 18] = lo if lo < _U8_MAX else _U8_MAX
        put16(tx, p + 19, m.tmax[2] & 0xFFFF)
        put16(tx, p + 21, m.tmin[2] & 0xFFFF)
        tx[p + 23] = b.mode
        s = b.contactors.state
        r = 0
        for i in range(len(s)):
            if s[i]:
                r |= 1 << i
        tx[p + 24] = r
        prot = b.prot
        tx[p + 25] = prot.level
        w = 0
        st = prot.state
        for i in range(F.N_FAULTS):
            if st[i]:
                w |= 1 << i
        put32(tx, p + 26, w)
        if ver < 1:
            return _SUMMARY_LEN
        put16(tx, p + 30, nc)
        put16(tx, p + 32, hi)
        put16(tx, p + 34, lo)
        return _SUMMARY1_LEN
