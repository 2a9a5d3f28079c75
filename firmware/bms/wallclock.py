"""Wall-clock time for event stamps, set from outside (PC tool, RTC).

The core runs on ``ticks_ms`` (wraps every 2**30 ms, about 12.4 days) and
has no idea of the date.  Once a client sets the time, ``at(now)`` gives
seconds since 2020-01-01 00:00 UTC (``EPOCH_2020`` is that instant in Unix
seconds).  That count stays a small int on a 32-bit port until 2054, so
stamping an event allocates nothing; Unix time (beyond 2**30) is only
formed in the register block, word by word.  0 means "not set".

``tick(now)`` must run at least once per wrap period (the slow task calls
it every second): it moves the reference forward so the ticks difference
never wraps.
"""
from micropython import const

from bms.ticks import ticks_add, ticks_diff

EPOCH_2020 = const(1577836800)   # 2020-01-01T00:00:00Z in Unix seconds
_REBASE_MS = const(3600000)


class WallClock:
    def __init__(self):
        self.base_s = 0       # seconds since 2020 at base_ms; 0: not set
        self.base_ms = 0
        self.sets = 0         # times the clock was set since boot

    @property
    def valid(self):
        return self.base_s > 0

    def set(self, s2020, now):
        self.base_s = s2020 if s2020 > 0 else 0
        self.base_ms = now
        self.sets += 1

    def at(self, now):
        """Seconds since 2020-01-01 at ticks ``now``; 0 when not set."""
        if self.base_s <= 0:
            return 0
        return self.base_s + ticks_diff(now, self.base_ms) // 1000

    def tick(self, now):
        if self.base_s <= 0:
            return
        d = ticks_diff(now, self.base_ms)
        if d >= _REBASE_MS:
            s = d // 1000
            self.base_s += s
            self.base_ms = ticks_add(self.base_ms, s * 1000)
