"""GPIO outputs and inputs: relays, buzzer, heater, ON/OFF key, status LED.

Every object receives its machine.Pin (already constructed as an output or
input by the board file) and works in logical terms: ``on`` means relay
energised / buzzer sounding / key switched on, whatever the wiring polarity.

Relays may have a readback input (auxiliary contact or coil-side sense).  A
mismatch between command and readback that lasts ``fb_samples`` checks in a
row (contactor pick-up / drop-out takes tens of ms) marks the relay faulty:
a welded contact or a dead driver.  The board reports it to the core as an
AFE-level hardware fault, which opens everything else.
"""
from micropython import const

from drivers.softirq import Guarded

LED_OFF = const(0)
_LED_ON = const(1)
LED_SLOW = const(2)   # 1 s period: running normally
LED_FAST = const(3)   # 200 ms period: alarm
LED_BLIP = const(4)   # 50 ms flash every 2 s: standby / boot


class Output:
    def __init__(self, pin, active_low=False):
        self.pin = pin
        self.active_low = active_low
        self.state = False
        self.changes = 0
        self._drive(False)

    def _drive(self, on):
        self.pin.value(0 if on == self.active_low else 1)

    def value(self, on=None):
        if on is None:
            return self.state
        on = bool(on)
        if on != self.state:
            self.changes += 1
        self.state = on
        self._drive(on)
        return on

    def on(self):
        self.value(True)

    def off(self):
        self.value(False)


class Relay(Output):
    def __init__(self, pin, active_low=False, fb_pin=None, fb_active_low=False, fb_samples=3):
        Output.__init__(self, pin, active_low)
        self.fb_pin = fb_pin
        self.fb_active_low = fb_active_low
        self.fb_samples = fb_samples
        self._mismatch = 0
        self.fault = False

    def readback(self):
        """Logical state seen on the readback input (None if not wired)."""
        if self.fb_pin is None:
            return None
        v = self.fb_pin.value()
        return (v == 0) if self.fb_active_low else (v != 0)

    def check(self):
        """One readback check; True while healthy.  The fault latches until
        clear_fault()."""
        if self.fb_pin is None:
            return True
        if self.readback() != self.state:
            if self._mismatch < self.fb_samples:
                self._mismatch += 1
            if self._mismatch >= self.fb_samples:
                self.fault = True
        else:
            self._mismatch = 0
        return not self.fault

    def clear_fault(self):
        self._mismatch = 0
        self.fault = False


class Buzzer(Output):
    pass


class Key:
    """ON/OFF switch input with time-based debounce: the reported state
    follows the raw input only after it has been stable for debounce_ms."""

    def __init__(self, pin, ticks_ms, ticks_diff, active_low=True, debounce_ms=50):
        self.pin = pin
        self.active_low = active_low
        self.debounce_ms = debounce_ms
        self._ticks_ms = ticks_ms
        self._diff = ticks_diff
        self._raw = self._read()
        self._since = ticks_ms()
        self.state = self._raw

    def _read(self):
        v = self.pin.value()
        return (v == 0) if self.active_low else (v != 0)

    def value(self, now=None):
        if now is None:
            now = self._ticks_ms()
        raw = self._read()
        if raw != self._raw:
            self._raw = raw
            self._since = now
        elif raw != self.state and self._diff(now, self._since) >= self.debounce_ms:
            self.state = raw
        return self.state


class Alert:
    """An active-low comparator output (the INA228's ALERT): whether it is
    asserted (``on``) and since when (``at``, ticks_ms of the edge).

    Both edges interrupt; the handler only stores a flag and a small int (no
    allocation: the bound method is made once, here).  A soft IRQ runs
    between bytecodes, so ``at`` can come late by one native call (an I2C
    transfer), never early: a late edge only shortens what the protection
    back-dates.  The pin level is read again at every edge and by
    ``refresh`` (an edge lost while the handler was pending)."""

    def __init__(self, pin, ticks_ms):
        self.pin = pin
        self._ticks_ms = ticks_ms
        self.on = pin.value() == 0
        self.at = ticks_ms()
        self.edges = 0
        self._h = Guarded(self._edge)   # made once; a Ctrl-C reaches the loop
        pin.irq(handler=self._h, trigger=pin.IRQ_FALLING | pin.IRQ_RISING)

    def use_clock(self, ticks_ms):
        """Stamp edges on the core's clock (a host test's virtual one)."""
        self._ticks_ms = ticks_ms
        self.at = ticks_ms()

    def _edge(self, _pin):
        self.edges += 1
        self.refresh()

    def refresh(self):
        if self.pin.value() == 0:
            if not self.on:
                self.at = self._ticks_ms()
                self.on = True
        else:
            self.on = False


class StatusLed(Output):
    def __init__(self, pin, active_low=False):
        Output.__init__(self, pin, active_low)
        self.pattern = LED_OFF

    def step(self, now, pattern=None):
        if pattern is not None:
            self.pattern = pattern
        p = self.pattern
        if p == _LED_ON:
            on = True
        elif p == LED_SLOW:
            on = (now % 1000) < 500
        elif p == LED_FAST:
            on = (now % 200) < 100
        elif p == LED_BLIP:
            on = (now % 2000) < 50
        else:
            on = False
        if on != self.state:
            self.value(on)
