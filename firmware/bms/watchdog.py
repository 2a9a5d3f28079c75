"""Hardware watchdog, fed only when the control cycle really completes.

``feed_if_alive`` is called by the services poller after ``bms.step()``.  It
feeds the injected WDT (``machine.WDT(timeout=...)`` on a board) only if the
fast control task has run since the last feed *and* no control-cycle
exception was caught for EXC_QUIET_MS.  A task that hangs never returns, so
nothing feeds; a task that keeps raising (the core catches it, opens every
relay and latches INTERNAL) stops the feeding too, even one that raises only
in the slow task once a second; either way the WDT
resets the MCU into the boot state, where every relay is open until fresh
measurements arrive.  Other monitored tasks (comms loops) can be added with
``watch(counter_fn, max_age_ms)``.

Boot reasons: ``reset_cause`` (machine.reset_cause, injected) is mapped by
the *names* of the machine module's constants, because their numbers differ
between ports.  A deliberate reset first writes a small intent file
(``prepare_reset``) so that the next boot can tell "restart command" or
"firmware update" from a watchdog bite (rp2's machine.reset() itself reports
WDT_RESET).
"""
from micropython import const

from bms.ticks import ticks_diff

# No new control-cycle exception for this long before the WDT is fed again, and
# before a reset may clear INTERNAL (bms.core): two slow-task periods and a
# fast tick, so a task that raises at every run of the slowest one (1 s) never
# lets it.  Below the WDT timeout (4 s): a single exception does not reset.
EXC_QUIET_MS = const(2050)

R_UNKNOWN = const(0)
R_POWER_ON = const(1)
R_WATCHDOG = const(2)
_R_HARD = const(3)
R_SOFT = const(4)
_R_DEEPSLEEP = const(5)
_R_BROWNOUT = const(6)
R_COMMAND = const(7)     # restart requested over comms
R_UPDATE = const(8)      # restart into staged firmware
_R_ROLLBACK = const(9)    # the trial firmware did not arm; previous one restored
_R_SLEEP = const(10)
REASON_NAMES = ("unknown", "power_on", "watchdog", "hard", "soft", "deepsleep",
                "brownout", "command", "update", "rollback", "sleep")

_MACHINE_NAMES = (("PWRON_RESET", R_POWER_ON), ("WDT_RESET", R_WATCHDOG),
                  ("HARD_RESET", _R_HARD), ("SOFT_RESET", R_SOFT),
                  ("DEEPSLEEP_RESET", _R_DEEPSLEEP), ("BROWNOUT_RESET", _R_BROWNOUT))

_FAST_TASK = const(1)  # index of Bms._fast in bms.sched (cells, fast, slow)
# A hang raises no exception: nothing is latched, the watchdog resets, the
# relays close again at the next boot, and so on.  This many watchdog boots
# in a row, none after WDT_CLEAR_S of operation, latch internal (services).
WDT_LOOP_BOOTS = const(3)
WDT_CLEAR_S = const(600)
INTENT_FILE = "/data/reset.why"


def classify(code, machine=None):
    """Our R_* reason for a ``machine.reset_cause()`` code."""
    if machine is not None:
        for name, r in _MACHINE_NAMES:
            if getattr(machine, name, None) == code:
                return r
    return R_UNKNOWN


def boot_reason(fs, reset_cause=None, machine=None):
    """(reason, machine_code) for this boot; consumes the intent file."""
    code = -1
    if reset_cause is not None:
        try:
            code = reset_cause()
        except Exception:  # noqa: BLE001 - a missing API must not stop the boot
            code = -1
    reason = classify(code, machine)
    intent = None
    if fs is not None:
        try:
            f = fs.open(INTENT_FILE, "rb")
            try:
                intent = f.read(1)
            finally:
                f.close()
            fs.remove(INTENT_FILE)
        except OSError:
            intent = None
    if intent and reason != R_POWER_ON and reason != _R_BROWNOUT:
        # A power loss after the intent was written wins: that is what happened.
        reason = intent[0]
    return reason, code


def prepare_reset(fs, reason):
    """Record why we are about to reset (best effort)."""
    try:
        f = fs.open(INTENT_FILE, "wb")
        try:
            f.write(bytes((reason,)))
        finally:
            f.close()
    except OSError:
        pass


class Watchdog:
    def __init__(self, wdt, sched, clock, task=_FAST_TASK, bms=None):
        self.wdt = wdt
        self.sched = sched
        self.clock = clock
        self.task = task
        self.bms = bms
        self._runs = sched.runs[task]
        self._exc = bms.exceptions if bms is not None else 0
        self._exc_at = None     # ticks of the last new exception, until quiet
        self.feeds = 0
        self.withheld = 0
        self.stopped = False
        self._watch = []
        self.last_feed = clock.ticks_ms()

    def watch(self, counter, max_age_ms):
        """Also require ``counter()`` to change at least every ``max_age_ms``."""
        now = self.clock.ticks_ms()
        self._watch.append([counter, counter(), now, max_age_ms])

    def alive(self):
        runs = self.sched.runs[self.task]
        if runs == self._runs:
            return False
        now = self.clock.ticks_ms()
        if self.bms is not None:
            if self.bms.exceptions != self._exc:
                self._exc = self.bms.exceptions
                self._exc_at = now
            if self._exc_at is not None:
                if ticks_diff(now, self._exc_at) < EXC_QUIET_MS:
                    self._runs = runs
                    return False
                self._exc_at = None
        for w in self._watch:
            v = w[0]()
            if v != w[1]:
                w[1] = v
                w[2] = now
            elif ticks_diff(now, w[2]) > w[3]:
                return False
        self._runs = runs
        return True

    def feed_if_alive(self):
        """Feed the WDT if the control cycle made progress; returns whether it fed."""
        if not self.stopped and self.alive():
            self.wdt.feed()
            self.feeds = (self.feeds + 1) & 0x3FFFFFFF   # a small int on every port
            self.last_feed = self.clock.ticks_ms()
            return True
        self.withheld = (self.withheld + 1) & 0x3FFFFFFF
        return False

    def stop(self):
        """Never feed again: forces a reset (used by restart / update)."""
        self.stopped = True
