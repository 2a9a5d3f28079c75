"""Microchip MCP2515 stand-alone CAN controller over SPI (DS20001801).

Interface (the project's CAN-controller shape, after machine.CAN):
    send(can_id, data, ext=False, prio=None) -> True if queued, False if no
        TX buffer is free (never blocks)
    recv(buf) -> -1 if no frame, else the DLC; the frame is in buf
        (bytearray(8)), its id / ext / rtr in rx_id, rx_ext, rx_rtr
    set_filters([(id, mask, ext), ...])  ([] or None: accept everything)
    state() -> STATE_ERROR_ACTIVE / _WARNING / _PASSIVE / STATE_BUS_OFF
    restart()   full re-initialisation (also the bus-off recovery)
    counters tec, rec, rx_overflow, bus_off_count, tx_count, rx_count
send and recv use preallocated buffers only.

Bit timing (section 5): TQ = 2 (BRP + 1) / Fosc; a bit is SyncSeg (1 TQ)
+ PropSeg + PS1 + PS2 with 8..25 TQ, PS2 >= 2, PropSeg + PS1 >= PS2,
PS2 > SJW.  ``bit_timing`` picks the most TQ per bit whose sample point is
closest to 87.5 % (CiA 301) and returns CNF1..3.

Transmit order: with ``fifo=True`` (default) each new frame gets a lower TXP
than every frame still pending, so frames leave in the order they were
sent - segmented protocol messages stay in order.  When the lowest level is
taken send() returns False until the queue drains.  ``fifo=False`` uses the
``prio`` argument (TXP 0..3) instead; the chip sends the highest TXP first,
then the highest buffer number.

Receive: RXB0 with rollover (BUKT) into RXB1; when both are full the older
frame is returned first.  Overflows (EFLG RX0OVR/RX1OVR) are counted and
cleared.  The chip recovers from bus-off by itself after 128 x 11 recessive
bits; ``restart()`` resets and reconfigures it (TEC/REC back to 0).

Waits (``wait_us``, the injected ``time.sleep_us``; only in init and mode
changes): 128 us after RESET before the first access (the oscillator
start-up timer holds the chip in reset for 128 OSC1 cycles, section 8.1:
128 us at the slowest 1 MHz clock, 16 us at 8 MHz; Zephyr's driver waits
128 us), and 50 us between CANSTAT polls while a mode change completes
(bounded at 1 ms, as Zephyr).
"""
from micropython import const

STATE_ERROR_ACTIVE = const(0)
STATE_ERROR_WARNING = const(1)
STATE_ERROR_PASSIVE = const(2)
STATE_BUS_OFF = const(3)

MODE_NORMAL = const(0)
MODE_SLEEP = const(1)
MODE_LOOPBACK = const(2)
MODE_LISTEN = const(3)
MODE_CONFIG = const(4)

# SPI instructions
_INT_VERIFY = const(64)      # every 64th "no frame" from the INT pin is checked over SPI
_INT_MAX_MISSES = const(3)
_I_RESET = const(0xC0)
_I_READ = const(0x03)
_I_WRITE = const(0x02)
_I_BITMOD = const(0x05)
_I_READ_STATUS = const(0xA0)
_I_RX_STATUS = const(0xB0)
_I_READ_RX = const(0x90)
_I_LOAD_TX = const(0x40)
_I_RTS = const(0x80)

# Registers
_R_RXF0 = const(0x00)
_R_CANSTAT = const(0x0E)
_R_CANCTRL = const(0x0F)
_R_TEC = const(0x1C)
_R_RXM0 = const(0x20)
_R_RXM1 = const(0x24)
_R_CNF3 = const(0x28)
_R_CANINTE = const(0x2B)
_R_CANINTF = const(0x2C)
_R_EFLG = const(0x2D)
_R_TXB0CTRL = const(0x30)
_R_RXB0CTRL = const(0x60)
_R_RXB1CTRL = const(0x70)

_INT_RX0 = const(0x01)
_INT_RX1 = const(0x02)
_INT_ERR = const(0x20)
_INT_MERR = const(0x80)
_EFLG_RX1OVR = const(0x80)
_EFLG_RX0OVR = const(0x40)
_EFLG_TXBO = const(0x20)
_EFLG_TXEP = const(0x10)
_EFLG_RXEP = const(0x08)
_EFLG_EWARN = const(0x01)
TXREQ = const(0x08)
EIO = const(5)
ENODEV = const(19)
_T_RESET_US = const(128)
_T_MODE_POLL_US = const(50)
_MODE_POLLS = const(20)
FILTER_ADDR = (0x00, 0x04, 0x08, 0x10, 0x14, 0x18)


def bit_timing(xtal_hz, bitrate, sample_pm=875):
    """(cnf1, cnf2, cnf3) for an exact bit rate; ValueError if none exists."""
    best = None
    for brp in range(64):
        div = 2 * (brp + 1) * bitrate
        if xtal_hz % div:
            continue
        ntq = xtal_hz // div
        if ntq < 8 or ntq > 25:
            continue
        ps2 = ntq - (ntq * sample_pm + 500) // 1000
        if ps2 < 2:
            ps2 = 2
        if ps2 > 8:
            ps2 = 8
        tseg1 = ntq - 1 - ps2
        ps1 = tseg1 // 2
        prop = tseg1 - ps1
        if prop > 8:
            prop = 8
            ps1 = tseg1 - 8
        if ps1 > 8 or ps1 < 1 or prop < 1 or tseg1 < ps2:
            continue
        sjw = ps2 - 1
        if sjw > 4:
            sjw = 4
        if sjw > ps1:
            sjw = ps1
        sp = (1 + tseg1) * 1000 // ntq
        score = (abs(sp - sample_pm), -ntq)
        if best is None or score < best[0]:
            best = (score, ((sjw - 1) << 6) | brp, 0x80 | ((ps1 - 1) << 3) | (prop - 1), ps2 - 1)
    if best is None:
        raise ValueError("no MCP2515 bit timing for %d bit/s at %d Hz" % (bitrate, xtal_hz))
    return best[1], best[2], best[3]


def _groups(f):
    """The two (mask bytes, [(id, ext)]) groups of RXM0 / RXM1 for the
    filter list ``f``; ValueError if the chip cannot hold it."""
    b = bytearray(4)
    groups = []  # [(mask bytes, [(id, ext)])]
    for fid, mask, ext in f:
        _enc_id(b, 0, mask, ext, True)
        key = bytes(b)
        for g in groups:
            if g[0] == key:
                g[1].append((fid, ext))
                break
        else:
            groups.append((key, [(fid, ext)]))
    if len(groups) == 1 and len(groups[0][1]) <= 6:
        mask, ids = groups[0]
        return (mask, ids[:2]), (mask, ids[2:] or ids[:1])
    if len(groups) == 2:
        a, c = groups
        if len(a[1]) > 2:
            a, c = c, a
        if len(a[1]) > 2 or len(c[1]) > 4:
            raise ValueError("filters: at most 2 + 4 per mask")
        return a, c
    raise ValueError("filters: at most 2 distinct masks, 6 filters")


def _enc_id(b, o, can_id, ext, mask=False):
    """Four SIDH/SIDL/EID8/EID0 bytes of an id (or a mask) into b[o:o+4]."""
    if ext:
        sid = can_id >> 18
        b[o] = (sid >> 3) & 0xFF
        b[o + 1] = ((sid & 7) << 5) | (0 if mask else 0x08) | ((can_id >> 16) & 3)
        b[o + 2] = (can_id >> 8) & 0xFF
        b[o + 3] = can_id & 0xFF
    else:
        b[o] = (can_id >> 3) & 0xFF
        b[o + 1] = (can_id & 7) << 5
        b[o + 2] = 0
        b[o + 3] = 0


class MCP2515:
    def __init__(self, spi, cs, xtal_hz=16000000, bitrate=500000, mode=MODE_NORMAL,
                 fifo=True, one_shot=False, retry_limit=3, wait_us=None, int_pin=None):
        self.spi = spi
        self.cs = cs
        self.int_pin = int_pin  # the chip's INT output (low: an enabled flag is set), or None
        self.int_misses = 0
        self._int_n = 0
        self.wait_us = wait_us  # time.sleep_us on a board; None: no waits
        self.xtal_hz = xtal_hz
        self.bitrate = bitrate
        self.cnf = bit_timing(xtal_hz, bitrate)
        self.mode = mode
        self.fifo = fifo
        self.one_shot = one_shot
        self.retry_limit = retry_limit
        self.filters = None
        self.rx_id = 0
        self.rx_ext = False
        self.rx_rtr = False
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        self.bus_off_count = 0
        self.tx_count = 0
        self.rx_count = 0
        self.tx_full = 0
        self._bus_off = False
        self._b1_first = False
        self._txp = bytearray(3)
        self._buf = bytearray(16)
        mv = memoryview(self._buf)
        self._v = [mv[:n] for n in range(17)]
        self._rx = bytearray(13)
        mvr = memoryview(self._rx)
        self._rv = [mvr[:n] for n in range(14)]  # slicing allocates: cache once
        self._one = bytearray(1)
        # The two hot transfers (a status read, an RX buffer read) are one
        # full-duplex write_readinto each (``_duplex``): on an RP2040 every
        # Python-level call costs about 10 us, more than their bytes take at
        # 8 MHz, and the write-then-read path made four calls per transfer.
        self._sq = bytearray(2)
        self._sa = bytearray(2)
        q0 = bytearray(14)
        q1 = bytearray(14)
        q0[0] = _I_READ_RX
        q1[0] = _I_READ_RX | 4
        self._rq = (q0, q1)
        self._ra = bytearray(14)
        cs.value(1)

    # ---- SPI primitives --------------------------------------------------------
    def _frame(self, out, into):
        """Write ``out``, then read into ``into`` (if any), in one CS frame."""
        cs = self.cs
        cs.value(0)
        try:
            self.spi.write(out)
            if into is not None:
                self.spi.readinto(into, 0)
        finally:
            cs.value(1)

    def _duplex(self, out, into):
        """Clock ``out`` and read as many bytes into ``into``, one CS frame."""
        cs = self.cs
        cs.value(0)
        try:
            self.spi.write_readinto(out, into)
        finally:
            cs.value(1)

    def _xfer(self, n_out, n_in):
        """Write _buf[0:n_out], then read n_in bytes into _rx, in one CS frame."""
        self._frame(self._v[n_out], self._rv[n_in] if n_in else None)

    def _xfer_byte(self, n_out):
        """Write _buf[0:n_out], then read one byte (kept apart from _rx)."""
        self._frame(self._v[n_out], self._one)
        return self._one[0]

    def _cmd(self, b):
        self._buf[0] = b
        self._xfer(1, 0)

    def read_reg(self, addr):
        b = self._buf
        b[0] = _I_READ
        b[1] = addr
        return self._xfer_byte(2)

    def _read2(self, addr):
        """Two registers from addr into _rx[0:2]."""
        b = self._buf
        b[0] = _I_READ
        b[1] = addr
        self._xfer(2, 2)
        return self._rx

    def write_regs(self, addr, data):
        b = self._buf
        b[0] = _I_WRITE
        b[1] = addr
        n = len(data)
        for i in range(n):
            b[2 + i] = data[i]
        self._xfer(2 + n, 0)

    def write_reg(self, addr, v):
        b = self._buf
        b[0] = _I_WRITE
        b[1] = addr
        b[2] = v
        self._xfer(3, 0)

    def bit_modify(self, addr, mask, v):
        b = self._buf
        b[0] = _I_BITMOD
        b[1] = addr
        b[2] = mask
        b[3] = v
        self._xfer(4, 0)

    def _status(self, instr):
        self._sq[0] = instr
        self._duplex(self._sq, self._sa)
        return self._sa[1]

    def read_status(self):
        return self._status(_I_READ_STATUS)

    def rx_status(self):
        return self._status(_I_RX_STATUS)

    # ---- set-up ----------------------------------------------------------------
    def _wait(self, us):
        w = self.wait_us
        if w is not None:
            w(us)

    def _set_mode(self, mode):
        self.bit_modify(_R_CANCTRL, 0xE0 | 0x08, (mode << 5) | (0x08 if self.one_shot else 0))
        for i in range(_MODE_POLLS):  # bounded: the switch waits for bus idle
            if i:
                self._wait(_T_MODE_POLL_US)
            if self.read_reg(_R_CANSTAT) >> 5 == mode:
                return
        raise OSError(EIO)

    def init(self):
        """Reset and configure (bit timing, RX buffers, filters, mode);
        retried up to retry_limit times, then OSError."""
        for attempt in range(self.retry_limit + 1):
            try:
                self._init_once()
                return
            except OSError:
                if attempt == self.retry_limit:
                    raise

    def _init_once(self):
        self._cmd(_I_RESET)
        self._wait(_T_RESET_US)
        if self.read_reg(_R_CANSTAT) >> 5 != MODE_CONFIG:
            raise OSError(ENODEV)  # no chip answering (MISO stuck)
        c1, c2, c3 = self.cnf
        ie = _INT_RX0 | _INT_RX1 | _INT_ERR | _INT_MERR
        # CNF3, CNF2, CNF1, CANINTE are consecutive from 0x28.
        b = self._buf
        b[0] = _I_WRITE
        b[1] = _R_CNF3
        b[2] = c3
        b[3] = c2
        b[4] = c1
        b[5] = ie
        self._xfer(6, 0)
        got = self._rx
        b[0] = _I_READ
        b[1] = _R_CNF3
        self._xfer(2, 4)
        if got[0] != c3 or got[1] != c2 or got[2] != c1 or got[3] != ie:
            raise OSError(EIO)
        self._apply_filters()
        self._set_mode(self.mode)
        self._txp[0] = self._txp[1] = self._txp[2] = 0
        self._b1_first = False
        self._bus_off = False
        self.tec = 0
        self.rec = 0

    def _apply_filters(self):
        """Program masks and filters (configuration mode only)."""
        f = self.filters
        b = bytearray(8)
        if not f:
            self.write_reg(_R_RXB0CTRL, 0x60 | 0x04)  # receive any, rollover
            self.write_reg(_R_RXB1CTRL, 0x60)
            return
        g0, g1 = _groups(f)
        self.write_regs(_R_RXM0, g0[0])
        self.write_regs(_R_RXM1, g1[0])
        for slot in range(6):
            ids = g0[1] if slot < 2 else g1[1]
            k = slot if slot < 2 else slot - 2
            fid, ext = ids[k] if k < len(ids) else ids[0]  # duplicate, never widen
            _enc_id(b, 0, fid, ext)
            self.write_regs(FILTER_ADDR[slot], memoryview(b)[:4])
        self.write_reg(_R_RXB0CTRL, 0x04)
        self.write_reg(_R_RXB1CTRL, 0x00)

    def set_filters(self, filters):
        """[(id, mask, ext)]: a frame is accepted when (id & mask) matches."""
        f = list(filters) if filters else None
        if f:
            _groups(f)   # ValueError before anything changes
        # Kept before the chip is touched: a chip that does not answer now
        # gets them with its next init (BusGuard restarts it).
        self.filters = f
        self._set_mode(MODE_CONFIG)
        try:
            self._apply_filters()
        finally:
            self._set_mode(self.mode)

    def restart(self):
        self.init()

    def abort(self):
        """Abort every pending transmission (ABAT)."""
        self.bit_modify(_R_CANCTRL, 0x10, 0x10)
        self.bit_modify(_R_CANCTRL, 0x10, 0x00)

    # ---- frames (allocation-free) -------------------------------------------
    def send(self, can_id, data, ext=False, prio=None):
        n = len(data)
        if n > 8 or can_id < 0 or can_id > (0x1FFFFFFF if ext else 0x7FF):
            raise ValueError("CAN id or length")
        st = self.read_status()
        busy = ((st >> 2) & 1) | ((st >> 3) & 2) | ((st >> 4) & 4)  # TXREQ 0/1/2
        k = 0
        while k < 3 and busy & (1 << k):
            k += 1
        if k == 3:
            self.tx_full += 1
            return False
        if self.fifo:
            txp = 3
            tp = self._txp
            for j in range(3):
                if busy & (1 << j) and tp[j] <= txp:
                    txp = tp[j] - 1
            if txp < 0:
                self.tx_full += 1
                return False
        else:
            txp = 0 if prio is None else prio & 3
        b = self._buf
        b[0] = _I_LOAD_TX | (k << 1)
        _enc_id(b, 1, can_id, ext)
        b[5] = n
        for i in range(n):
            b[6 + i] = data[i]
        self._xfer(6 + n, 0)
        b[0] = _I_WRITE
        b[1] = _R_TXB0CTRL + (k << 4)
        b[2] = TXREQ | txp
        self._xfer(3, 0)
        self._txp[k] = txp
        self.tx_count = (self.tx_count + 1) & 0x3FFFFFFF   # a small int (months of frames)
        return True

    def recv(self, buf):
        full = self._status(_I_RX_STATUS) >> 6
        if full == 0:
            return -1
        if full == 3:
            self._check_overflow()
            k = 1 if self._b1_first else 0
            self._b1_first = k == 0  # RXB1 (now older) goes next
        elif full == 2:
            k = 1
            self._b1_first = False
        else:
            k = 0
            self._b1_first = False
        # READ RX BUFFER n, then SIDH SIDL EID8 EID0 DLC D0..D7; clears RXnIF.
        r = self._ra
        self._duplex(self._rq[k], r)
        sidl = r[2]
        sid = (r[1] << 3) | (sidl >> 5)
        if sidl & 0x08:
            self.rx_id = (sid << 18) | ((sidl & 3) << 16) | (r[3] << 8) | r[4]
            self.rx_ext = True
            self.rx_rtr = bool(r[5] & 0x40)
        else:
            self.rx_id = sid
            self.rx_ext = False
            self.rx_rtr = bool(sidl & 0x10)
        dlc = r[5] & 0x0F
        if dlc > 8:
            dlc = 8
        for i in range(dlc):
            buf[i] = r[6 + i]
        self.rx_count = (self.rx_count + 1) & 0x3FFFFFFF
        return dlc

    def any(self):
        return (self.rx_status() >> 6) != 0

    def rx_pending(self):
        """A frame may be waiting.  With the INT pin: high means both RX
        buffers are empty (RX0IE/RX1IE are enabled), a 10 us pin read instead
        of a 110 us SPI status read on an RP2040; low is only a hint (an error
        flag pulls it low too), answered by ``recv``'s own status read (checking
        it here too read the status twice per frame).  Every _INT_VERIFY-th
        high reading is checked over SPI anyway: a frame found while the pin
        still reads high is a miss, and after _INT_MAX_MISSES the pin is no
        longer trusted (a broken INT wire costs CPU, never frames)."""
        p = self.int_pin
        if p is not None and p.value():
            self._int_n += 1
            if self._int_n < _INT_VERIFY:
                return False
            self._int_n = 0
            if (self.rx_status() >> 6) == 0:
                return False
            if p.value():       # still high with a frame there: not a race
                self.int_misses += 1
                if self.int_misses >= _INT_MAX_MISSES:
                    self.int_pin = None
            return True
        if p is not None:
            return True
        return (self.rx_status() >> 6) != 0

    # ---- errors -----------------------------------------------------------------
    def _check_overflow(self):
        r = self._read2(_R_CANINTF)
        eflg = r[1]
        if eflg & (_EFLG_RX0OVR | _EFLG_RX1OVR):
            if eflg & _EFLG_RX0OVR:
                self.rx_overflow += 1
            if eflg & _EFLG_RX1OVR:
                self.rx_overflow += 1
            self.bit_modify(_R_EFLG, _EFLG_RX0OVR | _EFLG_RX1OVR, 0)
        return eflg

    def state(self):
        """Read TEC/REC/EFLG; also OSError if the chip left its mode (a
        brown-out reset puts it back into configuration mode, deaf)."""
        b = self._buf
        b[0] = _I_READ
        b[1] = _R_TEC
        self._xfer(2, 3)
        r = self._rx
        self.tec = r[0]
        self.rec = r[1]
        if r[2] >> 5 != self.mode:
            raise OSError(EIO)
        r = self._read2(_R_CANINTF)
        intf = r[0]
        eflg = r[1]
        if intf & (_INT_ERR | _INT_MERR):
            self.bit_modify(_R_CANINTF, _INT_ERR | _INT_MERR, 0)
        if eflg & (_EFLG_RX0OVR | _EFLG_RX1OVR):
            self._check_overflow()
        if eflg & _EFLG_TXBO:
            if not self._bus_off:
                self.bus_off_count += 1
            self._bus_off = True
            return STATE_BUS_OFF
        self._bus_off = False
        if eflg & (_EFLG_TXEP | _EFLG_RXEP):
            return STATE_ERROR_PASSIVE
        if eflg & _EFLG_EWARN:
            return STATE_ERROR_WARNING
        return STATE_ERROR_ACTIVE
