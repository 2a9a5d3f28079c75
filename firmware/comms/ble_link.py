"""BLE framing: messages over one GATT characteristic, radio-free.

The GATT glue (``comms.ble_aioble``) hands every value the central writes to
``on_write(data)`` and sends what ``next_chunk(buf)`` returns as
notifications; everything else (framing, reassembly, dispatch, password gate,
live monitor, advertising name) lives here and is tested on the host.

Message (either direction)::

    type u8 | length u16 LE | payload[length] | CRC-16/Modbus u16 LE

The CRC covers type, length and payload.  A message is cut into chunks that
each fit one ATT write / notification (MTU - 3 bytes)::

    seq u8 | flags u8 | message bytes ...
    flags: bit7 START (first chunk), bit6 END (last chunk), bits 0-5 chunk
    index (0 for the first, +1 per chunk, wrapping at 64)

A response carries the sequence number of its request.  Reassembly is
strict: a chunk that is not the expected next one (other seq, index gap, no
START first), a message longer than MAX_PAYLOAD, a length that disagrees
with the END chunk or a bad CRC drops the message (counted) and, where the
sequence number is known, answers T_ERROR; an incomplete message is dropped
``timeout_ms`` after its last chunk.  A START chunk always begins a new
message, so a central that gave up can simply resend.

Types:
  0x01 / 0x81  Modbus request / response: the payload is a Modbus PDU
               (function code first, no address, no CRC), answered by the
               same register map as RS485 (``comms.modbus_pdu``).  Writes need
               the password (unlock via the auth registers) on the BLE
               channel's own session.
  0x02 / 0x82  ChangeBlueName: ASCII name, 1..MAX_NAME printable chars;
               needs the user role; answer: status u8 (0 ok, 1 locked,
               2 invalid).  ``name`` / ``name_changed`` tell the glue to
               re-advertise; the name persists through ``store``.
  0x03 / 0x83  Live monitor subscription: period u16 LE ms (0 = off,
               else 250..60000); answer: status u8, applied period u16 LE.
  0x90         Live notification: the ``live`` source's bytes (by default
               the Modbus monitor block: start register u16 BE, count u8,
               registers u16 BE), sent every period while the link is idle.
  0xFF         Error: code u8 (ERR_*), for the request's seq.

Only one message is in flight each way: a request that completes while the
previous answer is still being sent waits; a chunk arriving while a
complete request is still waiting is dropped with ERR_BUSY.  Buffers are
preallocated; the steady state (live notifications, Modbus reads) allocates
nothing.
"""
from micropython import const

from bms.ticks import ticks_add, ticks_diff
from comms.crc16 import crc16

T_MODBUS = const(0x01)
T_SET_NAME = const(0x02)
T_SUBSCRIBE = const(0x03)
T_RESPONSE = const(0x80)  # OR-ed into the request type
T_LIVE = const(0x90)
T_ERROR = const(0xFF)

ERR_CRC = const(1)
ERR_LENGTH = const(2)
ERR_TYPE = const(3)
ERR_BUSY = const(4)
ERR_SEQUENCE = const(5)

F_START = const(0x80)
F_END = const(0x40)
IDX_MASK = const(0x3F)
_CHUNK_HDR = const(2)
_MSG_HDR = const(3)
_MSG_CRC = const(2)
MAX_PAYLOAD = const(260)
_MSG_MAX = const(265)  # _MSG_HDR + MAX_PAYLOAD + _MSG_CRC
_ATT_MIN_MTU = const(23)
_ATT_MAX_MTU = const(517)

NAME_OK = const(0)
NAME_LOCKED = const(1)
NAME_INVALID = const(2)
_MAX_NAME = const(20)
NAME_KEY = "ble.name"

_LIVE_MIN_MS = const(250)
_LIVE_MAX_MS = const(60000)
TIMEOUT_MS = const(2000)


def chunk_size(mtu):
    """Message bytes per chunk for an ATT MTU."""
    if mtu < _ATT_MIN_MTU:
        mtu = _ATT_MIN_MTU
    if mtu > _ATT_MAX_MTU:
        mtu = _ATT_MAX_MTU
    return mtu - 3 - _CHUNK_HDR


def valid_name(name, n=-1):
    if n < 0:
        n = len(name)
    if not 1 <= n <= _MAX_NAME:
        return False
    for i in range(n):
        c = name[i]
        if c < 0x20 or c > 0x7E:
            return False
    return True


class BleLink:
    def __init__(self, handler, clock, live=None, auth=None, store=None, name=b"MPY-BMS",
                 mtu=_ATT_MIN_MTU, timeout_ms=TIMEOUT_MS, channel=1, user_role=1):
        self.handler = handler
        self.clock = clock
        self.live = live
        self.auth = auth
        self.store = store
        self.channel = channel      # bms.auth.CH_BLE
        self.user_role = user_role  # bms.auth.ROLE_USER
        self.timeout_ms = timeout_ms
        saved = store.get(NAME_KEY) if store is not None else None
        self.name = bytes(saved) if saved and valid_name(saved) else bytes(name)
        self.name_changed = False
        self.chunk = chunk_size(mtu)
        self.rx = bytearray(_MSG_MAX)
        self.tx = bytearray(_MSG_MAX)
        self._pdu = bytearray(MAX_PAYLOAD)
        self._payload = memoryview(self.rx)[_MSG_HDR:]  # one view, reused: no allocation
        self._pdu_view = memoryview(self._pdu)
        self.reset()
        # Counters.
        self.messages = 0
        self.bad_frames = 0
        self.crc_errors = 0
        self.timeouts = 0
        self.busy = 0
        self.notifications = 0
        self.internal_errors = 0

    # ---- connection -------------------------------------------------------
    def reset(self):
        """New connection or disconnect: drop all state, lock the BLE session."""
        self._rx_len = 0
        self._rx_active = False
        self._rx_ready = False
        self._rx_seq = 0
        self._rx_idx = 0
        self._rx_t = 0
        self._tx_len = 0
        self._tx_pos = 0
        self._tx_idx = 0
        self._tx_seq = 0
        self._err_seq = -1
        self._err_code = 0
        self._nseq = 0
        self.live_ms = 0
        self._live_due = 0
        if self.auth is not None:
            self.auth.lock(self.channel)

    def set_mtu(self, mtu):
        self.chunk = chunk_size(mtu)

    # ---- from the radio ----------------------------------------------------
    def on_write(self, data):
        """One value written by the central (a chunk); never raises."""
        try:
            self._on_write(data)
            self._service()
        except Exception:  # noqa: BLE001 - a bad frame must not stop the loop
            self.internal_errors += 1
            self._rx_active = False
            self._rx_ready = False

    def _drop(self, seq, code):
        self.bad_frames += 1
        self._rx_active = False
        if seq >= 0 and self._err_seq < 0:
            self._err_seq = seq
            self._err_code = code

    def _on_write(self, data):
        n = len(data)
        now = self.clock.ticks_ms()
        if n < _CHUNK_HDR:
            self.bad_frames += 1
            return
        seq = data[0]
        f = data[1]
        idx = f & IDX_MASK
        if self._rx_ready:
            # The previous request is not answered yet: the central must wait.
            self.busy += 1
            self._drop(seq, ERR_BUSY)
            return
        if f & F_START:
            if idx != 0:
                self._drop(seq, ERR_SEQUENCE)
                return
            self._rx_active = True
            self._rx_seq = seq
            self._rx_idx = 0
            self._rx_len = 0
        elif not self._rx_active:
            self._drop(-1, 0)  # a stray continuation: nothing to answer
            return
        elif seq != self._rx_seq or idx != self._rx_idx:
            self._drop(self._rx_seq, ERR_SEQUENCE)
            return
        self._rx_t = now
        self._rx_idx = (self._rx_idx + 1) & IDX_MASK
        k = self._rx_len
        if k + n - _CHUNK_HDR > _MSG_MAX:
            self._drop(seq, ERR_LENGTH)
            return
        rx = self.rx
        for i in range(_CHUNK_HDR, n):
            rx[k] = data[i]
            k += 1
        self._rx_len = k
        if k >= _MSG_HDR:
            plen = rx[1] | (rx[2] << 8)
            if plen > MAX_PAYLOAD:
                self._drop(seq, ERR_LENGTH)
                return
            total = _MSG_HDR + plen + _MSG_CRC
            if k > total or (f & F_END and k != total):
                self._drop(seq, ERR_LENGTH)
                return
        elif f & F_END:
            self._drop(seq, ERR_LENGTH)
            return
        if f & F_END:
            c = crc16(rx, 0, k - _MSG_CRC)
            if rx[k - 2] != (c & 0xFF) or rx[k - 1] != (c >> 8):
                self.crc_errors += 1
                self._drop(seq, ERR_CRC)
                return
            self._rx_active = False
            self._rx_ready = True
            self.messages += 1

    # ---- work -------------------------------------------------------------
    def poll(self):
        """Timeouts, waiting requests, live notifications; never raises."""
        try:
            now = self.clock.ticks_ms()
            if self.auth is not None:
                self.auth.poll()
            if self._rx_active and ticks_diff(now, self._rx_t) > self.timeout_ms:
                self._rx_active = False
                self.timeouts += 1
            self._service()
            if (self.live_ms and self.live is not None and self._tx_len == 0
                    and not self._rx_ready and ticks_diff(now, self._live_due) >= 0):
                self._live_due = ticks_add(now, self.live_ms)
                n = self.live(self._pdu)
                self._nseq = (self._nseq + 1) & 0xFF
                self._start_tx(self._nseq, T_LIVE, self._pdu, n)
                self.notifications += 1
        except Exception:  # noqa: BLE001
            self.internal_errors += 1

    def _service(self):
        if self._tx_len:
            return
        if self._err_seq >= 0:
            self._pdu[0] = self._err_code
            self._start_tx(self._err_seq, T_ERROR, self._pdu, 1)
            self._err_seq = -1
            return
        if self._rx_ready:
            self._rx_ready = False
            self._dispatch()

    def _dispatch(self):
        rx = self.rx
        typ = rx[0]
        plen = rx[1] | (rx[2] << 8)
        seq = self._rx_seq
        out = self._pdu
        payload = self._payload
        if typ == T_MODBUS:
            n = self.handler(payload, plen, self._pdu_view)
            if n <= 0:
                # No Modbus answer (an empty PDU, or one beyond Modbus's 253
                # bytes that still fits a message): say so, never leave the
                # central waiting for its own timeout.
                out[0] = ERR_LENGTH
                self._start_tx(seq, T_ERROR, out, 1)
                return
        elif typ == T_SET_NAME:
            out[0] = self._set_name(payload, plen)
            n = 1
        elif typ == T_SUBSCRIBE:
            ms = payload[0] | (payload[1] << 8) if plen == 2 else -1
            if ms < 0:
                out[0] = 1
            else:
                if ms:
                    ms = _LIVE_MIN_MS if ms < _LIVE_MIN_MS else _LIVE_MAX_MS if ms > _LIVE_MAX_MS else ms
                self.live_ms = ms
                self._live_due = ticks_add(self.clock.ticks_ms(), ms)
                out[0] = 0
            out[1] = self.live_ms & 0xFF
            out[2] = self.live_ms >> 8
            n = 3
        else:
            out[0] = ERR_TYPE
            self._start_tx(seq, T_ERROR, out, 1)
            return
        self._start_tx(seq, typ | T_RESPONSE, out, n)

    def _set_name(self, payload, n):
        if not valid_name(payload, n):
            return NAME_INVALID
        if self.auth is not None and not self.auth.allowed(self.channel, self.user_role):
            return NAME_LOCKED
        self.name = bytes(payload[:n])
        self.name_changed = True
        if self.store is not None:
            self.store[NAME_KEY] = self.name
        return NAME_OK

    # ---- to the radio -------------------------------------------------------
    def _start_tx(self, seq, typ, payload, n):
        tx = self.tx
        tx[0] = typ
        tx[1] = n & 0xFF
        tx[2] = n >> 8
        for i in range(n):
            tx[_MSG_HDR + i] = payload[i]
        k = _MSG_HDR + n
        c = crc16(tx, 0, k)
        tx[k] = c & 0xFF
        tx[k + 1] = c >> 8
        self._tx_len = k + _MSG_CRC
        self._tx_pos = 0
        self._tx_idx = 0
        self._tx_seq = seq

    def pending(self):
        return self._tx_len != 0

    def next_chunk(self, buf):
        """Write the next chunk to ``buf`` (>= chunk + 2 bytes); its length, 0 if
        none.  Never raises: a request served from here (it waited for the
        line) fails like one served from ``on_write``, counted."""
        if not self._tx_len:
            return 0
        pos = self._tx_pos
        n = self._tx_len - pos
        if n > self.chunk:
            n = self.chunk
        if n > len(buf) - _CHUNK_HDR:
            n = len(buf) - _CHUNK_HDR
        f = self._tx_idx & IDX_MASK
        if pos == 0:
            f |= F_START
        if pos + n == self._tx_len:
            f |= F_END
        buf[0] = self._tx_seq
        buf[1] = f
        tx = self.tx
        for i in range(n):
            buf[_CHUNK_HDR + i] = tx[pos + i]
        self._tx_pos = pos + n
        self._tx_idx += 1
        if self._tx_pos >= self._tx_len:
            self._tx_len = 0
            try:
                self._service()  # a request that waited for the line
            except Exception:  # noqa: BLE001 - never into the radio's transmit loop
                self.internal_errors += 1
        return _CHUNK_HDR + n


def monitor_live(regmap):
    """A ``live`` source: the Modbus monitor block, as the register map reads it."""
    from comms.registers import A_MON
    from comms.regs.monitor import SIZE as MON_SIZE

    def fill(out):
        out[0] = A_MON >> 8
        out[1] = A_MON & 0xFF
        out[2] = MON_SIZE
        regmap.read(A_MON, MON_SIZE, out, 3)
        return 3 + 2 * MON_SIZE
    return fill
