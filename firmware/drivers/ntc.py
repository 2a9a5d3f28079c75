"""NTC thermistors on the MCU ADC (``machine.ADC.read_u16`` interface).

Divider: the NTC sits between the ADC pin and ground with ``r_series`` from
the pin to the ADC reference (``high_side=True`` swaps them).  The reading is
ratiometric, so the reference voltage cancels:

    code = full_scale * R_ntc / (R_ntc + r_series)     (low side)

Models (floats, used only when a table is built):
  Beta(r25, beta)                 R = R25 * exp(B * (1/T - 1/T25))
  SteinhartHart(a, b, c)          1/T = a + b ln R + c (ln R)^3, inverted in
                                  closed form for R(T)

``NtcTable`` precomputes the ADC code at every ``step_dc`` from ``t_min_dc``
to ``t_max_dc`` into an ``array('H')``; a sample is then a binary search and
one integer interpolation: no floats and no allocation per sample.  Several
channels with the same part and divider share one table.

A code beyond the table's cold end (resistance above R(t_min), i.e. an open
sensor or broken wire) reads T_OPEN, beyond the hot end (a shorted sensor or
pin) T_SHORT: both are sensor faults for the core, never a temperature.
``Ntc.read`` averages ``samples`` conversions, and a single sample beyond
either end makes the whole read a sensor fault (a contact that opens during
the read; averaged in, it would be a plausible wrong temperature).
The default range -55..+150 degC is wider than any battery limit, so a real
temperature never lands in the fault bands.
"""
import math
from array import array

from micropython import const

from bms.measurements import T_OK, T_OPEN, T_SHORT

T0_K = 273.15
_FULL_SCALE = const(65535)


class Beta:
    def __init__(self, r25=10000.0, beta=3950.0, t0_c=25.0):
        if r25 <= 0 or beta <= 0:
            raise ValueError("NTC r25/beta must be > 0")
        self.r25 = r25
        self.beta = beta
        self.t0 = t0_c + T0_K

    def resistance(self, t_c):
        return self.r25 * math.exp(self.beta * (1.0 / (t_c + T0_K) - 1.0 / self.t0))

    def temperature(self, r):
        return 1.0 / (1.0 / self.t0 + math.log(r / self.r25) / self.beta) - T0_K


def _cbrt(x):
    return x ** (1.0 / 3.0) if x >= 0 else -((-x) ** (1.0 / 3.0))


class SteinhartHart:
    def __init__(self, a, b, c):
        if b <= 0 or c < 0:
            raise ValueError("Steinhart-Hart b must be > 0, c >= 0")
        self.a = a
        self.b = b
        self.c = c

    @classmethod
    def from_points(cls, t1, r1, t2, r2, t3, r3):
        """Coefficients through three (degC, ohm) points of a datasheet R/T table."""
        l1, l2, l3 = math.log(r1), math.log(r2), math.log(r3)
        y1, y2, y3 = 1.0 / (t1 + T0_K), 1.0 / (t2 + T0_K), 1.0 / (t3 + T0_K)
        g2 = (y2 - y1) / (l2 - l1)
        g3 = (y3 - y1) / (l3 - l1)
        c = (g3 - g2) / (l3 - l2) / (l1 + l2 + l3)
        b = g2 - c * (l1 * l1 + l1 * l2 + l2 * l2)
        a = y1 - (b + l1 * l1 * c) * l1
        return cls(a, b, c)

    def temperature(self, r):
        ln = math.log(r)
        return 1.0 / (self.a + self.b * ln + self.c * ln * ln * ln) - T0_K

    def resistance(self, t_c):
        y = 1.0 / (t_c + T0_K)
        if self.c == 0:
            return math.exp((y - self.a) / self.b)
        x = (self.a - y) / self.c
        q = math.sqrt((self.b / (3.0 * self.c)) ** 3 + x * x / 4.0)
        return math.exp(_cbrt(q - x / 2.0) - _cbrt(q + x / 2.0))


class NtcTable:
    def __init__(self, model, r_series=10000.0, high_side=False, t_min_dc=-550,
                 t_max_dc=1500, step_dc=25, full_scale=_FULL_SCALE):
        if t_max_dc <= t_min_dc or step_dc <= 0 or (t_max_dc - t_min_dc) % step_dc:
            raise ValueError("NTC table range")
        self.model = model
        self.r_series = r_series
        self.high_side = high_side
        self.t_min = t_min_dc
        self.step = step_dc
        self.full_scale = full_scale
        n = (t_max_dc - t_min_dc) // step_dc + 1
        # Stored as the low-side code (falls as T rises) for either wiring.
        self.codes = array("H", [0] * n)
        prev = full_scale + 1
        for k in range(n):
            c = int(round(self.code_at(t_min_dc + k * step_dc, low=True)))
            if c >= prev:
                raise ValueError("NTC table not monotonic at %d" % (t_min_dc + k * step_dc))
            self.codes[k] = c
            prev = c
        self.n = n

    def code_at(self, t_dc, low=False):
        """Ideal ADC code at t_dc (float; tests and table building)."""
        r = self.model.resistance(t_dc / 10.0)
        c = self.full_scale * r / (r + self.r_series)
        if self.high_side and not low:
            c = self.full_scale - c
        return c

    def norm(self, code):
        return self.full_scale - code if self.high_side else code

    def classify(self, code):
        """T_OK, T_OPEN or T_SHORT for a raw ADC code."""
        c = self.norm(code)
        if c > self.codes[0]:
            return T_OPEN
        if c < self.codes[self.n - 1]:
            return T_SHORT
        return T_OK

    def interp(self, code):
        """Temperature in 0.1 degC of a code that classify() accepted;
        integers only, no allocation."""
        code = self.norm(code)
        codes = self.codes
        lo = 0
        hi = self.n - 1
        while hi - lo > 1:  # codes[lo] >= code >= codes[hi]
            mid = (lo + hi) >> 1
            if codes[mid] >= code:
                lo = mid
            else:
                hi = mid
        c0 = codes[lo]
        span = c0 - codes[hi]
        frac = (c0 - code) * self.step
        return self.t_min + lo * self.step + (frac + (span >> 1)) // span

    def lookup(self, code):
        """(status, t_dc) - allocates a tuple: for tests and diagnostics."""
        st = self.classify(code)
        if st == T_OPEN:
            return st, self.t_min
        if st == T_SHORT:
            return st, self.t_min + (self.n - 1) * self.step
        return st, self.interp(code)


class Ntc:
    """One thermistor channel: ``read()`` samples the ADC and stores
    ``temp_dc`` / ``status`` / ``code``; returns the status."""

    def __init__(self, adc, table, samples=4):
        if samples < 1 or samples > 64:
            raise ValueError("samples 1..64")
        self.adc = adc
        self.table = table
        self.samples = samples
        self.code = 0
        self.temp_dc = 0
        self.status = T_OK

    def read(self):
        adc = self.adc
        total = 0
        lo = 0x10000
        hi = -1
        for _ in range(self.samples):
            c = adc.read_u16()
            total += c
            if c < lo:
                lo = c
            if c > hi:
                hi = c
        code = total // self.samples
        self.code = code
        tb = self.table
        # Every sample must be in the table, not just their mean: one open or
        # shorted sample averaged in is a plausible, wrong temperature.  The
        # table's range is contiguous, so checking the extremes is enough.
        st = tb.classify(lo)
        if st == T_OK:
            st = tb.classify(hi)
        self.status = st
        if st == T_OK:
            self.temp_dc = tb.interp(code)
        return st
