"""A virtual microsecond clock shared by drivers and chip emulators.

The drivers wait through an injected ``sleep_us`` (``time.sleep_us`` on a
board).  In tests and the simulator that is ``UsClock.sleep_us``: it only
moves this clock forward, never the wall clock.  The chip emulators read the
same clock (``clock()``), so an access that comes before the time the data
sheet asks for is seen as too early, exactly as the real chip would see it.
Bus bytes take no virtual time: only the waits the driver asks for do.

``base`` (optional callable returning microseconds) lets the clock follow an
outside time as well, e.g. the pack model's simulated time; the sleeps add
on top.  MicroPython-compatible (the driver tests also run on the unix port).
"""

_TICKS_MAX = 0x3FFFFFFF  # time.ticks_ms() wraps at 2**30 on every port


class UsClock:
    def __init__(self, base=None, start_us=0):
        self.base = base
        self.us = start_us
        self.slept_us = 0   # sum of every sleep_us() (the drivers' waits)
        self.sleeps = 0     # number of sleep_us() calls

    def __call__(self):
        if self.base is None:
            return self.us
        return self.us + self.base()

    def sleep_us(self, us):
        if us < 0:
            raise ValueError("negative sleep")
        self.us += us
        self.slept_us += us
        self.sleeps += 1

    def advance_us(self, us):
        self.us += us

    def advance_ms(self, ms):
        self.us += ms * 1000

    def ticks_ms(self):
        return (self() // 1000) & _TICKS_MAX
