"""drivers.rtc: the calendar against dates typed in from a calendar, and the
RTC round trip through a fake machine.RTC; MicroPython-compatible."""
from drivers.rtc import Rtc, civil_from_days, days_from_civil


class FakeRtc:
    def __init__(self, t=(2021, 1, 1, 4, 0, 0, 0, 0)):
        self.t = t

    def datetime(self, t=None):
        if t is None:
            return self.t
        self.t = t


def test_calendar():
    assert days_from_civil(2020, 1, 1) == 0
    assert days_from_civil(2020, 3, 1) == 60          # 2020 is a leap year
    assert days_from_civil(2026, 5, 28) == 2339
    assert civil_from_days(2339) == (2026, 5, 28)
    assert civil_from_days(days_from_civil(2100, 2, 28) + 1) == (2100, 3, 1)   # not a leap year
    for z in range(0, 40000, 37):
        assert days_from_civil(*civil_from_days(z)) == z


def test_round_trip_and_implausible_dates():
    r = Rtc(FakeRtc())
    assert r.now() == 0                 # 2021: before 2024, a reset value
    s = 1780000000 - 1577836800         # 2026-05-28T20:26:40Z since 2020
    r.set(s)
    assert r.rtc.t[:3] == (2026, 5, 28) and r.rtc.t[4:7] == (20, 26, 40)
    assert r.rtc.t[3] == 3              # a Thursday (Monday = 0)
    assert r.now() == s
