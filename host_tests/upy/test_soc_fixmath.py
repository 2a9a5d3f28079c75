# Fixed-point helpers of the SOC estimator against exact arithmetic (bms.fixmath).
import math

from bms import fixmath as F

TOP = (1 << 30) - 1


class Lcg:
    """Deterministic operands (MicroPython has no random.Random)."""

    def __init__(self, seed):
        self.x = seed

    def bits(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x >> (31 - n)

    def operand(self):
        v = self.bits(30) >> self.bits(5) % 30
        return -v if self.bits(1) else v


def _operands(n):
    g = Lcg(7)
    edges = [0, 1, 0x7FFF, 0x8000, (1 << 29) - 1, TOP, -1, -0x8000, -TOP]
    out = []
    for a in edges:
        for b in edges:
            out.append((a, b))
    for _ in range(n):
        out.append((g.operand(), g.operand()))
    return out


def test_mul_within_three_units_and_saturates():
    s_list = (0, 7, 15, 16, 24, 28, 30, 40)
    for a, b in _operands(600):
        for s in s_list:
            r = F.mul(a, b, s)
            ex = float(a) * float(b) / float(1 << s) if s < 31 else float(a) * float(b) / 2.0 ** s
            if abs(ex) >= F.SAT:
                assert abs(r) == F.SAT, (a, b, s, r)
            else:
                assert abs(r - ex) < 3.0 + abs(ex) * 1e-12, (a, b, s, r, ex)
                assert abs(r) <= abs(ex) + 1e-6      # toward zero


def test_div_relative_error_below_two_to_minus_19():
    for a, b in _operands(600):
        if b == 0:
            assert F.div(a, 0, 5) == (0 if a == 0 else (F.SAT if a > 0 else -F.SAT))
            continue
        for s in (0, 9, 20, 28):
            r = F.div(a, b, s)
            ex = float(a) * 2.0 ** s / float(b)
            if abs(ex) >= F.SAT:
                assert abs(r) == F.SAT, (a, b, s, r)
            else:
                assert abs(r - ex) <= 1.0 + abs(ex) * 2.0 ** -19, (a, b, s, r, ex)


def test_sqrt_hypot_isqrt():
    g = Lcg(3)
    for _ in range(2000):
        x = g.bits(30) >> g.bits(5) % 30
        n = F.isqrt(x)
        assert n * n <= x < (n + 1) * (n + 1), x
        r = F.sqrt(x, 28)
        ex = math.sqrt(float(x)) * 16384.0
        assert abs(r - ex) <= 1.5 + ex * 2.0 ** -19, (x, r, ex)
        y = g.bits(29) >> g.bits(5) % 29
        h = F.hypot(x >> 1, -y)
        ex = math.sqrt(float(x >> 1) ** 2 + float(y) ** 2)
        if ex >= F.SAT:
            assert h == F.SAT, (x, y, h)
        else:
            assert abs(h - ex) <= 3.0 + ex * 2.0 ** -18, (x, y, h, ex)
    assert F.sqrt(0, 28) == 0 and F.sqrt(-5, 28) == 0 and F.hypot(0, 0) == 0
    assert F.sqrt(F.ONE, 28) == F.ONE      # sqrt(1) is exact


def test_exp_neg_absolute_error_below_2e_7():
    worst = 0.0
    k = 0
    while k < 30 << 24:                     # e**-0 .. e**-30 in 1/64 steps
        ex = math.exp(-k / 16777216.0) * 268435456.0
        d = abs(F.exp_neg(k) - ex)
        if d > worst:
            worst = d
        k += 1 << 18
    assert worst < 2e-7 * 268435456.0, worst
    assert F.exp_neg(0) == F.ONE and F.exp_neg(-5) == F.ONE
    assert F.exp_neg(TOP) == 0


def test_helpers_do_not_allocate():
    import micropython
    F.mul(12345678, -87654321, 28)
    micropython.heap_lock()
    try:
        for _ in range(20):
            F.mul(123456789, -87654321, 28)
            F.div(-123456789, 87654321, 24)
            F.sqrt(123456789, 28)
            F.hypot(-12345678, 87654321)
            F.exp_neg(12345678)
    finally:
        micropython.heap_unlock()
