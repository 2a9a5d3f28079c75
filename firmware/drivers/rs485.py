"""RS485 half-duplex port: a machine.UART plus a DE/RE direction pin.

MicroPython's UART has no RS485 mode on rp2 or esp32, so the wrapper drives
the transceiver itself.  With a ``timer`` (a board: ``machine.Timer``):
``de.on(); uart.write(b)`` (into the UART's TX ring buffer, which must hold a
whole reply) and a one-shot timer drops DE once the reply has had its wire
time and the UART reports it done (``txdone``; the timer looks again one
character later if not): the main loop goes on while the reply is on the
wire.  Blocking until the UART was done held the loop 26 ms for a 10-register
Modbus reply at 9600 baud and 266 ms for 125 registers (emulated RP2040).
Without a timer (host fakes): ``uart.flush()`` then ``de.off()``; ``flush()``
blocks until the UART has shifted the data out (do not rely on IRQ_TXIDLE on
rp2: it fires when the FIFO empties, with the last character still in the
shift register).  An optional ``tail_us`` after the end covers ports that
report done one character early.  /RE is expected to be tied to DE, so our
own transmission is not echoed back.

With an ``rx_timer`` (a board: a virtual ``machine.Timer`` run as a hard
IRQ) the port has an arrival watch: ``rx_watch(True)`` starts a look at the
UART's count every 250 us that notes when it changed, and each read sets
``rx_age``, how long before its end the last byte read had arrived at the
latest (0 when the watch had not seen it).  The Modbus server runs it while
a frame comes in, so a request read late inside a task is timed from its
arrival.

Port interface shared by every byte link (RS485, sim pty, BLE, display):
    any() -> int, readinto(buf) -> n or None, write(buf) -> n, flush()

Modbus RTU timing (Modbus over serial line V1.02, 2.5.1.1): a character is
``bits`` long on the wire: start + 8 data + parity + stop bits, i.e. 10 for
8N1 (the manuals' setting) and 11 for 8E1/8O1/8N2 (``char_bits``).  The
spec's "11-bit character" is its default 8E1 line, not a rule: timing with
11 bits on an 8N1 line waits 10 % too long for every frame end.  Frames are
separated by 3.5 characters of silence and a gap of more than 1.5 characters
inside a frame is an error.  Above 19200 baud the spec fixes t1.5 = 750 us
and t3.5 = 1750 us.
"""
from micropython import const

from drivers.softirq import Guarded, keep

_MODBUS_FIXED_BAUD = const(19200)
_T15_FIXED_US = const(750)
_T35_FIXED_US = const(1750)
_GUARD_US = const(200)      # after the computed end, before asking the UART
_FLUSH_WAIT_MAX = const(5000)   # x 100 us: flush() waits at most 0.5 s for the timer
RX_WATCH_US = const(250)    # the arrival watch's period (``rx_timer``)


def char_bits(data=8, parity=None, stop=1):
    """Bits of one character on the wire for a UART setting (``machine.UART`` names)."""
    return 1 + data + (0 if parity is None else 1) + stop


def char_us(baud, bits=10):
    """Time of one character in us, rounded up."""
    if baud <= 0:
        raise ValueError("baud")
    return (bits * 1000000 + baud - 1) // baud


def t15_us(baud, bits=10):
    if baud > _MODBUS_FIXED_BAUD:
        return _T15_FIXED_US
    return (bits * 1500000 + baud - 1) // baud


def t35_us(baud, bits=10):
    if baud > _MODBUS_FIXED_BAUD:
        return _T35_FIXED_US
    return (bits * 3500000 + baud - 1) // baud


def _ticks():
    import time
    if hasattr(time, "ticks_us"):
        return time.ticks_us, time.ticks_diff, getattr(time, "sleep_us", None)
    # host (CPython): same wrap-around semantics on a monotonic clock
    return ((lambda: int(time.monotonic() * 1000000) & 0x3FFFFFFF),
            (lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000), None)


class Rs485:
    def __init__(self, uart, de, baud=9600, bits=10, tail_us=0, ticks_us=None,
                 ticks_diff=None, sleep_us=None, timer=None, later_timer=None,
                 rx_timer=None, rx_watch_us=RX_WATCH_US):
        self.uart = uart
        self.de = de
        self._timer = timer
        self._release_cb = Guarded(self._release)   # made once: the timer callback
        self._later_timer = later_timer    # for ``later`` (the Modbus server's t3.5)
        self._later_fn = None
        self._later_cb = Guarded(self._later_fire)
        self.tx_busy = False               # DE is up for a reply still on the wire
        self.baud = baud
        self.bits = bits
        self.tail_us = tail_us
        if ticks_us is None or ticks_diff is None:
            t_us, t_diff, s_us = _ticks()
            ticks_us = ticks_us or t_us
            ticks_diff = ticks_diff or t_diff
            sleep_us = sleep_us or s_us
        self._ticks_us = ticks_us
        self._ticks_diff = ticks_diff
        self._sleep_us = sleep_us
        self.t15 = t15_us(baud, bits)
        self.t35 = t35_us(baud, bits)
        self.last_rx_us = ticks_us()
        self.tx_bytes = 0
        self.rx_bytes = 0
        # The arrival watch (see ``_rx_look``): the count the UART held at
        # the watch's last look (-1: none since the last read) and when it
        # became that.
        self._rx_n = -1
        self._rx_at = self.last_rx_us
        self._rx_timer = rx_timer
        self._rx_period = rx_watch_us
        self._rx_look_cb = self._rx_look    # bound once: started inside tasks
        # us between the arrival of the last byte read (at the latest) and
        # the end of that read: 0 without the watch or when it had not looked.
        self.rx_age = 0
        de.off()  # receive by default: never hold the bus
        if rx_timer is None:
            self.rx_watch = None     # no watch: the server times from its reads

    # ---- port interface ----------------------------------------------------
    def any(self):
        return self.uart.any()

    def readinto(self, buf):
        # Only what has arrived: a UART read waits out its inter-character
        # timeout while bytes keep coming, so reading a full buffer held the
        # main loop for the whole incoming frame (8 ms for a Modbus read
        # request at 9600 baud on an RP2040, 266 ms for a 255-byte write).
        k = self.uart.any()
        if k <= 0:
            return None
        # The count first, its time after: a look of the watch in between
        # only makes the time later (a shorter silence, never a longer one).
        seen = self._rx_n
        at = self._rx_at
        n = self.uart.readinto(buf, k if k < len(buf) else len(buf))
        self._rx_n = -1      # whatever comes next is stamped by a later look
        if n:
            self.rx_bytes += n
            now = self._ticks_us()
            self.last_rx_us = now
            # The watch saw the UART hold these k bytes at ``at``: the last
            # of them had arrived by then, however late this read is.
            age = self._ticks_diff(now, at) if seen == k else 0
            self.rx_age = age if age > 0 else 0
            if age > 0:
                self.last_rx_us = at
        return n

    def rx_watch(self, on):
        """Start (``on``) or stop the arrival watch.  The Modbus server runs it
        from a frame's first bytes to its end only: a look every 250 us cost
        13 % of the CPU on an RP2040 (emulated) when it ran all the time."""
        tm = self._rx_timer
        self._rx_n = -1
        if on:
            tm.init(mode=tm.PERIODIC, period=self._rx_period, tick_hz=1000000,
                    hard=True, callback=self._rx_look_cb)
        else:
            tm.deinit()

    def _rx_look(self, _t):
        """The arrival watch (``rx_timer``: a hard periodic timer, a few
        hundred us): when the UART's count changed since its last look, note
        when.  A control task reads the port only between its steps, up to
        6 ms apart on an RP2040 (emulated), and a silence timed from that
        read made a request's reply that much later; ``last_rx_us`` is this
        time instead (an upper bound on the arrival of the last byte read,
        so the silence measured from it is still a lower bound).  In a hard
        IRQ: no allocation, nothing raised out of it."""
        try:
            k = self.uart.any()
            if k != self._rx_n:
                self._rx_n = k
                self._rx_at = self._ticks_us()
        except KeyboardInterrupt:
            keep()
        except Exception:  # noqa: BLE001 - never out of a hard IRQ
            pass

    def write(self, buf):
        de = self.de
        tm = self._timer
        de.on()
        if tm is not None:
            try:
                n = self.uart.write(buf)
                us = (n or 0) * char_us(self.baud, self.bits) + self.tail_us
                self.tx_busy = True
                self._arm(us + _GUARD_US)
            except Exception:
                self.tx_busy = False
                de.off()  # the UART or the timer raised: release the bus now
                raise
        else:
            try:
                n = self.uart.write(buf)
                self.uart.flush()
                if self.tail_us and self._sleep_us is not None:
                    self._sleep_us(self.tail_us)
            finally:
                de.off()  # even if the UART raised: release the bus
        if n:
            self.tx_bytes += n
        return n

    def _release(self, _t):
        """Timer callback (soft IRQ, ``Guarded``): the reply's wire time has
        passed.  Whatever is raised here (a Ctrl-C included), DE is released:
        a transceiver left driving would hold the bus for good."""
        done = True
        try:
            if not self.uart.txdone():
                self._arm(char_us(self.baud, self.bits))
                done = False
        finally:
            if done:
                self.de.off()
                self.tx_busy = False

    def later(self, us, fn):
        """Call ``fn()`` about ``us`` microseconds from now from a soft timer,
        replacing a call still pending; False (nothing armed) without one.

        A soft timer's callback is scheduled: it runs between two bytecodes
        of whatever the main loop runs, inside a control task too, but never
        inside a collection or a flash write.  The Modbus server asks for its
        poll at the end of a request's t3.5 this way, so a reply that is due
        while a task runs goes out then, not after the task."""
        tm = self._later_timer
        if tm is None:
            return False
        self._later_fn = fn
        tm.init(mode=tm.ONE_SHOT, period=us if us > 0 else 1, tick_hz=1000000,
                callback=self._later_cb)
        return True

    def _later_fire(self, _t):
        fn = self._later_fn
        self._later_fn = None
        if fn is not None:
            fn()    # an error, a Ctrl-C included, goes to ``Guarded``

    def _arm(self, us):
        tm = self._timer
        tm.init(mode=tm.ONE_SHOT, period=us, tick_hz=1000000, callback=self._release_cb)

    def flush(self):
        """Until the reply is out and DE released (a baud change waits for it)."""
        self.uart.flush()
        if self._timer is not None and self._sleep_us is not None:
            n = 0
            while self.tx_busy and n < _FLUSH_WAIT_MAX:   # the timer clears it
                self._sleep_us(100)
                n += 1
            if self.tx_busy:        # a timer that never came: release the bus anyway
                self.de.off()
                self.tx_busy = False

    def set_baud(self, baud):
        """New line speed (the Modbus server calls it after a modbus_baud write)."""
        self.flush()   # the reply announcing it goes out at the old speed
        self.uart.init(baudrate=baud)
        self.baud = baud
        self.t15 = t15_us(baud, self.bits)
        self.t35 = t35_us(baud, self.bits)

    # ---- Modbus framing helpers -------------------------------------------
    def idle_us(self, now=None):
        """Microseconds since the last received byte."""
        if now is None:
            now = self._ticks_us()
        return self._ticks_diff(now, self.last_rx_us)

    def frame_gap(self, now=None):
        """True once t3.5 of silence followed the last received byte."""
        return self.idle_us(now) >= self.t35
