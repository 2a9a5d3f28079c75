"""Bus-off recovery with back-off, shared by the master and the slaves.

A controller that went bus-off stays off until ``restart()``, and so does
one that stopped answering or was reset by a brown-out (its state read
raises OSError) or whose init failed at boot; restarting at
once on a shorted or mis-terminated bus would hammer it (and every other
node's error counters), so the restart waits ``backoff`` ms, doubling up to
``BACKOFF_MAX_MS`` while bus-off keeps coming back, and resets once the
controller has been error-active for ``_STABLE_MS``.

The controller's state is read at most every ``READ_MS`` while it can talk
(an MCP2515 state read is about 0.5 ms on an RP2040, and the master polls
the bus hundreds of times a second); bus-off is then seen within READ_MS,
which matches the shortest back-off before a restart.  Every 20 ms took
2.5 % of a 256S master's CPU (emulated RP2040).
"""
from micropython import const

from bms.ticks import ticks_add, ticks_diff

STATE_ERROR_ACTIVE = const(0)
STATE_ERROR_WARNING = const(1)
STATE_ERROR_PASSIVE = const(2)
STATE_BUS_OFF = const(3)

_BACKOFF_MIN_MS = const(100)
BACKOFF_MAX_MS = const(5000)
_STABLE_MS = const(10000)
READ_MS = const(100)


class BusGuard:
    def __init__(self, ctrl):
        self.ctrl = ctrl
        self.state = STATE_ERROR_ACTIVE
        self.bus_off_count = 0
        self.dead_count = 0     # state reads that failed (no answer, chip reset)
        self.restarts = 0
        self.backoff = _BACKOFF_MIN_MS
        self._waiting = False
        self._at = 0
        self._active_since = 0
        self._read_at = 0
        self._read_seen = False

    def step(self, now):
        """Returns True while the controller can talk (not bus-off)."""
        if self.state != STATE_BUS_OFF and self._read_seen \
                and ticks_diff(now, self._read_at) < READ_MS:
            return True
        self._read_seen = True
        self._read_at = now
        try:
            st = self.ctrl.state()
        except OSError:
            # The controller does not answer or left its mode (a brown-out
            # puts an MCP2515 back into configuration mode, deaf), or its
            # init failed at boot: restarted like bus-off, with the back-off.
            self.dead_count += 1
            st = STATE_BUS_OFF
        if st == STATE_BUS_OFF:
            if self.state != STATE_BUS_OFF:
                self.bus_off_count += 1
                self._waiting = True
                self._at = ticks_add(now, self.backoff)
            self.state = st
            if self._waiting and ticks_diff(now, self._at) >= 0:
                self._waiting = False
                self.restarts += 1
                nb = self.backoff * 2
                self.backoff = nb if nb < BACKOFF_MAX_MS else BACKOFF_MAX_MS
                try:
                    self.ctrl.restart()
                    st = self.ctrl.state()
                except OSError:
                    st = STATE_BUS_OFF
                # If the restart does not take, wait another back-off.
                if st == STATE_BUS_OFF:
                    self._waiting = True
                    self._at = ticks_add(now, self.backoff)
                else:
                    self.state = st
                    self._active_since = now
            return self.state != STATE_BUS_OFF
        if self.state == STATE_BUS_OFF:
            self._active_since = now
        self.state = st
        if st != STATE_ERROR_ACTIVE:
            self._active_since = now
        elif self.backoff != _BACKOFF_MIN_MS and ticks_diff(now, self._active_since) >= _STABLE_MS:
            self.backoff = _BACKOFF_MIN_MS
        return True
