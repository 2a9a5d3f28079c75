"""Float reference of the SOC estimator (host only; the firmware runs bms.soc).

This is the floating-point estimator the firmware used before it moved to
fixed point (``bms.soc`` with ``bms.fixmath``), kept as the reference the
integer version is compared against (host_tests/test_soc_fixed_vs_float.py).
Only the estimator is float: the coulomb counter, calibration, capacity
learning and persistence are the firmware's own (this class derives from
``bms.soc.Soc``), so a comparison sees the two filters and nothing else.
Swap it into a simulation with ``sim.bms.soc = Soc(params, soc_pm)``.

The model, the tuning and the reasons for each choice are the same as in
``bms.soc``'s docstring; only the arithmetic differs (floats here, with
the covariance held as the plain 3x3 matrix ``p00`` .. ``p22``), and this
version's SOC variance after a flat-prior first update is not limited to
50 %.
"""
import math

from micropython import const

from bms import ocv
from bms import soc as fixed
from bms.measurements import ROLE_CELL, T_NONE_MIN
from bms.ticks import ticks_diff

MAH_MS = fixed.MAH_MS

# Estimator tuning (see module docstring).
SIG_GAIN = 0.01             # current gain uncertainty (1 %), on the net SOC counted
SIG_EFF = 0.001             # charge efficiency uncertainty, on every charged unit
SIG_OFFSET_A = 0.05         # current offset uncertainty (A)
SIG_WHITE_V = 0.002         # per-reading noise of the mean cell voltage
T_WHITE_S = 10.0            # its correlation time
SIG_BIAS_V = (0.030, 0.012, 0.020, 0.030)  # OCV table error, CHEM_* order
L_BIAS = 0.25               # the table error decorrelates over 25 % of SOC ...
T_BIAS_S = 86400.0          # ... or over a day (temperature, hysteresis history)
H_GATE = fixed._H_GATE_UV * 1e-6   # V per unit SOC: below it (LFP plateau) only after a long rest
T_LOAD_S = 600.0            # correlation time of R0 / RC model errors under load
SIG_R0 = 0.25               # relative uncertainty of R0
SIG_V1 = 0.5                # relative uncertainty of the RC voltage
SIG_INIT = 0.5              # SOC std when started without stored state (no information)
SIG_RESTORED = 0.03         # SOC std after a reboot with stored state
SIG_CAL = 0.005             # SOC std right after a full / empty calibration
# Cell model per chemistry (R0 in ohm*Ah: R0 = k / capacity_Ah at 25 degC),
# RC pair: R1 = R1_FRAC * R0 with time constant TAU_S.
R0_OHM_AH = (0.10, 0.08, 0.06, 0.10)
R1_FRAC = 0.7
TAU_S = 90.0
R0_COLD_PER_K = 0.04        # R0 grows ~4 %/K below 25 degC
IEKF_PASSES = const(4)      # measurement relinearisations per update
R0_STEP_MIN_C = 0.1         # current step (fraction of C) that teaches R0


def _cold(t_c):
    return 1.0 + R0_COLD_PER_K * (25.0 - t_c) if t_c < 25.0 else 1.0


class Soc(fixed.Soc):
    def __init__(self, params, soc_pm=500):
        fixed.Soc.__init__(self, params, soc_pm)
        # The float estimator's state replaces the integer one.
        self.v1 = 0.0
        self.bias = 0.0               # OCV table error state (V)
        self.p00 = SIG_INIT * SIG_INIT
        self.p01 = 0.0
        self.p02 = 0.0
        self.p11 = 0.0001
        self.p12 = 0.0
        self.p22 = SIG_BIAS_V[self.chem] ** 2
        self.sb_obs = 0.0             # observed table error (V), as bms.soc
        self.r0_learned = 0.0         # ohm at 25 degC, 0 = use the model value
        self._prev_s = -1.0
        self._s_ref = self.soc_frac()  # counter SOC when a reading last set p00
        self._prev_v = 0.0
        self._prev_i = 0.0

    @property
    def v1_v(self):
        return self.v1

    @property
    def bias_v(self):
        return self.bias

    @property
    def sigma_pm(self):
        """The estimator's 1-sigma SOC uncertainty in per mille."""
        return int(math.sqrt(self.p00) * 1000.0 + 0.5) if self.p00 > 0 else 0

    def set_pm(self, soc_pm):
        """User or tool sets SOC (per mille); the estimator trusts it moderately."""
        fixed.Soc.set_pm(self, soc_pm)
        self._s_ref = self.soc_frac()
        self.p00 = SIG_RESTORED * SIG_RESTORED
        self.p01 = 0.0
        self.p02 = 0.0

    def _collapse(self):
        fixed.Soc._collapse(self)
        self._s_ref = self.soc_frac()
        self.p00 = SIG_CAL * SIG_CAL
        self.p01 = 0.0
        self.p02 = 0.0

    def _set_frac(self, s):
        if s < 0.0:
            s = 0.0
        elif s > 1.0:
            s = 1.0
        c = self.capacity_mah
        whole = int(s * c)
        self.remaining_mah = whole
        self._res = int((s * c - whole) * MAH_MS)
        if self._res >= MAH_MS:
            self._res = MAH_MS - 1
        if self._res < 0:
            self._res = 0
        self._update_pm()

    def r0_ohm(self, t_c=25.0):
        """Mean-cell ohmic resistance at ``t_c`` (learned if known)."""
        r = self.r0_learned
        if r <= 0.0:
            cap_ah = self.rated_mah / 1000.0
            r = R0_OHM_AH[self.chem] / (cap_ah if cap_ah > 0.1 else 0.1)
        return r * _cold(t_c)

    def estimate(self, m, now):
        """One EKF step from the snapshot ``m``; returns False if skipped."""
        if self._pver != self.params.version:
            self._refresh()
        if not self.est_enabled or not m.cells_seen or not m.current_seen:
            return False
        n = m.n_cells - m.bad_cells
        if n <= 0 or m.bad_cells or m.sum_mv <= 0:
            self._est_seen = False
            return False
        t_lo = m.tmin[ROLE_CELL]
        t_c = 25.0 if t_lo == T_NONE_MIN else (t_lo + m.tmax[ROLE_CELL]) * 0.05
        self._cold_capacity(500 if t_lo == T_NONE_MIN else max(-1000, min(3000, t_lo + m.tmax[ROLE_CELL])),
                            self.chem)
        v = m.sum_mv / (n * 1000.0)
        i = m.current_ma / 1000.0
        s = self.soc_frac()
        if not self._est_seen:
            self._est_seen = True
            self._prev_s = s
            self._prev_v = v
            self._prev_i = i
            self._prev_ms = now
            return False
        dt = ticks_diff(now, self._prev_ms) / 1000.0
        if dt <= 0.0:
            return False
        if dt > 60.0:
            dt = 60.0
        chem = self.chem
        cap_as = self.capacity_mah * 3.6
        r0 = self.r0_ohm(t_c)
        self._learn_r0(v, i, t_c, cap_as)
        # --- predict: SOC moved by what the counter counted ---
        ds = s - self._prev_s
        a = math.exp(-dt / TAU_S)
        r1 = R1_FRAC * r0
        self.v1 = self.v1 * a + r1 * (1.0 - a) * i
        # The table error belongs to a region of the curve: it fades to its
        # prior as SOC moves on (and slowly with time).
        rho = math.exp(-abs(ds) / L_BIAS - dt / T_BIAS_S)
        sb = SIG_BIAS_V[chem]
        if t_c < 15.0:
            sb *= 1.0 + (15.0 - t_c) / 10.0  # cold: OCV and relaxation less certain
        if self.sb_obs > sb:
            sb = self.sb_obs
        self.bias *= rho
        # An unmeasured capacity (bms.soc's integer learner, above its floor) adds to the gain error.
        # Both scale the net SOC counted since a reading last set p00 (bms.soc).
        dn = abs(s - self._s_ref) - abs(self._prev_s - self._s_ref)
        grow = ((SIG_GAIN + (self.sd_cap - fixed._SDC_MIN) / 2.0 ** 30) * dn * cap_as + SIG_OFFSET_A * dt) / cap_as
        if ds > 0.0:
            grow += SIG_EFF * ds
        if self._cp_ms < fixed._CP_MS_MAX:
            self._cp_ms += int(round(dt * 1000.0))
        sd_o = math.sqrt(self.p00)
        sd = max(sd_o + grow, 1e-4)
        self.p00 = sd * sd
        f0 = sd / sd_o if sd < sd_o else 1.0     # covariances shrink with sd (bms.soc)
        self.p01 *= a * f0
        self.p02 *= rho * f0
        q11 = (SIG_V1 * r1 * (1.0 - a) * abs(i)) ** 2 + 1e-10
        self.p11 = a * a * self.p11 + q11
        self.p12 *= a * rho
        self.p22 = rho * rho * self.p22 + (1.0 - rho * rho) * sb * sb
        # --- update: mean cell voltage = OCV(s) + R0*I + v1 + bias ---
        # Iterated EKF: the OCV table is piecewise linear and a large SOC
        # error (a fresh boot) spans several segments, so one linearisation
        # at the prior SOC puts the wrong share of the innovation into v1
        # and the table-error state, where it stays for hours on the LFP
        # plateau.  Relinearising at the updated SOC (Gauss-Newton on the
        # same prior) removes that; it converges in 1-3 passes.
        # White noise and the load-model error, each scaled by its
        # correlation time over the update period.
        # The RC pair's error scales with the polarisation the current will
        # build (R1*I: its R1 and tau are guesses), not with what the model
        # has built so far, which is ~0 right after a load step; after the
        # load it is the remaining relaxation v1.
        dyn = r1 * i
        if dyn < 0.0:
            dyn = -dyn
        if abs(self.v1) > dyn:
            dyn = abs(self.v1)
        load = (SIG_R0 * r0 * i) ** 2 + (SIG_V1 * dyn) ** 2
        r = SIG_WHITE_V * SIG_WHITE_V * (T_WHITE_S / dt) + load * (T_LOAD_S / dt)
        p00 = self.p00
        p01 = self.p01
        p02 = self.p02
        p11 = self.p11
        p12 = self.p12
        p22 = self.p22
        v1_0 = self.v1
        b_0 = self.bias
        si = s
        v1i = v1_0
        bi = b_0
        y_off = r0 * i
        # Rest time, CV tail, slope gate and lost-SOC restart as in bms.soc.
        ima = m.current_ma
        cap = self.capacity_mah
        dt_ms = int(round(dt * 1000.0))
        if abs(ima) * 50 <= cap:
            self.rest_ms = min(self.rest_ms + dt_ms, fixed._REST_LONG_MS)
        else:
            self.rest_ms = 0
        if self._tail_f(v, ima, dt_ms, cap, y_off, r1 * i, t_c, chem):
            return self._done(0.0, v, i, now)
        o0, h0 = ocv.ocv_f(chem, s, t_c)
        if self._cp_ok and self.rest_ms >= fixed._REST_LONG_MS and h0 * math.sqrt(p00) < 0.5 * sb:
            # The observed table error (bms.soc), within the table's range.
            et = v - y_off - v1_0
            if ocv.ocv_f(chem, 0.0, t_c)[0] < et < ocv.ocv_f(chem, 1.0, t_c)[0]:
                self.sb_obs += (abs(et - o0) - self.sb_obs) * dt_ms / fixed._T_SB_MS
        hold = False
        if self._flat:
            self._lost = 0
        elif ima * 50 > cap and v * 1000.0 >= fixed.V_TAIL_MV[chem]:
            self._lost = 0      # at the charger's voltage limit: count until the tail (bms.soc)
            hold = True
        elif h0 < H_GATE:
            self._lost = 0
            hold = self.rest_ms < fixed._REST_LONG_MS or h0 * math.sqrt(p00) < sb
            if hold:
                self.gated += 1
        elif self.rest_ms > 0:
            e0 = v - (o0 + y_off + v1_0)
            if abs(e0) > 3.0 * math.sqrt(h0 * h0 * p00 + sb * sb + r):
                self._lost += 1
                hold = True
                if self._lost >= fixed._LOST_N:
                    self._lost = 0
                    self._flat = fixed._FLAT_LOST
                    self.resets += 1
                    hold = False
                    self.bias = 0.0
                    self.p22 = sb * sb
                    self.p02 = 0.0
                    self.p12 = 0.0
                    self.p11 = (fixed._SD1_INIT / (fixed.W_PER_MV * 1000.0)) ** 2
            else:
                self._lost = 0
        else:
            self._lost = 0
        if hold:
            return self._done(v - (o0 + y_off + v1_0 + b_0), v, i, now)
        if self._flat:
            boot = self._flat == fixed._FLAT_BOOT
            self._flat = fixed._FLAT_NO
            e = self._flat_update(v - y_off, chem, t_c, r)
            if boot and self.rest_ms:
                sd = min(math.sqrt(self.p00), 0.5)
                self._trusted(self._frac(), int(sd * 2.0 ** 30), True)
            return self._done(e, v, i, now)
        for _ in range(IEKF_PASSES):
            o, h = ocv.ocv_f(chem, si, t_c)
            # Innovation of the linearisation at (si, v1i, bi) seen from the prior.
            e = v - (o + y_off + v1i + bi) - h * (s - si) - (v1_0 - v1i) - (b_0 - bi)
            ph0 = p00 * h + p01 + p02
            ph1 = p01 * h + p11 + p12
            ph2 = p02 * h + p12 + p22
            sv = h * ph0 + ph1 + ph2 + r
            k0 = ph0 / sv
            k1 = ph1 / sv
            k2 = ph2 / sv
            sn = s + k0 * e
            if sn < 0.0:
                sn = 0.0
            elif sn > 1.0:
                sn = 1.0
            v1i = v1_0 + k1 * e
            bi = b_0 + k2 * e
            done = abs(sn - si) < 1e-4
            si = sn
            if done:
                break
        self.p00 = p00 - k0 * ph0
        q0 = math.sqrt(max(self.p00, 0.0) / p00) if p00 > 0.0 else 0.0
        self.p01 = p01 - k0 * ph1
        self.p02 = p02 - k0 * ph2
        self.p11 = p11 - k1 * ph1
        self.p12 = p12 - k1 * ph2
        self.p22 = p22 - k2 * ph2
        if self.p00 < 1e-8:
            self.p00 = 1e-8
        self.bias = bi
        self.v1 = v1i
        self._apply_frac(si - s)
        # The reference moves by the share of SOC uncertainty the reading removed (bms.soc).
        self._s_ref = self.soc_frac() - max(-1.0, min(1.0, q0 * (s - self._s_ref)))
        sd0 = math.sqrt(self.p00)
        if sd0 * 2.0 ** 30 <= fixed._SD_TRUST and self.rest_ms >= fixed._REST_MS:
            self._trusted(self._frac(), int(sd0 * 2.0 ** 30), True)
        return self._done(e, v, i, now)

    def _tail_f(self, v, ima, dt_ms, cap, y_off, r1i, t_c, chem):
        """CV-tail anchor (bms.soc.Soc._tail in floats)."""
        if ima <= 0 or ima > cap // 15 or v * 1000.0 < fixed.V_TAIL_MV[chem]:
            if ima < -(cap // 10):
                self._tail_armed = True
            self._tail_ms = 0
            return False
        self._tail_ms += dt_ms
        if self._tail_ms < fixed._TAIL_MS or not self._tail_armed:
            return False
        self._tail_armed = False
        sa = ocv.soc_f(chem, v - y_off - r1i, t_c)
        h = ocv.ocv_f(chem, sa, t_c)[1]
        sb = max(SIG_BIAS_V[chem], self.sb_obs)
        sd = sb / h if h > 0.0 else SIG_RESTORED
        sd = min(max(sd, SIG_CAL), SIG_RESTORED)
        f = 0.0
        if not self._flat:
            # Kalman combination with the counter's SOC (bms.soc); the
            # posterior's error shares the table's, correlation f.
            s0 = self.soc_frac()
            p = math.sqrt(self.p00)
            f = p / math.sqrt(p * p + sd * sd)
            sa = s0 + f * f * (sa - s0)
            sd = max(sd * f, 1e-4)
        learned = self._anchor_event(1, int(sa * fixed.ONE))
        self._set_frac(sa)
        self._s_ref = self.soc_frac()
        self._flat = fixed._FLAT_NO
        self.p00 = sd * sd
        self.p01 = 0.0
        self.p02 = f * sd * sb
        self.v1 = r1i
        self.bias = 0.0
        self.p22 = sb * sb
        self.p12 = 0.0
        self._lost = 0
        self._trusted(self._frac(), int(sd * 2.0 ** 30), not learned, 1)
        self.cal_tail += 1
        return True

    def _done(self, e, v, i, now):
        """Bookkeeping after an update with innovation ``e`` (V)."""
        self.innovation_mv = int(e * 1000.0)
        self.est_updates += 1
        self._prev_s = self.soc_frac()
        self._prev_v = v
        self._prev_i = i
        self._prev_ms = now
        return True

    def _flat_update(self, y, chem, t_c, r):
        """First update after a boot without stored state: SOC from the table.

        With no SOC information the prior is flat, not a wide Gaussian: a
        50 % sigma on the LFP plateau (0.12 V per unit SOC) is only ~60 mV,
        so the Kalman gain handed the RC and table-error states a few % of
        the first innovation (tens of mV off the start value), ~0.6 mV that
        on the plateau reads as 0.5 % SOC for minutes while it decays.  The
        limit p00 -> infinity of the same update is exact and cheap: SOC is
        the table's inverse of the reading (minus R0*I and the RC and table
        states' prior means), those states keep their priors, and the SOC
        variance is what they and the reading noise leave, seen through the
        local slope: (p11 + 2*p12 + p22 + r) / h**2, with SOC correlated to
        each of them by -(its variance) / h.
        """
        v1 = self.v1
        b = self.bias
        s = ocv.soc_f(chem, y - v1 - b, t_c)
        o, h = ocv.ocv_f(chem, s, t_c)
        p11 = self.p11
        p12 = self.p12
        p22 = self.p22
        self.p00 = (p11 + 2.0 * p12 + p22 + r) / (h * h)
        self.p01 = -(p11 + p12) / h
        self.p02 = -(p12 + p22) / h
        self._set_frac(s)
        self._s_ref = self.soc_frac()
        return y - (o + v1 + b)

    def _apply_frac(self, d):
        """Add ``d`` (fraction of capacity) to the counter as whole mAh + mA*ms."""
        dm = d * self.capacity_mah
        whole = int(dm)
        frac = int((dm - whole) * MAH_MS)
        r = self._res + frac
        carry = r // MAH_MS
        self._res = r - carry * MAH_MS
        rem = self.remaining_mah + whole + carry
        if rem < 0:
            rem = 0
            self._res = 0
        elif rem >= self.capacity_mah:
            rem = self.capacity_mah
            self._res = 0
        self.remaining_mah = rem
        self._update_pm()

    def _learn_r0(self, v, i, t_c, cap_as):
        """R0 from a current step between two readings 1 s apart (dV/dI)."""
        di = i - self._prev_i
        cap_a = cap_as / 3600.0
        if abs(di) < R0_STEP_MIN_C * cap_a:
            return
        r = (v - self._prev_v) / di / _cold(t_c)
        base = R0_OHM_AH[self.chem] / (cap_a if cap_a > 0.1 else 0.1)
        if r < 0.3 * base or r > 3.0 * base:
            return  # a load that changed again between the readings
        cur = self.r0_learned
        self.r0_learned = r if cur <= 0.0 else cur + (r - cur) * 0.125
