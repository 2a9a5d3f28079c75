# NTC driver: divider math, beta and Steinhart-Hart tables, open/short.
import math

import drv_helpers  # noqa: F401
from drv_helpers import heap_locked, raises

from bms.measurements import T_OK, T_OPEN, T_SHORT
from drivers.ntc import Beta, Ntc, NtcTable, SteinhartHart


class FakeAdc:
    def __init__(self, code):
        self.code = code
        self.reads = 0

    def read_u16(self):
        self.reads += 1
        return self.code


def _beta_r(t_c, r25=10000.0, b=3950.0):
    return r25 * math.exp(b * (1.0 / (t_c + 273.15) - 1.0 / 298.15))


def _code(r, rs=10000.0):
    return int(round(65535.0 * r / (r + rs)))


def test_beta_divider_matches_formula_across_range():
    tb = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0)
    for t_dc in range(-400, 1251, 7):
        st, t = tb.lookup(_code(_beta_r(t_dc / 10.0)))
        assert st == T_OK
        assert abs(t - t_dc) <= 1, (t_dc, t)
    # 25 degC on a 10k/10k divider is mid-scale.
    st, t = tb.lookup(32768)
    assert st == T_OK and t == 250


def test_steinhart_hart_through_three_datasheet_points():
    # Three points of a 10k NTC R/T table (degC, ohm).
    pts = ((-20.0, 97060.0), (25.0, 10000.0), (85.0, 1070.0))
    sh = SteinhartHart.from_points(pts[0][0], pts[0][1], pts[1][0], pts[1][1],
                                   pts[2][0], pts[2][1])
    for t, r in pts:
        # 1/T = a + b ln R + c ln^3 R, evaluated here independently.
        ln = math.log(r)
        tk = 1.0 / (sh.a + sh.b * ln + sh.c * ln ** 3)
        assert abs(tk - 273.15 - t) < 1e-6
        assert abs(sh.resistance(t) - r) / r < 1e-6
    tb = NtcTable(sh, r_series=10000.0)
    for t, r in pts:
        st, got = tb.lookup(_code(r))
        assert st == T_OK and abs(got - int(t * 10)) <= 1


def test_open_and_short_are_sensor_faults():
    tb = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0)
    assert tb.lookup(65535)[0] == T_OPEN     # NTC open: pulled to the reference
    assert tb.lookup(0)[0] == T_SHORT        # NTC shorted to ground
    # Just inside the table (-55 degC ~ 1.29 MOhm) is still a temperature.
    assert tb.lookup(_code(_beta_r(-54.0)))[0] == T_OK
    hs = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0, high_side=True)
    assert hs.lookup(0)[0] == T_OPEN         # high-side NTC open: pulled down
    assert hs.lookup(65535)[0] == T_SHORT
    r = _beta_r(40.0)
    st, t = hs.lookup(int(round(65535.0 * 10000.0 / (r + 10000.0))))
    assert st == T_OK and abs(t - 400) <= 1


def test_channel_averages_and_keeps_last_good_value_on_fault():
    tb = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0)
    adc = FakeAdc(_code(_beta_r(30.0)))
    ch = Ntc(adc, tb, samples=4)
    assert ch.read() == T_OK and abs(ch.temp_dc - 300) <= 1 and adc.reads == 4
    adc.code = 65535
    assert ch.read() == T_OPEN and ch.status == T_OPEN
    assert abs(ch.temp_dc - 300) <= 1
    adc.code = 10
    assert ch.read() == T_SHORT


class SeqAdc:
    """Returns the codes of ``seq`` in turn (a wire that breaks contact
    during a read)."""

    def __init__(self, seq):
        self.seq = seq
        self.i = 0

    def read_u16(self):
        c = self.seq[self.i % len(self.seq)]
        self.i += 1
        return c


def test_a_read_with_an_open_or_shorted_sample_is_a_sensor_fault():
    # ntc.py / docs/drivers.md: an open or shorted sensor is a sensor fault,
    # never a temperature - also when only some of the samples of one read
    # see it (a loose crimp or connector, the ESP32's channel at its
    # saturation edge).  Averaged in, one open sample of four made a 60 degC
    # cell read about 34 degC (t_cell blind) and one shorted sample a 0 degC
    # cell about 18 degC (the cold-charge block blind).
    tb = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0)
    hot = _code(_beta_r(60.0))
    ch = Ntc(SeqAdc([hot, 65535, hot, hot]), tb, samples=4)
    assert ch.read() == T_OPEN, ch.temp_dc
    cold = _code(_beta_r(0.0))
    ch = Ntc(SeqAdc([cold, cold, 0, cold]), tb, samples=4)
    assert ch.read() == T_SHORT, ch.temp_dc
    hs = NtcTable(Beta(10000.0, 3950.0), r_series=10000.0, high_side=True)
    c = 65535 - hot
    ch = Ntc(SeqAdc([c, c, c, 0]), hs, samples=4)    # high side: open pulls down
    assert ch.read() == T_OPEN
    # Noise within the table still averages.
    ch = Ntc(SeqAdc([hot - 40, hot + 40, hot - 20, hot + 20]), tb, samples=4)
    assert ch.read() == T_OK and abs(ch.temp_dc - 600) <= 1


def test_bad_configuration_rejected():
    assert raises(ValueError, Beta, 0.0, 3950.0)
    assert raises(ValueError, NtcTable, Beta(), 10000.0, False, 100, 50)
    assert raises(ValueError, Ntc, FakeAdc(0), NtcTable(Beta()), 0)


def test_sample_does_not_allocate():
    tb = NtcTable(Beta(10000.0, 3435.0), r_series=10000.0)
    adc = FakeAdc(_code(_beta_r(-10.0, 10000.0, 3435.0)))
    ch = Ntc(adc, tb, samples=8)

    def one():
        ch.read()
        return ch.temp_dc

    assert abs(heap_locked(one) + 100) <= 1
