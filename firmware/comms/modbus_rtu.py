"""Modbus RTU server (slave) on a UART-like byte port.

The port (RS485 wrapper, the simulator's pty link, a test fake) offers
``any()``, ``readinto(buf)`` -> n or None and ``write(buf)``; the RS485
wrapper drives DE/RE itself.  ``poll()`` is called often by a comms task
(every 1-2 ms on a board); it never blocks and never raises.

Frame assembly by silence, measured on an injected clock with
``ticks_diff`` semantics (``clock.ticks_us`` if it has one, else
``ticks_ms`` with both limits rounded up by one tick):

* A UART delivers bytes through a FIFO, so the time a byte is *read* is
  later than the time it *arrived*.  The only safe silence measurement is a
  lower bound: from the last poll that read bytes (``t_last``) to a later
  poll that found the port empty (``t_quiet``).  The line was silent at
  least that long.  A port that knows more (``rx_age``: ``drivers.rs485``'s
  arrival watch, a hard timer that notes when the UART's count changed)
  says how long before the end of the read its last byte had arrived at
  the latest, and ``t_last`` is that much earlier: a request whose last
  bytes land in a task's long step is timed from their arrival, not from
  the read after the step (up to 6 ms later on an RP2040, emulated).  The
  server runs the watch (``rx_watch``) from a frame's first bytes until a
  read's reply is built or the frame ends: running all the time it cost
  13 % of the CPU.
* end of frame: a poll finds the port empty and ``now - t_last >= t3.5``.
* t1.5 rule: if the silence proven inside a frame exceeded t1.5 and then
  more bytes came, the frame is broken and is dropped (counted in
  ``framing_errors``).  A UART shows a character only once its stop bit is
  in, so the poll that found the port empty may have fallen while the next
  character was already on the wire: the silence proven is ``t_quiet -
  t_last`` less one character time (``_gap``: t1.5 plus one character).
  Being a lower bound, this never drops a good frame (a gap of up to 1.5
  characters is legal); it may miss a short gap when the poll period is
  long, which the CRC then catches.
* Listen-only for other units: a frame whose address is another unit's is
  never answered nor counted as an error.  Its end is seen from a poll
  between its t3.5 and the next frame's first character, a window of one
  character (95 us at 115200 baud) that the loop's polls miss and a control
  task's polls (which only read) do not use; so a silence above t1.5 after
  another unit's bytes ends that frame too, and the bytes after it begin a
  new one.  A request for this unit (or a broadcast) with such a silence
  inside is still dropped.
* After construction nothing is accepted until the line has been silent
  for t3.5, so the tail of a frame in progress is never parsed as a frame.
* A read (03/04, 8 bytes) for this address whose CRC checks is answered
  ahead: the reply is built as soon as its last byte is read and sent once
  the t3.5 silence has passed (dropped if more bytes come).  On an RP2040
  building a reply takes a few ms, so it overlaps the silence the server
  has to wait anyway.  Writes are executed only after the silence.
* Timed poll: a port with ``later(us, fn)`` (``drivers.rs485`` on a board: a
  soft timer) is asked for a poll at the end of that read's t3.5 (a reply
  built after it, by a task that read the request late, goes out from the
  poll that built it).  A soft
  timer's callback runs between two bytecodes of whatever the loop runs, a
  control task included, so the reply goes out on time although the loop
  is busy; a callback that lands inside the loop's own ``poll`` leaves it
  to that poll, which makes one more pass before it returns (no poll ever
  runs inside another).  It sends inside the fast task too (about
  0.4 ms).  Inside a task a poll only reads and sends (``poll_in_task``);
  a long task, and the fast task at its very end (the protection's work
  done), may also build a read's reply when the fast tick is far enough
  away, and the fast task's other looks that of a small read (up to 16
  registers, ``small``).  A read's reply built past its t3.5 (timed from
  the arrival) goes out from the poll that built it.  What still delays a
  reply: a read whose last bytes land in a bus transaction or a step
  without a look, when its t3.5 ends before that is over (the timed poll
  runs only between bytecodes: an AFE read of 1-4 ms on I2C), the build of
  a large read inside the fast task (at its end), a collection or a flash
  write (no callback runs inside the last two).
* t1.5 = 1.5 and t3.5 = 3.5 character times up to 19200 baud, fixed
  750 us / 1750 us above, as the Modbus serial-line spec says.  A character
  is as long as the line makes it: 10 bits for 8N1 (the manuals' setting:
  t3.5 = 3.65 ms at 9600 baud), 11 with parity or 2 stop bits; the server
  takes ``bits`` from the port (``Rs485.bits``) or the constructor, and
  the speed from the port too (``Rs485.baud``) where it has one: a board
  option (``config.py`` OPTS ``modbus_baud``) may start the port at another
  speed than the ``modbus_baud`` parameter's, which is applied only when it
  differs from the constructor's ``baud`` (see below).

Function codes: 03 and 04 (read the same map), 06, 16, 43/14 (read device
identification, basic/regular/extended, stream and individual access).
Exceptions 01 illegal function (also: write while locked), 02 illegal
address, 03 illegal value (count, malformed request, refused parameter or
password), 04 server failure (an internal error; never propagates), 06
busy (command pending, password back-off).  Address 0 is broadcast:
writes are executed, nothing is answered, reads are ignored.

The address and baud rate follow the ``modbus_addr`` / ``modbus_baud``
parameters when ``params`` is given; a new baud rate is applied after the
answer to the write that changed it has been flushed, through
``port.set_baud(baud)`` if the port has it.

Memory: rx/tx buffers are preallocated; a read request (03/04) of the
blocks a monitor polls allocates nothing once a response of that length
has been sent once (memoryviews of the tx buffer are cached per length).
"""
from micropython import const

from bms.params import BAUD_RATES, P_MODBUS_ADDR, P_MODBUS_BAUD
from bms.ticks import ticks_add, ticks_diff
from comms import crc16
from comms.packing import get16be as get16, put16be as put16
from comms.regs.codes import EX_ADDRESS, EX_FAILURE, EX_FUNCTION, EX_NONE, EX_VALUE

_BUF = const(256)
CHUNK = const(64)
MAX_READ = const(125)
MAX_WRITE = const(123)
_FC_READ_HOLDING = const(3)
_FC_READ_INPUT = const(4)
_FC_WRITE_SINGLE = const(6)
_FC_WRITE_MULTIPLE = const(16)
_FC_MEI = const(43)
_MEI_DEVICE_ID = const(14)
_CONFORMITY = const(0x83)  # extended identification, stream + individual access
_AUTH_EVERY = const(64)    # polls between two session-expiry checks
_SMALL_READ = const(16)    # registers: a reply the fast task may build (poll_in_task small)
_LATER_US = const(30)      # past the end of t3.5 for the timed poll (clock rounding)

# Object ids per read code (1 basic, 2 regular, 3 extended).
_ID_OBJECTS = ((), (0, 1, 2), (0, 1, 2, 3, 4, 5, 6), (0, 1, 2, 3, 4, 5, 6, 0x80, 0x81, 0x82))


def char_times_us(baud, bits=10):
    """(t1.5, t3.5) in microseconds (rounded up) for ``bits``-bit characters."""
    if baud > 19200:
        return 750, 1750
    return (bits * 1500000 + baud - 1) // baud, (bits * 3500000 + baud - 1) // baud


class ModbusRTU:
    def __init__(self, port, regmap, clock, address=1, baud=9600, params=None, bits=None):
        self.port = port
        self.bits = bits if bits else getattr(port, "bits", 10)
        self.regmap = regmap
        self.clock = clock
        self.params = params
        self._us = hasattr(clock, "ticks_us")
        self.address = address
        self.baud = baud
        self._pver = -1
        self.rx = bytearray(_BUF)
        self.tx = bytearray(_BUF)
        self._chunk = bytearray(CHUNK)
        self._views = {}      # reply length -> memoryview of tx (only lengths used)
        self.rx_len = 0
        self._bad = True      # nothing is valid until the line has been quiet
        self._active = True
        self._t_last = self._now()
        self._t_quiet = 0
        self._quiet_valid = False
        self._early = -1      # length of a reply built ahead (see above), -1 none
        self._auth_n = _AUTH_EVERY
        # The port's timed call (Rs485.later): a poll at the end of a read's
        # t3.5, so the reply built ahead goes out then even while the loop
        # runs a task.  Microsecond clocks only.
        self._later = getattr(port, "later", None) if self._us else None
        # How long before the end of its last read the port had the bytes
        # (Rs485.rx_age): the silence counts from their arrival.
        self._aged = self._us and hasattr(port, "rx_age")
        # ... which it knows only while its watch runs: from a frame's first
        # bytes to its end.
        self._watch = getattr(port, "rx_watch", None) if self._aged else None
        self._watching = False
        self._due_cb = self._on_due      # bound once
        self._in_poll = False
        self._due_hit = False
        self._timed = False       # inside a task: read and send only (poll_in_task)
        self._may_build = False   # ... and build a read's reply ahead (a long task with room)
        self._may_small = False   # ... that of a small read only (the fast task)
        self._ahead = True        # the frame's build ahead was tried (nothing to try yet)
        self.t15 = 0
        self.t35 = 0
        self._gap = 0             # t1.5 + one character: what a measured quiet must exceed
        # The line's timing from the speed the port runs at; ``baud``: the
        # speed the modbus_baud parameter last asked for (the constructor's
        # until it asks for another).
        self._set_timing(getattr(port, "baud", 0) or baud)
        self.baud = baud
        # Counters (diagnostics, the bench and the tests read them).
        self.frames = 0           # frames with a good CRC for any address
        self.handled = 0          # requests for us (incl. broadcast)
        self.replies = 0
        self.exceptions_sent = 0
        self.crc_errors = 0
        self.framing_errors = 0
        self.overruns = 0
        self.broadcasts = 0
        self.internal_errors = 0
        self.last_turnaround = 0  # clock units from the frame end (its t3.5) to the reply written
        if params is not None:
            self._follow_params()

    # ---- configuration --------------------------------------------------
    def _now(self):
        return self.clock.ticks_us() if self._us else self.clock.ticks_ms()

    def _set_timing(self, baud):
        t15, t35 = char_times_us(baud, self.bits)
        gap = t15 + (self.bits * 1000000 + baud - 1) // baud
        if self._us:
            self.t15, self.t35 = t15, t35
            self._gap = gap
        else:
            self.t15 = (t15 + 999) // 1000 + 1
            self.t35 = (t35 + 999) // 1000 + 1
            self._gap = (gap + 999) // 1000 + 1

    def _follow_params(self):
        p = self.params
        if p.version == self._pver:
            return
        self._pver = p.version
        self.address = p[P_MODBUS_ADDR]
        baud = BAUD_RATES[p[P_MODBUS_BAUD]]
        if baud != self.baud:
            set_baud = getattr(self.port, "set_baud", None)
            if set_baud is not None:
                flush = getattr(self.port, "flush", None)
                if flush is not None:
                    flush()
                set_baud(baud)
            self._set_timing(baud)
            self.baud = baud

    # ---- the task ---------------------------------------------------------
    def due_us(self):
        """us until the frame in progress has had its t3.5 of silence (the
        moment to poll again; 0 if that is now), or -1 if none is in progress."""
        if not self._active:
            return -1
        d = self.t35 - ticks_diff(self._now(), self._t_last)
        if d <= 0:
            return 0
        return d if self._us else d * 1000

    def poll(self):
        """Read what arrived, answer a complete frame; True if a frame was handled."""
        if self._in_poll:
            return False
        self._in_poll = True
        try:
            r = self._poll()
            if self._due_hit:    # the timed poll landed inside this one: its turn now
                self._due_hit = False
                r = self._poll() or r
            return r
        except Exception:  # noqa: BLE001 - comms must never stop the control loop
            self.internal_errors += 1
            self.rx_len = 0
            self._bad = True
            return False
        finally:
            self._in_poll = False

    def poll_in_task(self, build=False, small=False):
        """A poll from inside a task (the timed poll, the core's service
        calls between the steps of its tasks): read what arrived, so the
        silence counts from then, and send a reply built ahead whose t3.5
        is over; nothing else (no write, parameter follow-up or session
        check: the loop's own poll does those after the task).  ``build``:
        the reply of a read may be built here too (0.4 ms for ten identity
        registers, about 4 ms for the monitor block on the emulated RP2040),
        which a long task allows when the fast tick is far enough away.
        ``small``: that of a read of up to 16 registers only (the fast task
        once its protection step is done: 0.4-1 ms)."""
        if self._in_poll:
            return False
        self._timed = True
        self._may_build = build
        self._may_small = small
        try:
            return self.poll()
        finally:
            self._timed = False
            self._may_build = False
            self._may_small = False

    def build_pending(self):
        """A frame's bytes were read inside a task and its reply (if it is a
        read for us) is not built yet."""
        return not self._ahead

    def _on_due(self):
        """The timed poll (a soft timer callback, between two bytecodes of
        whatever the loop runs): answer the read whose t3.5 is over.  One
        that lands inside the loop's own poll leaves it to that poll, which
        runs once more before it returns."""
        if self._early < 0:
            return          # answered or dropped meanwhile
        if self._in_poll:
            self._due_hit = True
            return
        # The usual case straight away: each Python call on the way (the
        # task poll, the poll, its try) cost 20-30 us on an RP2040 (emulated).
        if not self.port.any() and ticks_diff(self._now(), self._t_last) >= self.t35:
            self._in_poll = True
            try:
                self._send_ahead()
            except Exception:  # noqa: BLE001 - as poll: never into the callback
                self.internal_errors += 1
            finally:
                self._in_poll = False
            return
        self.poll_in_task()
        d = self.due_us()
        if d >= 0 and self._early >= 0:    # not over yet (clock rounding): again
            self._later(d + _LATER_US, self._due_cb)

    def _poll(self):
        port = self.port
        if self._early >= 0 and not port.any():
            # A read built ahead (its CRC checked then) whose t3.5 is over:
            # answered before anything else.
            if ticks_diff(self._now(), self._t_last) >= self.t35:
                self._send_ahead()
                return True
        timed = self._timed
        build = not timed or self._may_build
        # The port first, the bookkeeping after: the silence counts from the
        # read, and the bookkeeping before it (270 us on an RP2040, emulated)
        # made every request's turnaround that much longer.
        now = self._now()
        if port.any():
            n = port.readinto(self._chunk)
            if n:
                if self._active and self._quiet_valid and self.rx_len > 0:
                    if ticks_diff(self._t_quiet, self._t_last) > self._gap:
                        a = self.rx[0]
                        if a != self.address and a != 0:
                            # Another unit's frame, then a silence no frame
                            # has inside: its end (its t3.5 passed unseen);
                            # these bytes begin the next frame.
                            self.rx_len = 0
                            self._bad = False
                        else:
                            if not self._bad:
                                self.framing_errors += 1
                            self._bad = True
                rx = self.rx
                c = self._chunk
                k = self.rx_len
                for i in range(n):
                    if k < _BUF:
                        rx[k] = c[i]
                        k += 1
                    elif not self._bad:
                        self.overruns += 1
                        self._bad = True
                self.rx_len = k
                self._t_last = now
                if self._watch is not None and not self._watching:
                    self._watching = True
                    self._watch(True)
                if self._aged:
                    # When the bytes arrived, if the port knows (Rs485's
                    # arrival watch): a read late inside a task no longer
                    # delays the frame's end.  From a clock read after the
                    # port's, so the silence stays a lower bound.
                    age = port.rx_age
                    if age > 0:
                        self._t_last = ticks_add(self._now(), -age)
                self._quiet_valid = False
                self._active = True
                self._early = -1
                self._ahead = False
                if build or (self._may_small and self._small()):
                    self._build_ahead()
                    # Timed from the arrival, t3.5 may be over already: the
                    # reply goes out now, not at the next poll.
                    if self._early >= 0 and not port.any() \
                            and ticks_diff(self._now(), self._t_last) >= self.t35:
                        self._send_ahead()
                        return True
                return False
        if not self._ahead and self._active and (build or (self._may_small and self._small())):
            self._build_ahead()   # its bytes were read inside a task
            if self._early >= 0:
                # The build took up to ~1 ms on an RP2040: t3.5 may be over by now.
                now = self._now()
                if port.any():
                    return False
        if not timed:
            self._bookkeeping()
        if not self._active:
            return False
        self._t_quiet = now
        self._quiet_valid = True
        if ticks_diff(now, self._t_last) < self.t35 or (timed and self._early < 0):
            return False    # a poll in a task answers only a read built ahead
        return self._frame_end(now)

    def _bookkeeping(self):
        if self.params is not None:
            self._follow_params()
        auth = self.regmap.auth
        if auth is not None:
            # Sessions expire on time and before the tick counter wraps
            # (bms.auth); a request's role check polls it anyway.  Every
            # pass, it took a third of an empty poll (100 us on an RP2040),
            # and the loop polls every 250 us while a request comes in.
            self._auth_n += 1
            if self._auth_n >= _AUTH_EVERY:
                self._auth_n = 0
                auth.poll()

    def _send_ahead(self):
        """The read built ahead, its t3.5 over and no byte since: its bytes
        first, the counters after (every attribute store costs a few us on
        an RP2040, before the first byte otherwise)."""
        ln = self._early
        self._early = -1        # a port that raises must not be retried at every poll
        self.port.write(self._view(ln))
        t = self._t_last
        self.rx_len = 0
        self._bad = False
        self._active = False
        self._quiet_valid = False
        self.frames += 1
        self.handled += 1
        self.replies += 1
        if self.tx[1] & 0x80:
            self.exceptions_sent += 1
        self.last_turnaround = ticks_diff(self._now(), t) - self.t35
        if self._watching:
            self._unwatch()

    def _unwatch(self):
        self._watching = False
        self._watch(False)

    def _view(self, ln):
        v = self._views.get(ln)
        if v is None:
            v = memoryview(self.tx)[:ln]
            self._views[ln] = v
        return v

    def _build_ahead(self):
        """A complete read for us (8 bytes, its CRC good) is answered ahead:
        the reply is built now, during the t3.5 the server must wait anyway,
        and the port is asked for a poll when that ends."""
        self._ahead = True
        rx = self.rx
        if self.rx_len == 8 and not self._bad and rx[0] == self.address \
                and (rx[1] == _FC_READ_HOLDING or rx[1] == _FC_READ_INPUT) \
                and crc16.check(rx, 8):
            self._early = self._reply(8, False)
            if self._watching:
                # The request is in: nothing left to date until more comes
                # (a read restarts it), and its looks slowed the wait for
                # t3.5 by a few % (one every 250 us).
                self._unwatch()
            if self._later is not None and self._early >= 0:
                # Built after its t3.5 (a task built it late): the poll that
                # built it sends it next, without the timer (arming one cost
                # 0.3-0.4 ms on an RP2040, emulated, before the first byte).
                d = self.t35 - ticks_diff(self._now(), self._t_last)
                if d > 0:
                    self._later(d + _LATER_US, self._due_cb)

    def _small(self):
        """The frame so far is 8 bytes asking for at most _SMALL_READ registers."""
        return self.rx_len == 8 and get16(self.rx, 4) <= _SMALL_READ

    def _frame_end(self, now):
        """t3.5 of silence: the frame is complete."""
        n = self.rx_len
        bad = self._bad
        self.rx_len = 0
        self._bad = False
        self._active = False
        self._quiet_valid = False
        if self._watching:
            self._unwatch()     # (a reply built now goes out ~0.1 ms later)
        if bad or n == 0:
            self._early = -1
            return False
        # A reply built ahead had its request's CRC checked then, and no byte came since.
        if self._early < 0 and not crc16.check(self.rx, n):
            self.crc_errors += 1
            return False
        if n < 4:
            # Address and CRC, no function code: not a frame (noise whose
            # last two bytes happen to be the CRC of the first).
            self.framing_errors += 1
            return False
        self.frames += 1
        self._handle(n, now)
        return True

    # ---- requests -------------------------------------------------------
    def _handle(self, n, t0):
        rx = self.rx
        dev = rx[0]
        ln = self._early
        self._early = -1
        if dev != 0 and dev != self.address:
            return
        self.handled += 1
        broadcast = dev == 0
        if broadcast:
            self.broadcasts += 1
        if ln < 0 or n != 8:
            ln = self._reply(n, broadcast)
        if ln < 0:
            return
        if self.tx[1] & 0x80:
            self.exceptions_sent += 1
        self.port.write(self._view(ln))
        self.replies += 1
        self.last_turnaround = ticks_diff(self._now(), t0)

    def _reply(self, n, broadcast):
        """Execute the request in rx[:n] and build the reply in tx; its length
        with the CRC, or -1 when nothing is answered (broadcast)."""
        rx = self.rx
        fc = rx[1]
        tx = self.tx
        tx[0] = rx[0]
        tx[1] = fc
        ln = 0
        try:
            if fc == _FC_READ_HOLDING or fc == _FC_READ_INPUT:
                if broadcast:
                    return -1  # reads are meaningless as broadcast
                ln = self._read(n)
                ex = EX_NONE
                if ln < 0:
                    ex = -ln
                    ln = 0
            elif fc == _FC_WRITE_SINGLE:
                ex = EX_VALUE if n != 8 else self.regmap.write(get16(rx, 2), 1, rx, 4)
                if ex == EX_NONE:
                    for i in range(2, 6):
                        tx[i] = rx[i]
                    ln = 6
            elif fc == _FC_WRITE_MULTIPLE:
                ex = self._write_multiple(n)
                if ex == EX_NONE:
                    for i in range(2, 6):
                        tx[i] = rx[i]
                    ln = 6
            elif fc == _FC_MEI and not broadcast:
                ln = self._device_id(n)
                ex = EX_NONE
                if ln < 0:
                    ex = -ln
                    ln = 0
            else:
                ex = EX_FUNCTION
        except Exception:  # noqa: BLE001 - answer 04, keep serving
            self.internal_errors += 1
            ex = EX_FAILURE
        if broadcast:
            return -1
        if ex != EX_NONE:
            tx[1] = fc | 0x80
            tx[2] = ex
            ln = 3
        return crc16.append(tx, ln)

    def _read(self, n):
        """Response length, or minus the exception code (no tuple: no allocation)."""
        rx = self.rx
        if n != 8:
            return -EX_VALUE
        start = get16(rx, 2)
        count = get16(rx, 4)
        if count < 1 or count > MAX_READ:
            return -EX_VALUE
        ex = self.regmap.read(start, count, self.tx, 3)
        if ex != EX_NONE:
            return -ex
        self.tx[2] = 2 * count
        return 3 + 2 * count

    def _write_multiple(self, n):
        rx = self.rx
        if n < 11:
            return EX_VALUE
        start = get16(rx, 2)
        count = get16(rx, 4)
        nbytes = rx[6]
        if count < 1 or count > MAX_WRITE or nbytes != 2 * count or n != 9 + nbytes:
            return EX_VALUE
        return self.regmap.write(start, count, rx, 7)

    def _device_id(self, n):
        rx = self.rx
        tx = self.tx
        if n != 7:
            return -EX_VALUE
        if rx[2] != _MEI_DEVICE_ID:
            return -EX_FUNCTION
        code = rx[3]
        oid = rx[4]
        if code < 1 or code > 4:
            return -EX_VALUE
        rm = self.regmap
        if code == 4:
            if rm.device_id_object(oid) is None:
                return -EX_ADDRESS
            ids = (oid,)
        else:
            ids = _ID_OBJECTS[code]
            if oid not in ids:
                oid = ids[0]
            ids = ids[ids.index(oid):]
        tx[2] = _MEI_DEVICE_ID
        tx[3] = code
        tx[4] = _CONFORMITY
        tx[5] = 0      # more follows
        tx[6] = 0      # next object id
        p = 8
        count = 0
        for i in ids:
            obj = rm.device_id_object(i)
            if obj is None:
                continue
            if p + 2 + len(obj) > _BUF - 2:
                tx[5] = 0xFF
                tx[6] = i
                break
            tx[p] = i
            tx[p + 1] = len(obj)
            for j in range(len(obj)):
                tx[p + 2 + j] = obj[j]
            p += 2 + len(obj)
            count += 1
        tx[7] = count
        return p


# Re-exported for callers that build frames (tests, tools).
__all__ = ("ModbusRTU", "char_times_us", "put16", "get16")
