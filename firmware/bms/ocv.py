"""Open-circuit voltage (OCV) vs state of charge, per chemistry, with temperature.

Tables are typical relaxed (rest, C/20 mean of charge and discharge branch)
curves at 25 degC from published cell data: NMC (graphite/NMC532-622), LFP
(graphite/LiFePO4, with its flat 3.25-3.34 V plateau between ~20 % and
~90 %), LTO (LTO/NMC, 1.8-2.75 V) and sodium-ion (hard carbon/layered oxide,
1.5-4.0 V window).  SOC is in per mille, voltage in mV: integers, so lookups
need no floats and the tables cost a few hundred bytes of flash.

Temperature: one entropic coefficient per chemistry (dOCV/dT, uV/K), applied
as ``ocv(T) = ocv25 + k * (T - 25)``.  It is small (0.1-0.2 mV/K) but on the
LFP plateau 2 mV is several % of SOC, so it is not ignored.

What OCV is worth at a point is its slope: ``slope_uv_pm`` (uV per per mille
== mV per 100 %).  On the LFP plateau it is ~100 mV/100 %, so a 3 mV table or
hysteresis error is ~3 % SOC; above 95 % or below 10 % it is 10-50 times
steeper.  The estimator (bms.soc) weighs every voltage reading by this slope
(it is the measurement Jacobian of its Kalman filter).

Limits: real cells differ from these curves by a few mV (ageing, LFP's
charge/discharge hysteresis of 10-20 mV); the estimator's measurement noise
reflects that, and a characterised table for the actual cells can replace a
row here.
"""

from micropython import const

from bms.fixmath import ONE, clamp, div, mul

# Per-chemistry rows in CHEM_* order (NMC, LFP, LTO, NA).
_SOC = (
    (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 1000),
    (0, 20, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 950, 980, 1000),
    (0, 50, 100, 300, 500, 700, 900, 950, 1000),
    (0, 50, 100, 300, 500, 700, 900, 950, 1000),
)
_MV = (
    (3000, 3305, 3452, 3560, 3628, 3689, 3751, 3829, 3918, 4001, 4079, 4131, 4190),
    (2500, 2900, 3050, 3180, 3210, 3231, 3259, 3280, 3290, 3299, 3311, 3329, 3341,
     3370, 3420, 3600),
    (1800, 2050, 2150, 2250, 2300, 2360, 2450, 2550, 2750),
    (1700, 2200, 2450, 2800, 3050, 3300, 3620, 3750, 3920),
)
# Entropic coefficient dOCV/dT in uV/K.
_DVDT_UV = (-200, -100, -100, -200)

N_CHEM = const(4)


def _row(chem):
    if chem < 0 or chem >= N_CHEM:
        raise ValueError("chemistry")
    return _SOC[chem], _MV[chem]


def _seg(xs, x):
    """Index j of the segment xs[j]..xs[j+1] that holds x (clamped)."""
    n = len(xs)
    lo = 0
    hi = n - 2
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


def temp_offset_uv(chem, t_dc):
    """OCV shift in uV at ``t_dc`` (0.1 degC) relative to 25 degC."""
    return _DVDT_UV[chem] * (t_dc - 250) // 10


def ocv_mv(chem, soc_pm, t_dc=250):
    """OCV in mV of one cell at ``soc_pm`` (clamped to 0..1000) and ``t_dc``."""
    xs, ys = _row(chem)
    s = 0 if soc_pm < 0 else (1000 if soc_pm > 1000 else soc_pm)
    j = _seg(xs, s)
    x0 = xs[j]
    y0 = ys[j]
    v = y0 + (ys[j + 1] - y0) * (s - x0) // (xs[j + 1] - x0)
    return v + temp_offset_uv(chem, t_dc) // 1000


def soc_pm(chem, mv, t_dc=250):
    """Inverse lookup: per-mille SOC whose OCV at ``t_dc`` is ``mv`` (clamped)."""
    xs, ys = _row(chem)
    v = mv - temp_offset_uv(chem, t_dc) // 1000
    if v <= ys[0]:
        return 0
    if v >= ys[len(ys) - 1]:
        return 1000
    j = _seg(ys, v)
    y0 = ys[j]
    return xs[j] + (xs[j + 1] - xs[j]) * (v - y0) // (ys[j + 1] - y0)


def slope_uv_pm(chem, soc_pm):
    """dOCV/dSOC at ``soc_pm`` in uV per per mille (the segment's slope)."""
    xs, ys = _row(chem)
    s = 0 if soc_pm < 0 else (1000 if soc_pm > 1000 else soc_pm)
    j = _seg(xs, s)
    return (ys[j + 1] - ys[j]) * 1000 // (xs[j + 1] - xs[j])


def ocv_f(chem, s, t_c):
    """Float form for the estimator: (OCV in V, dOCV/dSOC in V per unit SOC).

    ``s`` is SOC as a fraction (clamped 0..1), ``t_c`` degC.  The slope is
    that of the segment; at a breakpoint the steeper neighbour is not mixed
    in, which keeps the Kalman gain well-behaved at the LFP knees.
    """
    xs = _SOC[chem]
    ys = _MV[chem]
    if s < 0.0:
        s = 0.0
    elif s > 1.0:
        s = 1.0
    x = s * 1000.0
    j = _seg(xs, int(x))
    x0 = xs[j]
    dx = xs[j + 1] - x0
    dy = ys[j + 1] - ys[j]
    v = ys[j] + dy * (x - x0) / dx
    return (v + _DVDT_UV[chem] * (t_c - 25.0) * 0.001) * 0.001, dy / dx


def soc_f(chem, v, t_c):
    """Float inverse of ``ocv_f``: SOC fraction whose OCV at ``t_c`` is ``v`` (V), clamped."""
    xs = _SOC[chem]
    ys = _MV[chem]
    mv = v * 1000.0 - _DVDT_UV[chem] * (t_c - 25.0) * 0.001
    if mv <= ys[0]:
        return 0.0
    n = len(ys)
    if mv >= ys[n - 1]:
        return 1.0
    j = _seg(ys, mv)
    y0 = ys[j]
    return (xs[j] + (xs[j + 1] - xs[j]) * (mv - y0) / (ys[j + 1] - y0)) * 0.001


# ---- integer forms for the estimator (bms.soc): no floats, no allocation ----
# SOC in Q28 (1.0 = 2**28), voltage in W = 2**-7 uV (1 mV = 128000 W), slope
# in uV per unit SOC, temperature t2 = Tmin + Tmax in 0.1 degC (the mean in
# 0.05 degC: 500 = 25 degC).
W_PER_MV = const(128000)


def _temp_w(chem, t2):
    # dOCV/dT (uV/K) * (T - 25) with T - 25 = (t2 - 500) / 20 K, in W (x128).
    return _DVDT_UV[chem] * 32 * (t2 - 500) // 5


def _pm_q18(s):
    # s (Q28, 0..1) in per mille, Q18, exactly floored (segment choice as ocv_f).
    return (s >> 10) * 1000 + (((s & 1023) * 1000) >> 10)


def ocv_w(chem, s, t2, off=None):
    """OCV of one cell in W at SOC ``s`` (Q28, clamped) and ``t2``; ``off``:
    the pack's learned offsets per breakpoint (W, ``bms.soc``), or None."""
    xs = _SOC[chem]
    ys = _MV[chem]
    if s < 0:
        s = 0
    elif s > ONE:
        s = ONE
    xm = _pm_q18(s)
    j = _seg(xs, xm >> 18)
    x0 = xs[j]
    f = div(xm - (x0 << 18), xs[j + 1] - x0, 6)     # position in the segment, Q24
    y0 = ys[j]
    if off is None:
        return y0 * W_PER_MV + mul((ys[j + 1] - y0) * W_PER_MV, f, 24) + _temp_w(chem, t2)
    o0 = off[j]
    return (y0 * W_PER_MV + o0 + mul((ys[j + 1] - y0) * W_PER_MV + off[j + 1] - o0, f, 24)
            + _temp_w(chem, t2))


def seg_q28(chem, s):
    """Index of the table segment that holds SOC ``s`` (Q28, clamped)."""
    if s < 0:
        s = 0
    elif s > ONE:
        s = ONE
    return _seg(_SOC[chem], _pm_q18(s) >> 18)


def seg_pos_q28(chem, s, j):
    """Position of SOC ``s`` (Q28, clamped) in segment ``j``: 0 at its start, ONE at its end."""
    if s < 0:
        s = 0
    elif s > ONE:
        s = ONE
    x0 = _SOC[chem][j]
    return clamp(div(_pm_q18(s) - (x0 << 18), _SOC[chem][j + 1] - x0, 10), ONE)


def seg_slope_uv(chem, j, off=None):
    """Slope of segment ``j`` in uV per unit SOC (with the learned offsets ``off``)."""
    xs = _SOC[chem]
    ys = _MV[chem]
    dx = xs[j + 1] - xs[j]
    h = (ys[j + 1] - ys[j]) * 1000000 // dx
    if off is None:
        return h
    # The offsets' rise in W over the segment, as uV per unit SOC:
    # doff / 128 * 1000 / dx = (doff * 16 / dx) * 1000 / 2**11.
    return h + mul(div(off[j + 1] - off[j], dx, 4), 1000, 11)


def slope_uv(chem, s, off=None):
    """dOCV/dSOC at ``s`` (Q28) in uV per unit SOC: the segment's slope, as ``ocv_f``."""
    return seg_slope_uv(chem, seg_q28(chem, s), off)


def soc_q28(chem, y, t2, off=None):
    """Inverse of ``ocv_w``: SOC (Q28, clamped) whose OCV at ``t2`` is ``y`` W
    (on the table moved by the learned offsets ``off``: kept increasing)."""
    xs = _SOC[chem]
    ys = _MV[chem]
    v = y - _temp_w(chem, t2)
    n = len(ys)
    if off is None:
        if v <= ys[0] * W_PER_MV:
            return 0
        if v >= ys[n - 1] * W_PER_MV:
            return ONE
        j = _seg(ys, v // W_PER_MV)
        y0 = ys[j] * W_PER_MV
        y1 = ys[j + 1] * W_PER_MV
    else:
        if v <= ys[0] * W_PER_MV + off[0]:
            return 0
        if v >= ys[n - 1] * W_PER_MV + off[n - 1]:
            return ONE
        j = 0
        while j < n - 2 and v >= ys[j + 1] * W_PER_MV + off[j + 1]:
            j += 1
        y0 = ys[j] * W_PER_MV + off[j]
        y1 = ys[j + 1] * W_PER_MV + off[j + 1]
    f = div(v - y0, y1 - y0, 28)  # position in the segment, Q28
    x0 = xs[j]
    return div((x0 << 18) + mul(f, xs[j + 1] - x0, 10), 1000, 10)


def keeps_rise(chem, off):
    """The table moved by the offsets ``off`` (W per breakpoint) still keeps
    at least half of every segment's rise, so it stays increasing and
    ``soc_q28`` can invert it (``bms.soc``'s learned points)."""
    ys = _MV[chem]
    for j in range(len(ys) - 1):
        rise = (ys[j + 1] - ys[j]) * W_PER_MV
        if rise + off[j + 1] - off[j] < rise >> 1:
            return False
    return True


def row_len(chem):
    """Breakpoints of the chemistry's table (the learned offsets' length)."""
    return len(_SOC[chem])


def row_pm(chem, j):
    """The table's SOC at breakpoint ``j`` in per mille."""
    return _SOC[chem][j]
