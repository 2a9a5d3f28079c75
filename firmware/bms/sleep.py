"""One-key sleep and smart sleep, driven by the core's measurements.

States:
  AWAKE     normal operation; counts idle time while |I| < idle_ma
  ASLEEP    sleep requested: the core opens charge and discharge relays
            (``bms.sleep_requested``); the board may enter a low-power mode

Transitions (``step(now, current_ma, key, charger)`` once per poll):
  AWAKE  -> ASLEEP  key held ``hold_ms`` (one-key sleep), or |I| < idle_ma
                    for ``idle_ms`` (smart sleep, when enabled; ``recheck_ms``
                    after a periodic wake), or ``request()`` (CMD_SLEEP);
                    none of them while a charger is there (``charger``): it
                    would wake the BMS at the next poll, after the relays had
                    opened under its current (the core refuses CMD_SLEEP then)
  ASLEEP -> AWAKE   wake sources that can happen while the relays are open:
                    a key press; a charger on the load / charge side
                    (``charger``: the core's charger_present); a bus request
                    (``wake()``: CMD_WAKE over Modbus / BLE); the periodic
                    wake every ``period_ms`` to measure (the relays close, a
                    load or charger that appeared meanwhile keeps it awake,
                    otherwise it sleeps again after ``recheck_ms``); and
                    |I| >= wake_ma where a path still conducts (body diode),
                    counted from SETTLE_MS after entering: the samples before
                    are of the path before the relays opened (a sleep under
                    load woke at once and closed the relay it had just opened)

Sleep opens the relays (``opens_relays``) only if at least one wake source
that needs no current exists: the periodic wake (on by default), a key, or
a charger sense (``has_wake``).  With ``period_ms=0`` and neither, sleep is
a state shown to the user and the relays stay as they are - current cannot
flow through open relays, so a current wake alone would never come.

The key is the board's sleep button (``sleep_key``, a momentary push button),
not the ON/OFF switch K, which stays on for as long as discharge is wanted; a
*press* is a rising edge after it was released, so a key held through the
sleep cannot wake at once.
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
C_CHARGER = const(5)
C_PERIODIC = const(6)
C_BUS = const(7)
CAUSE_NAMES = ("", "key", "idle", "command", "current", "charger", "periodic", "bus")

PERIOD_MS = 15 * 60000     # periodic wake to measure
RECHECK_MS = 2 * 60000     # idle time before sleeping again after a periodic wake
SETTLE_MS = const(500)     # asleep this long before current can wake: the relays opened


class Sleep:
    def __init__(self, idle_ms=30 * 60000, idle_ma=200, wake_ma=500, hold_ms=3000,
                 smart=True, period_ms=PERIOD_MS, recheck_ms=RECHECK_MS, has_wake=False):
        self.idle_ms = idle_ms
        self.period_ms = period_ms
        self.recheck_ms = recheck_ms
        self.has_wake = has_wake   # a key or charger sense is wired
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
        self._short = False
        self.changed = False

    def request(self):
        self._req = C_COMMAND

    def wake(self):
        """A bus request (CMD_WAKE over Modbus / BLE)."""
        self._req = C_BUS

    @property
    def opens_relays(self):
        return self.period_ms > 0 or self.has_wake

    def _enter(self, st, cause, now):
        self.state = st
        self.cause = cause
        self.changed = True
        self._idle_since = now
        self._key_since = None
        self._short = False

    def step(self, now, current_ma, key, charger=False):
        """Advance; returns True when the state changed."""
        self.changed = False
        a = current_ma if current_ma >= 0 else -current_ma
        press = key and not self._key_prev
        self._key_prev = key
        req = self._req
        self._req = _C_NONE
        if self.state == AWAKE:
            if charger:
                # A charger wakes a sleeping BMS (below): sleep entered now
                # would open the charge relay under its current and close it
                # again at the next poll.  The key's hold starts again after.
                self._key_since = None
                self._idle_since = now
                self._short = False
                return False
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
                self._short = False
            else:
                lim = self.recheck_ms if self._short else self.idle_ms
                if self.smart and ticks_diff(now, self._idle_since) >= lim:
                    self._enter(ASLEEP, C_IDLE, now)
                    return True
        else:
            if a >= self.wake_ma and ticks_diff(now, self._idle_since) >= SETTLE_MS:
                self._enter(AWAKE, C_CURRENT, now)
                return True
            if press:
                self._enter(AWAKE, C_KEY, now)
                return True
            if req == C_BUS:
                self._enter(AWAKE, C_BUS, now)
                return True
            if charger:
                self._enter(AWAKE, C_CHARGER, now)
                return True
            if self.period_ms > 0 and ticks_diff(now, self._idle_since) >= self.period_ms:
                self._enter(AWAKE, C_PERIODIC, now)
                self._short = True   # measure, then sleep again soon if still idle
                return True
        return False
