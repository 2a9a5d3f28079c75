"""Fixed-period task scheduler on an injected clock.

Deadlines are absolute (``next += period``) so periods do not drift with
execution time.  A task that falls more than one period behind counts an
overrun, runs once and goes on at its next deadline on the same grid (no
burst of catch-up cycles): the tasks keep their phases to each other (set
apart so that they do not fall due together), however long the start-up or
a stop at the REPL took.

A task gets its deadline as ``now`` (the tick time), not the moment its pass
began: the time between two of its runs is then exactly its period, so 20
fast ticks are 1000 ms and a protection delay expires at the tick it should.
With the pass start (up to a few ms late, by whatever ran before) a delay of
1000 ms sometimes summed to 999 ms at the 20th tick and waited a whole
extra tick (emulated RP2040).  A run more than a period late gets the real
time.  The deadline is advanced before the task runs, so a task that
raises cannot spin.  Nothing here sleeps: the board loop asks
``ms_to_next`` and sleeps itself; the simulator advances its virtual clock.

``run_at`` asks for one extra run of a task before its next deadline (the
protection's delay expiring between two fast ticks, see bms.protection
"Onset"): it gets that time as ``now`` and the task's grid stays as it
was, so its phases to the other tasks do not move.  ``ms_to(i)`` counts
it in.

CPU time per task: when the clock has ``ticks_us`` (a board; the bench's
clocks), each run is timed and ``us_max`` / ``us_sum`` / ``timed`` keep the
worst and the total since ``reset_timing()``.  ``late_max`` keeps, with
any clock, the worst start after a deadline (whatever held the loop: a
flash erase, a collection, another task).  Plain ints in preallocated
arrays: timing allocates nothing, and the sums restart before they could
leave the small-int range.
"""
from array import array

from micropython import const

from bms.ticks import ticks_add, ticks_diff

_SUM_LIMIT = const(0x3FFFFFFF - 0x1000000)   # restart the sums well before 2**30


class Scheduler:
    def __init__(self, clock, max_tasks=8):
        self.clock = clock
        self._fn = []
        self.current = -1   # the task running now (a soft timer callback asks), -1 none
        self.period = array("i", [0] * max_tasks)
        self.next = array("i", [0] * max_tasks)
        self.runs = array("i", [0] * max_tasks)
        self.overruns = array("i", [0] * max_tasks)
        self.us_max = array("i", [0] * max_tasks)
        self.us_sum = array("i", [0] * max_tasks)
        self.timed = array("i", [0] * max_tasks)
        self.late_max = array("i", [0] * max_tasks)  # worst ms a run started after its deadline
        self.extra = array("i", [0] * max_tasks)     # run_at time ...
        self.has_extra = bytearray(max_tasks)        # ... while this is 1
        self._us = getattr(clock, "ticks_us", None)
        self.n = 0

    def add(self, fn, period_ms, phase_ms=0):
        """Register ``fn(now_ms)``; store bound methods once, here, not per call."""
        i = self.n
        if i >= len(self.period):
            raise ValueError("too many tasks")
        self._fn.append(fn)
        self.period[i] = period_ms
        self.next[i] = ticks_add(self.clock.ticks_ms(), phase_ms)
        self.n = i + 1
        return i

    def run_due(self):
        """Run every task whose deadline has come; returns how many ran."""
        now = self.clock.ticks_ms()
        ran = 0
        for i in range(self.n):
            if self.has_extra[i]:
                t = self.extra[i]
                late = ticks_diff(now, t)
                if late >= 0 and ticks_diff(self.next[i], now) > 0:
                    self.has_extra[i] = 0
                    ran += 1
                    self._call(i, t, late)
                    continue
            t = self.next[i]
            late = ticks_diff(now, t)
            if late >= 0:
                self.has_extra[i] = 0   # the regular run does what it asked
                nxt = ticks_add(t, self.period[i])
                if ticks_diff(now, nxt) >= 0:
                    self.overruns[i] += 1
                    p = self.period[i]
                    nxt = ticks_add(t, (ticks_diff(now, t) // p + 1) * p)
                    t = now
                self.next[i] = nxt
                ran += 1
                self._call(i, t, late)
        return ran

    def _call(self, i, t, late):
        """Run task ``i`` with ``now`` = ``t``, ``late`` ms after it was due."""
        if late > self.late_max[i]:
            self.late_max[i] = late
        self.runs[i] = (self.runs[i] + 1) & 0x3FFFFFFF   # a small int on every port
        us = self._us
        self.current = i
        try:
            if us is None:
                self._fn[i](t)
            else:
                t0 = us()
                self._fn[i](t)
                self._timed(i, ticks_diff(us(), t0))
        finally:
            self.current = -1

    def run_at(self, i, t):
        """One extra run of task ``i`` at ``t``, if that is before its next
        deadline (otherwise the regular run comes first and does it)."""
        if ticks_diff(self.next[i], t) > 0:
            if not self.has_extra[i] or ticks_diff(self.extra[i], t) > 0:
                self.extra[i] = t
                self.has_extra[i] = 1

    def _timed(self, i, dt):
        if dt > self.us_max[i]:
            self.us_max[i] = dt
        if self.us_sum[i] > _SUM_LIMIT:
            self.us_sum[i] = 0
            self.timed[i] = 0
        self.us_sum[i] += dt
        self.timed[i] += 1

    def reset_timing(self):
        for i in range(self.n):
            self.us_max[i] = 0
            self.us_sum[i] = 0
            self.timed[i] = 0
            self.late_max[i] = 0

    def ms_to(self, i):
        """ms until task ``i`` runs next, an extra run (``run_at``) included;
        negative if it is overdue."""
        now = self.clock.ticks_ms()
        d = ticks_diff(self.next[i], now)
        if self.has_extra[i]:
            e = ticks_diff(self.extra[i], now)
            if e < d:
                d = e
        return d

    def ms_to_next(self):
        # ms_to inlined: the board loop asks this every pass.
        now = self.clock.ticks_ms()
        best = 0x3FFFFFFF   # the largest small int on a 32-bit port
        for i in range(self.n):
            d = ticks_diff(self.next[i], now)
            if d < best:
                best = d
            if self.has_extra[i]:
                d = ticks_diff(self.extra[i], now)
                if d < best:
                    best = d
        return best if best > 0 else 0
