"""Fixed-point arithmetic that never leaves MicroPython's small-int range.

On the RP2040 and ESP32 a MicroPython int is a tagged 31-bit value
(-2**30 .. 2**30-1); anything larger becomes a heap-allocated big int, and
every float is heap-boxed.  The SOC estimator (``bms.soc``) therefore works
in integers scaled by powers of two ("Q" formats: Qn means value * 2**n),
and every product or quotient that could be large goes through these
helpers, which:

* take operands with |x| < 2**30 and never form an intermediate outside
  that range (products are split into 15-bit halves, quotients are long
  divisions in 9-bit chunks);
* saturate the result to +-SAT (2**29 - 1) instead of overflowing, so a sum
  of two results is still a small int;
* round toward zero (symmetric: no drift from signed noise).

Errors (against exact rational arithmetic, tested in
host_tests/upy/test_soc_fixmath.py):
* ``mul(a, b, s)``  = a*b / 2**s, error < 3 units in the last place.
* ``div(a, b, s)``  = a * 2**s / b; the divisor is rounded to 20
  significant bits first, so the relative error is < 2**-19 (exact for
  |b| < 2**20).
* ``sqrt(x, q)``    = sqrt of a Qq value, in Qq: a 15-bit integer root
  from above and one Newton step; error <= 2 units in the last place plus
  the ``div`` error.
* ``hypot(x, y)``   = sqrt(x*x + y*y) without squaring (x * sqrt(1 + t*t),
  chord start and two Newton steps); relative error < 2**-18 + 3 units.
* ``exp_neg(x)``    = e**(-x) for x >= 0 in Q24, result in Q28:
  range reduction to 2**-n * 2**(-j/16) * e**-u (n integer, j from a
  16-entry table, u < ln 2 / 16) and a degree-5 Taylor (Horner) polynomial
  for e**-u: truncation < 1e-11; the rounding of the reduced argument
  dominates: absolute error < 2e-7.

Each helper is a plain function so a host test can swap the module's
arithmetic for range-checked versions (host_tests/test_soc_intrange.py).
"""
from array import array

from micropython import const

SAT = const(0x1FFFFFFF)     # results saturate at +-(2**29 - 1)
ONE = const(0x10000000)     # 1.0 in Q28
_LN2_Q28 = const(186065279)     # ln 2 * 2**28
_INV_LN2_Q28 = const(387270501)  # 1 / ln 2 * 2**28
_SQRT2_M1_Q28 = const(111189606)  # sqrt(2) - 1
# 2**(-j/16), Q28, j = 0..15: exp_neg's table step
_EXP2 = array("i", (268435456, 257054673, 246156398, 235720175, 225726413, 216156353,
                    206992033, 198216250, 189812531, 181765103, 174058859, 166679334,
                    159612677, 152845623, 146365470, 140160054))


def clamp(x, lim):
    """``x`` limited to -lim .. lim."""
    if x > lim:
        return lim
    if x < -lim:
        return -lim
    return x


def mul(a, b, s):
    """a * b / 2**s (s >= 0), toward zero, saturated to +-SAT."""
    neg = False
    if a < 0:
        a = -a
        neg = True
    if b < 0:
        b = -b
        neg = not neg
    ah = a >> 15
    al = a & 0x7FFF
    bh = b >> 15
    bl = b & 0x7FFF
    # a*b = hh * 2**30 + (m1 + m2) * 2**15 + lo, each part < 2**30
    hh = ah * bh
    if s >= 30:
        r = hh >> (s - 30)
    else:
        if hh > (SAT >> (30 - s)):
            return -SAT if neg else SAT
        r = hh << (30 - s)
    if r > SAT:
        return -SAT if neg else SAT
    m = ah * bl
    if s >= 15:
        t = m >> (s - 15)
    else:
        if m > (SAT >> (15 - s)):
            return -SAT if neg else SAT
        t = m << (15 - s)
    if t > SAT:
        return -SAT if neg else SAT
    r += t
    if r > SAT:
        return -SAT if neg else SAT
    m = al * bh
    if s >= 15:
        t = m >> (s - 15)
    else:
        if m > (SAT >> (15 - s)):
            return -SAT if neg else SAT
        t = m << (15 - s)
    if t > SAT:
        return -SAT if neg else SAT
    r += t
    if r > SAT:
        return -SAT if neg else SAT
    t = (al * bl) >> s
    if t > SAT:
        return -SAT if neg else SAT
    r += t
    if r > SAT:
        r = SAT
    return -r if neg else r


def div(a, b, s):
    """a * 2**s / b, toward zero, saturated to +-SAT (b == 0 saturates)."""
    neg = False
    if a < 0:
        a = -a
        neg = True
    if b < 0:
        b = -b
        neg = not neg
    if b == 0:
        return 0 if a == 0 else (-SAT if neg else SAT)
    if b >= 0x100000:       # 20 significant bits: the remainder shifts stay small
        t = 1
        while (b >> t) >= 0x100000:
            t += 1
        b = ((b >> (t - 1)) + 1) >> 1   # rounded
        s -= t
    if s < 0:
        q = (a >> -s) // b
        if q > SAT:
            q = SAT
        return -q if neg else q
    q = a // b
    r = a - q * b
    if q > SAT:
        return -SAT if neg else SAT
    while s > 0:
        k = 9 if s > 9 else s
        if q > (SAT >> k):
            return -SAT if neg else SAT
        r <<= k             # r < b < 2**20
        d = r // b
        q = (q << k) + d
        r -= d * b
        s -= k
    if q > SAT:
        q = SAT
    return -q if neg else q


def isqrt(n):
    """floor(sqrt(n)) for 0 <= n < 2**30."""
    r = 0
    b = 0x10000000
    while b > n:
        b >>= 2
    while b:
        if n >= r + b:
            n -= r + b
            r = (r >> 1) + b
        else:
            r >>= 1
        b >>= 2
    return r


def sqrt(x, q):
    """sqrt of the Qq value ``x`` (q even, x >= 0), in Qq; 0 for x <= 0."""
    if x <= 0:
        return 0
    # Start just above the root with 15 significant bits (x scaled by 4**m
    # into 2**28..2**30), so Newton needs one step and one to confirm.
    m = 0
    while x < 0x10000000 and m < (q >> 1):
        x <<= 2
        m += 1
    y = (isqrt(x) + 1) << ((q >> 1) - m)
    x >>= 2 * m
    if y > SAT:
        y = SAT
    # Relative error of y <= 1 / isqrt(x * 4**m): one step squares it.
    z = (y + div(x, y, q)) >> 1
    return z if z < y else y


def hypot(x, y):
    """sqrt(x*x + y*y), saturated."""
    if x < 0:
        x = -x
    if y < 0:
        y = -y
    if x < y:
        x, y = y, x
    if x == 0:
        return 0
    t = div(y, x, 28)
    v = ONE + mul(t, t, 28)         # 1 .. 2
    # sqrt(v): the chord 1 + (v - 1) * (sqrt(2) - 1) is within 1.5 % below;
    # two Newton steps bring that to 1e-8.
    g = ONE + mul(v - ONE, _SQRT2_M1_Q28, 28)
    g = (g + div(v, g, 28)) >> 1
    g = (g + div(v, g, 28)) >> 1
    return mul(x, g, 28)


def exp_neg(x):
    """e**(-x) in Q28 for x in Q24 (x <= 0 gives 1.0)."""
    if x <= 0:
        return ONE
    y = mul(x, _INV_LN2_Q28, 28)    # x / ln 2, Q24
    n = y >> 24
    if n >= 28:
        return 0
    f = y & 0xFFFFFF                # 2**-f, f in [0, 1): 2**(-j/16) * e**-u
    u = mul(f & 0xFFFFF, _LN2_Q28, 24)  # u = (f - j/16) * ln 2 in [0, 0.0434), Q28
    t = ONE
    k = 5
    while k:
        t = ONE - mul(u, t, 28) // k
        k -= 1
    return mul(_EXP2[f >> 20], t, 28) >> n
