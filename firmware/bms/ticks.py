"""Millisecond tick arithmetic with MicroPython's ``time.ticks_*`` semantics.

Ticks wrap at 2**30 exactly like ``time.ticks_ms()`` on every port, and stay
small ints so that no tick operation allocates.  The core only ever compares
ticks through ``ticks_diff``, so a virtual clock in tests can start just
before the wrap and prove it.
"""
from micropython import const

_TICKS_PERIOD = const(0x40000000)
TICKS_MAX = const(0x3FFFFFFF)
_TICKS_HALF = const(0x20000000)


def ticks_add(t, delta):
    return (t + delta) & TICKS_MAX


def ticks_diff(a, b):
    """Signed ``a - b`` in ms, correct across one wrap."""
    return ((a - b + _TICKS_HALF) & TICKS_MAX) - _TICKS_HALF


# On a port whose own ticks wrap at 2**30 too (every 32-bit board), the C
# builtins do the same arithmetic several times faster: on the RP2040 a
# Python-level call costs more than the scheduler's whole comparison.  The
# 64-bit unix port wraps elsewhere and keeps the functions above.
try:
    import time as _time
    if _time.ticks_add(TICKS_MAX, 1) == 0 and _time.ticks_diff(0, TICKS_MAX) == 1:
        ticks_add = _time.ticks_add  # noqa: F811
        ticks_diff = _time.ticks_diff  # noqa: F811
except (ImportError, AttributeError):
    pass


# Oldest age a kept tick stamp holds (cap_age): above every staleness limit
# and hold time, far below the 6.2 days after which a tick difference wraps.
AGE_CAP_MS = const(3600000)


def cap_age(now, t):
    """Tick stamp ``t``, moved up to AGE_CAP_MS before ``now`` if it is older:
    kept at least once a day, an age read from it never wraps to recent."""
    if ticks_diff(now, t) > AGE_CAP_MS:
        return ticks_add(now, -AGE_CAP_MS)
    return t


class VirtualClock:
    """A clock for tests and the simulator: time moves only when told."""

    def __init__(self, start=0):
        self._now = start & TICKS_MAX
        self.elapsed_ms = 0

    def ticks_ms(self):
        return self._now

    def advance(self, ms):
        self._now = (self._now + ms) & TICKS_MAX
        self.elapsed_ms += ms


class BoardClock:
    """The real clock on a board (or the unix port)."""

    def __init__(self):
        import time
        self._t = time

    def ticks_ms(self):
        return self._t.ticks_ms() & TICKS_MAX

    def ticks_us(self):
        # Modbus t1.5/t3.5 need sub-ms resolution at 9600 baud and above.
        return self._t.ticks_us() & TICKS_MAX
