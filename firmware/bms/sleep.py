"""One-key sleep and smart sleep, driven by the core's measurements.

States:
  AWAKE     normal operation; counts idle time while |I| < idle_ma
  ASLEEP    sleep requested: the core opens charge and discharge relays
            (``bms.sleep_requested``); the board may enter a low-power mode

Transitions (``step(now, current_ma, key)`` once per poll):
  AWAKE  -> ASLEEP  key held ``hold_ms`` (one-key sleep), or |I| < idle_ma
                    for ``idle_ms`` (smart sleep, when enabled), or
                    ``request()`` (the CMD_SLEEP command)
  ASLEEP -> AWAKE   |I| >= wake_ma (charger or load current through a body
                    diode / a still-closed path), a key press, or ``wake()``

The key is the same ON/OFF input the core reads; a *press* is a rising edge
after it was released, so a key held through the sleep cannot wake at once.
"""
from micropython import const

from bms.ticks import ticks_diff

AWAKE = const(0)
ASLEEP = const(1)
NAMES = ("awake", "asleep")

_C_NONE = const(0)
C_KEY = const(1)
C_IDLE = const(2)
C_COMMAND = const(3)
C_CURRENT = const(4)
CAUSE_NAMES = ("", "key", "idle", "command", "current")


class Sleep:
    def __init__(self, idle_ms=30 * 60000, idle_ma=200, wake_ma=500, hold_ms=3000,
                 smart=True):
        self.idle_ms = idle_ms
        self.idle_ma = idle_ma
        self.wake_ma = wake_ma
        self.hold_ms = hold_ms
        self.smart = smart
        self.state = AWAKE
        self.cause = _C_NONE
        self._idle_since = None
        self._key_since = None
        self._key_prev = False
        self._req = _C_NONE
        self.changed = False

    def request(self):
        self._req = C_COMMAND

    def wake(self):
        self._req = C_KEY

    def _enter(self, st, cause, now):
        self.state = st
        self.cause = cause
        self.changed = True
        self._idle_since = now
        self._key_since = None

    def step(self, now, current_ma, key):
        """Advance; returns True when the state changed."""
        self.changed = False
        a = current_ma if current_ma >= 0 else -current_ma
        press = key and not self._key_prev
        self._key_prev = key
        req = self._req
        self._req = _C_NONE
        if self.state == AWAKE:
            if req == C_COMMAND:
                self._enter(ASLEEP, C_COMMAND, now)
                return True
            if key:
                if self._key_since is None or press:
                    self._key_since = now
                elif ticks_diff(now, self._key_since) >= self.hold_ms:
                    self._enter(ASLEEP, C_KEY, now)
                    return True
            else:
                self._key_since = None
            if a >= self.idle_ma or self._idle_since is None:
                self._idle_since = now
            elif self.smart and ticks_diff(now, self._idle_since) >= self.idle_ms:
                self._enter(ASLEEP, C_IDLE, now)
                return True
        else:
            if a >= self.wake_ma:
                self._enter(AWAKE, C_CURRENT, now)
                return True
            if press or req == C_KEY:
                self._enter(AWAKE, C_KEY, now)
                return True
        return False
