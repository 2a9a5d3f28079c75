"""Buzzer patterns per alarm level: (on ms, period ms).

Warning: a short chirp every 5 s; protection: 0.5 s every 2 s; critical:
continuous fast beeping.  Pure function of time and level, so it needs no
timer of its own.
"""
from bms.ticks import ticks_diff

_ON = (0, 100, 500, 250)
_PERIOD = (1, 5000, 2000, 500)


class Buzzer:
    def __init__(self):
        self.on = False
        self._t0 = 0
        self._level = 0

    def step(self, now, level, enabled):
        if level != self._level:
            self._level = level
            self._t0 = now
        if not enabled or level <= 0:
            on = False
        else:
            on = (ticks_diff(now, self._t0) % _PERIOD[level]) < _ON[level]
        changed = on != self.on
        self.on = on
        return changed
