"""The board's real-time clock (``machine.RTC``) in the core's wall-clock
unit, seconds since 2020-01-01 UTC (``bms.wallclock``).

The calendar arithmetic is done here with small ints (days since 2020 and
the civil-from-days algorithm), not through ``time.gmtime``/``mktime``,
whose epoch differs between ports and firmware versions.  ``now()`` is 0
when the RTC holds a date before 2024: a chip that lost power reads its
reset value, which must not become an event time stamp.
"""
from micropython import const

_MIN_YEAR = const(2024)
_DAYS_2020 = const(737730)   # 719468 (the algorithm's 0000-03-01 -> 1970) + 18262 (1970 -> 2020)


def days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - _DAYS_2020


def civil_from_days(z):
    z += _DAYS_2020
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


class Rtc:
    def __init__(self, rtc):
        self.rtc = rtc    # machine.RTC()

    def set(self, s2020):
        days = s2020 // 86400
        s = s2020 - days * 86400
        y, m, d = civil_from_days(days)
        wd = (days + 2) % 7   # 2020-01-01 was a Wednesday; machine.RTC: Monday = 0
        self.rtc.datetime((y, m, d, wd, s // 3600, (s // 60) % 60, s % 60, 0))

    def now(self):
        t = self.rtc.datetime()
        if t[0] < _MIN_YEAR:
            return 0
        return days_from_civil(t[0], t[1], t[2]) * 86400 + t[4] * 3600 + t[5] * 60 + t[6]
