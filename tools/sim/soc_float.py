"""Float reference of the SOC estimator (host only; the firmware runs bms.soc).

This is the floating-point estimator the firmware used before it moved to
fixed point (``bms.soc`` with ``bms.fixmath``), kept unchanged as the
reference the integer version is compared against
(host_tests/test_soc_fixed_vs_float.py, ``bench_soc``).  Swap it into a
simulation with ``sim.bms.soc = Soc(params, soc_pm)``.

Original description:

State of charge: exact coulomb counting corrected by a Kalman filter on OCV.

Two layers, each doing what it is good at:

1. Coulomb counter (fast task, integers only).  Charge is whole mAh plus a
   residual in mA*ms (0 <= residual < 3.6e6), so a day of 50 ms steps adds
   no rounding drift and no product exceeds MicroPython's small-int range
   (no allocation) for packs up to 6500 Ah and currents up to 1000 A.
   Charge is counted at the charge (coulombic) efficiency, discharge at the
   discharge factor; the efficiency remainder is carried exactly too.

2. Estimator (slow task, floats): an extended Kalman filter on a one-RC cell
   model, state ``[soc, v1]`` (v1 = polarisation voltage of the RC pair),
   measurement = mean cell voltage = OCV(soc, T) + R0(T)*I + v1.  The filter
   does not integrate current itself: its prediction is the counter's own
   change since the last run, and its correction is written back into the
   counter as an integer charge adjustment, so the counter stays the single
   source of truth and the float part cannot drift.

Why these choices (the principled parts):
* The measurement Jacobian is dOCV/dSOC (``bms.ocv``), so a voltage reading
  moves SOC in proportion to what it says about SOC: a lot on NMC's slope or
  at LFP's knees, almost nothing on LFP's plateau.
* Current-sensor errors are biases (gain, offset), not white noise: the SOC
  standard deviation therefore grows *linearly* with the counted charge and
  the elapsed time (sigma += (g*|dQ| + i_off*dt)/Q per step) instead of with
  the square root that a textbook random-walk Q would give.
* Voltage errors are also correlated (OCV-table error, hysteresis, R0 error
  under load, relaxation model error): consecutive 1 s readings are not
  independent.  The measurement variance is scaled by the correlation time
  over the update period (white part over ~10 s, bias part over ~10 min), so
  an hour on the LFP plateau cannot talk the filter into a table error.
  Under load the R0 and RC model errors (their values are guesses that
  depend on temperature, SOC and age) persist for the whole load, so they
  count as correlated over ~10 min, and the RC part scales with the
  polarisation the current will build (R1*I), not with what the model has
  built so far: a fresh boot straight into a charge does not read a lagging
  RC model as SOC.
* A fresh boot (no stored state) has no SOC information: its first update
  is the exact flat-prior limit of the Kalman update (``_flat_update``):
  SOC is the table's inverse of the reading, the RC and table-error states
  keep their priors, and the SOC variance is their variance plus the
  reading noise seen through the local slope (~10 % on the LFP plateau,
  ~1 % on NMC).  A wide Gaussian prior instead leaked a few % of the first
  innovation (tens of mV) into those states: on the plateau ~0.7 % SOC
  that took minutes to decay, and a result that depended on the start value.
* Iterated measurement update: the OCV table is piecewise linear and a
  restored or set SOC can still be tens of % away, across knees.  A single
  linearisation at the prior put a wrong share of the innovation into the
  RC and table-error states, where on the LFP plateau it stayed for hours;
  relinearising at the updated SOC (Gauss-Newton on the same prior, 1-4
  passes) lands on the table.
* The manual's calibration is kept exactly: the level-1 over-voltage cut-off
  sets 100 %, the level-1 under-voltage cut-off sets 0 % (TOPBMS "SOC
  calibration": discharge to UV, charge to OV), and both collapse the
  filter's uncertainty.  A full -> empty or empty -> full run between two
  such anchors measures the capacity (capacity learning); SOH is learned /
  rated capacity.

Persistence: ``get_state`` / ``set_state`` (and ``save_to`` / ``load_from``
for an object with the settings store's ``State`` attribute names) carry
SOC, remaining charge, learned capacity, cycles and throughput across a
reboot.
"""
import math

from micropython import const

from bms import ocv
from bms.measurements import ROLE_CELL, T_NONE_MIN
from bms.params import P_CAPACITY, P_CHEMISTRY
from bms.ticks import ticks_diff

MAH_MS = const(3600000)     # mA*ms in one mAh
# Coulombic efficiency (per mille of the charge put in that the cells store)
# in CHEM_* order; published values are 99.8-99.95 %.
CHG_EFF_PM = (999, 999, 999, 998)
DSG_EFF_PM = const(1000)    # every counted mAh out of the pack left the cells

LEARN_MIN_PM = const(500)   # a learned capacity must be 50..120 % of rated
LEARN_MAX_PM = const(1200)

# Estimator tuning (see module docstring).
SIG_GAIN = 0.01             # current gain uncertainty (1 %)
SIG_OFFSET_A = 0.05         # current offset uncertainty (A)
SIG_WHITE_V = 0.002         # per-reading noise of the mean cell voltage
T_WHITE_S = 10.0            # its correlation time
SIG_BIAS_V = (0.004, 0.004, 0.005, 0.006)  # OCV table / hysteresis error, CHEM_* order
L_BIAS = 0.1                # the table error decorrelates over 10 % of SOC ...
T_BIAS_S = 14400.0          # ... or over 4 h (temperature, hysteresis history)
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


class Soc:
    def __init__(self, params, soc_pm=500):
        self.params = params
        self.chem = params[P_CHEMISTRY]
        self.rated_mah = params[P_CAPACITY] * 100
        self.learned_mah = 0          # 0: not learned yet
        self.capacity_mah = self.rated_mah
        self.chg_eff_pm = CHG_EFF_PM[self.chem]
        self.dsg_eff_pm = DSG_EFF_PM
        self.remaining_mah = 0
        self._res = 0                 # mA*ms, 0 <= _res < MAH_MS
        self._eff_rem = 0             # efficiency remainder, 1/1000 mA*ms
        self.soc_pm = 0
        self.cycles = 0
        self.throughput_mah = 0       # discharged since the last cycle count
        self.total_dsg_mah = 0        # lifetime discharge (for the log / app)
        # Capacity learning: net counted charge since the last anchor.
        self._anchor = 0              # 0 none, 1 full, -1 empty
        self._learn_mah = 0
        self.last_learned_mah = 0     # last measurement (before averaging)
        self.cal_full = 0             # calibration event counters
        self.cal_empty = 0
        # Estimator state.
        self.est_enabled = True
        self.v1 = 0.0
        self.bias = 0.0               # OCV table error state (V)
        self.p00 = SIG_INIT * SIG_INIT
        self.p01 = 0.0
        self.p02 = 0.0
        self.p11 = 0.0001
        self.p12 = 0.0
        self.p22 = SIG_BIAS_V[self.chem] ** 2
        self.r0_learned = 0.0         # ohm at 25 degC, 0 = use the model value
        self._prev_s = -1.0
        self._prev_v = 0.0
        self._prev_i = 0.0
        self._prev_ms = 0
        self._est_seen = False
        self.innovation_mv = 0
        self.est_updates = 0
        self._pver = params.version
        self.set_pm(soc_pm)
        self.p00 = SIG_INIT * SIG_INIT
        self._flat = True             # no SOC information yet (see _flat_update)

    # ---- derived values --------------------------------------------------
    @property
    def soh_pm(self):
        """State of health: learned / rated capacity in per mille (1000 if unknown)."""
        if not self.learned_mah or not self.rated_mah:
            return 1000
        v = self._ratio_pm(self.learned_mah, self.rated_mah)
        return 1000 if v > 1000 else v

    @property
    def sigma_pm(self):
        """The estimator's 1-sigma SOC uncertainty in per mille."""
        return int(math.sqrt(self.p00) * 1000.0 + 0.5) if self.p00 > 0 else 0

    def soc_frac(self):
        """SOC as a float fraction with the residual included (tests, benches)."""
        c = self.capacity_mah
        return (self.remaining_mah + self._res / MAH_MS) / c if c else 0.0

    @staticmethod
    def _ratio_pm(a, b):
        # a * 1000 // b without leaving small ints for a, b < 6.5e6.
        if a < 1000000:
            return a * 1000 // b
        return a // (b // 1000) if b >= 1000 else a * 1000 // b

    def _update_pm(self):
        c = self.capacity_mah
        self.soc_pm = self._ratio_pm(self.remaining_mah, c) if c else 0

    # ---- parameters ------------------------------------------------------
    def _refresh(self):
        p = self.params
        self._pver = p.version
        chem = p[P_CHEMISTRY]
        if chem != self.chem:
            self.chem = chem
            self.chg_eff_pm = CHG_EFF_PM[chem]
            self.r0_learned = 0.0
        rated = p[P_CAPACITY] * 100
        if rated != self.rated_mah:
            # The user entered the pack's capacity: that is newer knowledge
            # than anything learned against the old value.
            self.rated_mah = rated
            self.learned_mah = 0
            self._anchor = 0
            self._set_capacity(rated)

    def _set_capacity(self, cap):
        if cap == self.capacity_mah or cap <= 0:
            return
        # Keep the fraction, not the absolute charge.
        s = self.soc_frac()
        self.capacity_mah = cap
        self._set_frac(s)

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

    # ---- coulomb counting (fast task, integers, no allocation) -----------
    def integrate(self, current_ma, dt_ms):
        """Count ``current_ma`` (+ = charging) flowing for ``dt_ms``."""
        if self._pver != self.params.version:
            self._refresh()
        q = current_ma * dt_ms
        eff = self.chg_eff_pm if q > 0 else self.dsg_eff_pm
        if eff != 1000:
            k = 1000 - eff
            qa = q // 1000
            r = self._eff_rem + (q - qa * 1000) * k
            lr = r // 1000
            self._eff_rem = r - lr * 1000
            q -= qa * k + lr
        r = self._res + q
        whole = r // MAH_MS
        self._res = r - whole * MAH_MS
        if whole:
            self._count(whole)

    def _count(self, whole):
        cap = self.capacity_mah
        if self._anchor:
            self._learn_mah += whole
        if whole < 0:
            self.total_dsg_mah -= whole
            t = self.throughput_mah - whole
            if t >= cap > 0:
                t -= cap
                self.cycles += 1
            self.throughput_mah = t
        rem = self.remaining_mah + whole
        if rem < 0:
            rem = 0
        elif rem >= cap:
            rem = cap
            self._res = 0
        self.remaining_mah = rem
        self._update_pm()

    # ---- manual set and the manual's calibration -------------------------
    def set_pm(self, soc_pm):
        """User or tool sets SOC (per mille); the estimator trusts it moderately."""
        if soc_pm < 0 or soc_pm > 1000:
            raise ValueError("soc 0..1000 per mille")
        c = self.capacity_mah
        self.remaining_mah = c * soc_pm // 1000 if c < 1000000 else (c // 1000) * soc_pm
        self._res = 0
        self._update_pm()
        self.soc_pm = soc_pm
        self.p00 = SIG_RESTORED * SIG_RESTORED
        self.p01 = 0.0
        self.p02 = 0.0
        self._flat = False
        # The estimator's prediction is the counter's change since its last
        # run: a set value is not counted charge, so start a fresh interval.
        self._est_seen = False

    def calibrate_full(self):
        """Level-1 over-voltage cut-off reached while charging: 100 %."""
        self._anchor_event(1)
        self.remaining_mah = self.capacity_mah
        self._res = 0
        self.soc_pm = 1000
        self._collapse()
        self.cal_full += 1

    def calibrate_empty(self):
        """Level-1 under-voltage cut-off reached while discharging: 0 %."""
        self._anchor_event(-1)
        self.remaining_mah = 0
        self._res = 0
        self.soc_pm = 0
        self._collapse()
        self.cal_empty += 1

    def _collapse(self):
        self._flat = False
        self.p00 = SIG_CAL * SIG_CAL
        self.p01 = 0.0
        self.p02 = 0.0

    def _anchor_event(self, kind):
        """Capacity learning: the counted charge between opposite anchors."""
        if self._anchor == -kind:
            q = self._learn_mah if kind > 0 else -self._learn_mah
            rated = self.rated_mah
            if rated and LEARN_MIN_PM <= self._ratio_pm(q, rated) <= LEARN_MAX_PM:
                self.last_learned_mah = q
                # Average with the previous value: one odd cycle (a load
                # that was not counted, a warm day) moves it only halfway.
                self.learned_mah = q if not self.learned_mah else (self.learned_mah + q) // 2
                self._set_capacity(self.learned_mah)
        self._anchor = kind
        self._learn_mah = 0

    # ---- persistence (settings store) ------------------------------------
    def get_state(self):
        """(soc_pm, remaining_mah, learned_mah, cycles, throughput_mah)."""
        return (self.soc_pm, self.remaining_mah, self.learned_mah, self.cycles,
                self.throughput_mah)

    def set_state(self, soc_pm, remaining_mah, learned_mah, cycles, throughput_mah):
        """Restore after a reboot; implausible parts are dropped, not trusted."""
        if self._pver != self.params.version:
            self._refresh()
        rated = self.rated_mah
        if learned_mah and rated and LEARN_MIN_PM <= self._ratio_pm(learned_mah, rated) <= LEARN_MAX_PM:
            self.learned_mah = learned_mah
            self._set_capacity(learned_mah)
        if 0 <= cycles < 1000000:
            self.cycles = cycles
        if 0 <= throughput_mah < self.capacity_mah:
            self.throughput_mah = throughput_mah
        if 0 <= soc_pm <= 1000:
            self.set_pm(soc_pm)
            # The remaining charge is finer than per mille: use it if it agrees.
            if 0 <= remaining_mah <= self.capacity_mah and \
                    abs(self._ratio_pm(remaining_mah, self.capacity_mah) - soc_pm) <= 1:
                self.remaining_mah = remaining_mah
                self._update_pm()
        self._est_seen = False

    def save_to(self, st):
        """Fill an object with the settings store's State attribute names."""
        st.soc_pm = self.soc_pm
        st.remaining_mah = self.remaining_mah
        st.capacity_mah = self.learned_mah
        st.cycles = self.cycles
        st.throughput_mah = self.throughput_mah

    def load_from(self, st):
        self.set_state(st.soc_pm, st.remaining_mah, st.capacity_mah, st.cycles,
                       st.throughput_mah)

    # ---- estimator (slow task, floats) -----------------------------------
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
        self.bias *= rho
        grow = (SIG_GAIN * abs(ds) * cap_as + SIG_OFFSET_A * dt) / cap_as
        sd = math.sqrt(self.p00) + grow
        self.p00 = sd * sd
        self.p01 *= a
        self.p02 *= rho
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
        if self._flat:
            self._flat = False
            return self._done(self._flat_update(v - y_off, chem, t_c, r), v, i, now)
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
        self.p01 = p01 - k0 * ph1
        self.p02 = p02 - k0 * ph2
        self.p11 = p11 - k1 * ph1
        self.p12 = p12 - k1 * ph2
        self.p22 = p22 - k2 * ph2
        if self.p00 < 1e-8:
            self.p00 = 1e-8
        self.bias = bi
        self.v1 = v1i
        self._apply(si - s)
        return self._done(e, v, i, now)

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
        return y - (o + v1 + b)

    def _apply(self, d):
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
