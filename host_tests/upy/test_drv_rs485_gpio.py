# RS485 direction control, Modbus RTU timing and the GPIO drivers.
import drv_helpers  # noqa: F401
from drv_helpers import raises

from drivers import gpio, softirq
from drivers.lowpower import LowPower
from drivers.rs485 import Rs485, char_bits, char_us, t15_us, t35_us


class Events:
    def __init__(self):
        self.ev = []


class FakePin:
    def __init__(self, events=None, name="pin", v=0):
        self.events = events
        self.name = name
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        if self.events is not None:
            self.events.ev.append((self.name, v))
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class FakeUart:
    def __init__(self, events, fail=False):
        self.events = events
        self.rx = bytearray()
        self.fail = fail

    def write(self, buf):
        if self.fail:
            raise OSError(110)
        self.events.ev.append(("write", bytes(buf)))
        return len(buf)

    def flush(self):
        self.events.ev.append(("flush",))

    def txdone(self):
        return getattr(self, "done", True)

    def any(self):
        return len(self.rx)

    def readinto(self, buf, nbytes=None):
        # machine.UART semantics: without nbytes it asks for len(buf) and a
        # real UART waits its inter-character timeout for the rest.
        self.asked = len(buf) if nbytes is None else nbytes
        if not self.rx:
            return None
        n = min(self.asked, len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n


class Clock:
    def __init__(self):
        self.t = 1000

    def ticks(self):
        return self.t

    @staticmethod
    def diff(a, b):
        return a - b


def test_modbus_timing_per_spec():
    # 9600 baud 8N1 = 10 bits per character: 1041.7 us; t1.5 1562.5; t3.5 3645.8 (rounded up)
    assert char_bits(8, None, 1) == 10 and char_bits(8, 0, 1) == 11 and char_bits(8, None, 2) == 11
    assert char_us(9600) == 1042
    assert t15_us(9600) == 1563
    assert t35_us(9600) == 3646
    assert t35_us(19200) == 1823 and t15_us(19200) == 782
    # With parity (or 2 stop bits) the character is 11 bits: 1145.8 us, t3.5 4010.4.
    assert char_us(9600, 11) == 1146 and t15_us(9600, 11) == 1719 and t35_us(9600, 11) == 4011
    # Above 19200 baud the spec fixes 750 us / 1750 us.
    assert t15_us(38400) == 750 and t35_us(115200) == 1750
    assert raises(ValueError, char_us, 0)


def test_de_asserted_around_write_and_flush():
    ev = Events()
    de = FakePin(ev, "de", 1)
    clk = Clock()
    port = Rs485(FakeUart(ev), de, 9600, ticks_us=clk.ticks, ticks_diff=clk.diff)
    ev.ev = []
    assert port.write(b"\x01\x03") == 2
    assert ev.ev == [("de", 1), ("write", b"\x01\x03"), ("flush",), ("de", 0)]
    assert de.v == 0 and port.tx_bytes == 2


def test_de_released_when_uart_raises():
    ev = Events()
    de = FakePin(ev, "de")
    clk = Clock()
    port = Rs485(FakeUart(ev, fail=True), de, 9600, ticks_us=clk.ticks, ticks_diff=clk.diff)
    assert raises(OSError, port.write, b"x")
    assert de.v == 0


class FakeTimer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self):
        self.armed = []

    def init(self, mode=0, period=0, tick_hz=1000, callback=None, hard=False):
        self.armed.append((period, tick_hz))
        self.mode = mode
        self.hard = hard
        self.cb = callback

    def deinit(self):
        self.armed.append(None)
        self.cb = None

    def fire(self):
        self.cb(self)


def _timed_port():
    """(events, DE pin, UART, timer, port): a port whose DE a timer releases."""
    ev = Events()
    de = FakePin(ev, "de")
    clk = Clock()
    uart = FakeUart(ev)
    tm = FakeTimer()
    port = Rs485(uart, de, 9600, ticks_us=clk.ticks, ticks_diff=clk.diff, timer=tm)
    return ev, de, uart, tm, port


def test_write_returns_at_once_and_a_timer_releases_de():
    # A board: the reply goes into the UART's buffer, the loop goes on, and
    # DE drops only once the reply's wire time has passed and the UART is done.
    ev, de, uart, tm, port = _timed_port()
    ev.ev = []
    reply = bytes(25)
    assert port.write(reply) == 25
    assert ev.ev == [("de", 1), ("write", reply)] and de.v == 1 and port.tx_busy   # no flush
    period, hz = tm.armed[-1]
    assert hz == 1000000 and period >= 25 * char_us(9600)       # not before its wire time
    uart.done = False
    tm.fire()                       # the UART still shifts the last character out
    assert de.v == 1 and tm.armed[-1][0] == char_us(9600)
    uart.done = True
    tm.fire()
    assert de.v == 0 and not port.tx_busy


def test_flush_releases_the_bus_even_if_the_timer_never_comes():
    ev = Events()
    de = FakePin(ev, "de")
    clk = Clock()
    slept = []
    port = Rs485(FakeUart(ev), de, 9600, ticks_us=clk.ticks, ticks_diff=clk.diff,
                 sleep_us=slept.append, timer=FakeTimer())
    port.write(b"abc")
    assert de.v == 1 and port.tx_busy
    port.flush()                       # the timer callback never runs here
    assert de.v == 0 and not port.tx_busy and 0 < sum(slept) <= 600000


def test_de_released_at_once_when_uart_raises_with_a_timer():
    ev = Events()
    de = FakePin(ev, "de")
    clk = Clock()
    tm = FakeTimer()
    port = Rs485(FakeUart(ev, fail=True), de, 9600, ticks_us=clk.ticks, ticks_diff=clk.diff,
                 timer=tm)
    assert raises(OSError, port.write, b"x")
    assert de.v == 0 and not port.tx_busy and tm.armed == []


def test_a_ctrl_c_in_the_release_callback_frees_the_bus_and_reaches_the_main_loop():
    # A soft timer callback's exception is printed and dropped by the port:
    # a Ctrl-C there must still release DE and stop the main loop.
    _ev, de, uart, tm, port = _timed_port()
    port.write(b"abc")

    def interrupted():
        raise KeyboardInterrupt
    uart.txdone = interrupted
    tm.fire()                                   # raises nothing: the port would drop it
    assert de.v == 0 and not port.tx_busy
    assert raises(KeyboardInterrupt, softirq.take)
    softirq.take()                      # once only


def test_any_error_in_the_release_callback_frees_the_bus():
    _ev, de, uart, tm, port = _timed_port()
    port.write(b"abc")
    uart.done = False

    def broken(**kw):
        raise OSError(5)
    tm.init = broken                            # re-arming fails
    tm.fire()
    assert de.v == 0 and not port.tx_busy
    softirq.take()                      # no Ctrl-C pending: nothing raised


def test_later_calls_once_from_its_own_timer_and_replaces_a_pending_call():
    ev = Events()
    clk = Clock()
    tm, lt = FakeTimer(), FakeTimer()
    port = Rs485(FakeUart(ev), FakePin(ev, "de"), 9600, ticks_us=clk.ticks,
                 ticks_diff=clk.diff, timer=tm, later_timer=lt)
    calls = []
    assert port.later(3680, lambda: calls.append("a"))
    assert lt.armed == [(3680, 1000000)] and tm.armed == []   # not the DE timer
    assert port.later(0, lambda: calls.append("b"))           # replaces "a"
    assert lt.armed[-1] == (1, 1000000)                       # never a zero period
    lt.fire()
    lt.fire()                                                 # a stale fire: nothing
    assert calls == ["b"]
    # No timer: nothing armed, the caller keeps polling by itself.
    plain = Rs485(FakeUart(ev), FakePin(ev, "de"), 9600, ticks_us=clk.ticks,
                  ticks_diff=clk.diff)
    assert plain.later(100, lambda: calls.append("c")) is False and calls == ["b"]


def test_a_ctrl_c_in_a_later_call_reaches_the_main_loop():
    ev = Events()
    clk = Clock()
    lt = FakeTimer()
    port = Rs485(FakeUart(ev), FakePin(ev, "de"), 9600, ticks_us=clk.ticks,
                 ticks_diff=clk.diff, later_timer=lt)

    def interrupted():
        raise KeyboardInterrupt
    port.later(10, interrupted)
    lt.fire()                                   # raises nothing: the port would drop it
    assert raises(KeyboardInterrupt, softirq.take)
    port.later(10, lambda: 1 // 0)              # any other error: swallowed, timer lives
    lt.fire()
    softirq.take()                      # nothing pending


def test_receive_and_frame_gap():
    ev = Events()
    clk = Clock()
    uart = FakeUart(ev)
    port = Rs485(uart, FakePin(), 9600, ticks_us=clk.ticks, ticks_diff=clk.diff)
    buf = bytearray(8)
    assert port.readinto(buf) is None
    uart.rx = bytearray(b"\x11\x22\x33")
    clk.t = 5000
    assert port.any() == 3 and port.readinto(buf) == 3 and port.last_rx_us == 5000
    assert uart.asked == 3      # only what had arrived: no wait for the rest of the frame
    assert not port.frame_gap(5000 + 3645)   # t3.5 at 9600 8N1: 3645.8 us
    assert port.frame_gap(5000 + 3646)


def test_relay_polarity_and_readback_fault():
    coil = FakePin()
    fb = FakePin(v=0)
    r = gpio.Relay(coil, active_low=True, fb_pin=fb, fb_samples=3)
    assert coil.v == 1            # active low: off = high
    r.on()
    assert coil.v == 0 and r.state
    fb.v = 1                      # contact closed
    assert r.check()
    r.off()
    # Welded: readback stays closed; the fault needs 3 checks in a row.
    assert r.check() and r.check()
    assert not r.check() and r.fault
    fb.v = 0
    assert not r.check()          # latched
    r.clear_fault()
    assert r.check()
    plain = gpio.Relay(FakePin())
    assert plain.check() and plain.readback() is None


def test_key_debounce():
    clk = Clock()
    pin = FakePin(v=1)            # active low: released
    k = gpio.Key(pin, clk.ticks, clk.diff, active_low=True, debounce_ms=50)
    assert not k.value()
    pin.v = 0
    assert not k.value()          # just changed
    clk.t += 30
    pin.v = 1                     # bounce
    assert not k.value()
    pin.v = 0
    clk.t += 10
    assert not k.value()
    clk.t += 49
    assert not k.value()
    clk.t += 1
    assert k.value()              # stable for 50 ms


def test_buzzer_and_led_patterns():
    p = FakePin()
    b = gpio.Buzzer(p)
    b.on()
    assert p.v == 1 and b.changes == 1
    b.on()
    assert b.changes == 1
    led_pin = FakePin()
    led = gpio.StatusLed(led_pin)
    led.step(0, gpio.LED_SLOW)
    assert led_pin.v == 1
    led.step(600)
    assert led_pin.v == 0
    led.step(0, gpio.LED_OFF)
    assert led_pin.v == 0


class IrqPin(FakePin):
    """A pin whose IRQ handler the test fires, as the port's scheduler would."""

    def irq(self, handler=None, trigger=0):
        self.handler = handler

    IRQ_FALLING = 1
    IRQ_RISING = 2


def test_a_ctrl_c_in_the_alert_pin_handler_reaches_the_main_loop():
    # Seen on the emulated RP2040: a Ctrl-C landing in the shunt ALERT's
    # soft IRQ was printed and dropped by the port, the loop ran on.
    clk = Clock()
    pin = IrqPin(v=1)
    alert = gpio.Alert(pin, clk.ticks)
    pin.v = 0
    clk.t = 1500
    pin.handler(pin)
    assert alert.on and alert.at == 1500 and alert.edges == 1
    softirq.take()                              # nothing pending

    def interrupted(v=None):
        raise KeyboardInterrupt
    pin.value = interrupted
    pin.handler(pin)                            # raises nothing: the port would drop it
    assert raises(KeyboardInterrupt, softirq.take)
    softirq.take()                              # once only
    pin.value = lambda v=None: 1 // 0           # any other error: counted, IRQ kept
    pin.handler(pin)
    assert alert._h.errors == 1
    softirq.take()


def test_a_ctrl_c_in_a_wake_pin_handler_reaches_the_main_loop():
    pin = IrqPin()
    lp = LowPower(None, pins=(pin,))
    pin.handler(pin)
    assert lp.edges == 1 and lp.woken()
    lp.edges = None                             # the count itself raises: += on None
    pin.handler(pin)
    assert lp._h.errors == 1

    class Interrupting:
        def __iadd__(self, _n):
            raise KeyboardInterrupt
    lp.edges = Interrupting()
    pin.handler(pin)
    assert raises(KeyboardInterrupt, softirq.take)
    softirq.take()


def test_a_guarded_callback_allocates_nothing():
    class Edge:
        count = 0

        def __call__(self, _arg):
            Edge.count += 1
            if Edge.count == 2:
                raise KeyboardInterrupt
    g = softirq.Guarded(Edge())

    def three():
        g(None)
        g(None)                                 # the Ctrl-C: kept, not raised
        g(None)
    drv_helpers.heap_locked(three)
    assert Edge.count == 3 and g.errors == 0
    assert raises(KeyboardInterrupt, softirq.take)


def test_the_arrival_watch_dates_bytes_read_late():
    # A control task reads the port only between its steps (up to 6 ms apart
    # on an RP2040, emulated): a hard periodic timer notes when the UART's
    # count changed, and a read reports how long before it the last byte it
    # took had arrived (rx_age), so the Modbus silence counts from there.
    ev = Events()
    clk = Clock()
    uart = FakeUart(ev)
    rt = FakeTimer()
    port = Rs485(uart, FakePin(ev, "de"), 9600, ticks_us=clk.ticks, ticks_diff=clk.diff,
                 rx_timer=rt)
    assert rt.armed == []              # it runs only while a frame comes in (the server says)
    port.rx_watch(True)
    assert rt.hard and rt.mode == rt.PERIODIC and rt.armed == [(250, 1000000)]
    buf = bytearray(64)
    rt.fire()                          # an empty UART: nothing to date
    uart.rx += b"\x01\x03"
    clk.t += 100
    drv_helpers.heap_locked(rt.fire)   # a hard IRQ: nothing allocated
    clk.t += 3000                      # read 3 ms later, inside a task
    assert port.readinto(buf) == 2 and port.rx_age == 3000
    assert port.last_rx_us == 1100
    # Bytes that came after the watch's last look: no age (read time).
    uart.rx += b"\x00"
    rt.fire()
    uart.rx += b"\x00"
    clk.t += 500
    assert port.readinto(buf) == 2 and port.rx_age == 0 and port.last_rx_us == clk.t
    # A look before a read is not one for the bytes after it: the same
    # count again after the read is a new arrival, undated until looked at.
    uart.rx += b"\x01"
    rt.fire()
    assert port.readinto(buf) == 1
    uart.rx += b"\x02"
    clk.t += 800
    assert port.readinto(buf) == 1 and port.rx_age == 0
    # The watch never raises out of its IRQ.
    uart.any = None
    rt.fire()
    port.rx_watch(False)
    assert rt.armed[-1] is None and rt.cb is None
    # Without a watch there is no age (and nothing for a server to start).
    plain = Rs485(FakeUart(ev), FakePin(ev, "de"), 9600, ticks_us=clk.ticks,
                  ticks_diff=clk.diff)
    assert plain.rx_watch is None
    plain.uart.rx += b"\x01"
    clk.t += 900
    assert plain.readinto(buf) == 1 and plain.rx_age == 0
