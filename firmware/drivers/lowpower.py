"""The board's low-power mode while the BMS sleeps (one-key sleep,
SmartSleep or the sleep command; ``bms.sleep`` decides, this only saves
power).

Entering: the AFE goes to its SLEEP mode (BQ76952: slower measurements,
its hardware protections stay armed) and the loop runs one control pass a
second instead of every 50 ms, waiting in ``machine.lightsleep`` between
passes.  Leaving (the Sleep state machine woke: key, charger, a bus
request, the periodic wake): AFE back to NORMAL, full rate.

Wake from lightsleep: the timer (the next pass), and any edge on a wake
pin (``irq``): the key, the AFE's ALERT, the charger sense and the RX pins
of the RS485 and display UARTs.  A UART cannot take bytes while the chip's
clocks are stopped, so the first frame that wakes it is lost (on the rp2
and esp32 ports alike); the edge then keeps the loop out of lightsleep for
``HOLD_MS`` (10 s), the client's retry finds it listening.  Where the loop
does not lightsleep (``lightsleep`` None: config LIGHTSLEEP = False, or the
asyncio loop of the BLE boards) its wait ends at no edge: it waits in slices
of ``EDGE_MS`` and ends at the first edge, so a press of the sleep button
shorter than a pass still wakes the BMS.  bmsctl retries twice
by default, the display repeats its poll: nothing is lost for good.

``irq`` only counts (hard-IRQ safe: no allocation); the loop acts on it.
"""
from micropython import const

from drivers.softirq import Guarded

_MODE_NORMAL = const(0)   # drivers.afe.MODE_NORMAL
_MODE_SLEEP = const(1)    # drivers.afe.MODE_SLEEP
_PASS_MS = const(1000)    # one control pass per second while asleep
_HOLD_MS = const(10000)   # no lightsleep this long after a wake-pin edge
_EDGE_MS = const(20)      # a wait without lightsleep looks for an edge this often


class LowPower:
    PASS_MS = _PASS_MS
    HOLD_MS = _HOLD_MS
    EDGE_MS = _EDGE_MS

    def __init__(self, board, lightsleep=None, pins=()):
        self.board = board
        self.lightsleep = lightsleep   # machine.lightsleep, or None: plain idle waits
        self.on = False
        self.edges = 0        # wake-pin edges (IRQ)
        self._seen = 0
        self.entries = 0
        self.afe_errors = 0
        self.pins = []
        self._h = Guarded(self.irq)     # made once; a Ctrl-C reaches the loop
        for p in pins:
            self.attach(p)

    def attach(self, pin):
        """Count edges on ``pin`` (a machine.Pin); False if the port has no pin IRQ."""
        try:
            pin.irq(handler=self._h, trigger=pin.IRQ_FALLING | pin.IRQ_RISING)
        except (AttributeError, TypeError, ValueError, OSError):
            return False
        self.pins.append(pin)
        return True

    def irq(self, _pin=None):
        self.edges += 1

    def _afe(self, mode):
        afe = getattr(self.board, "afe", None)
        if afe is None:
            return
        try:
            afe.set_mode(mode)
        except (NotImplementedError, OSError):
            self.afe_errors += 1

    def enter(self):
        self.on = True
        self.entries += 1
        self._afe(_MODE_SLEEP)

    def leave(self):
        self.on = False
        self._afe(_MODE_NORMAL)

    def woken(self):
        """True once per batch of wake-pin edges since the last call."""
        e = self.edges
        if e != self._seen:
            self._seen = e
            return True
        return False
