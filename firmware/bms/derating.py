"""Charge / discharge limits for an inverter or charger, derated, with ramped recovery.

What a Pylontech-style inverter reads (comms.inverter_can frame 0x351):
  cvl_mv / dvl_mv   charge / discharge voltage limit (pack mV)
  ccl_ma / dcl_ma   charge / discharge current limit (mA, >= 0)
  ccl_da / dcl_da   the same in 0.1 A (the CAN and Modbus unit)
  charge_enable / discharge_enable
It offers the interface of ``comms.limits`` (``update(now)`` plus the four
values), so ``limits_for(bms)`` picks it up as ``bms.derating``.

Base limits are 80 % of the charge / discharge over-current settings (below
the 90 % over-current alarm, so a device running at the limit never raises
an alarm).  The target is the base times the smallest of these factors
(per mille, piecewise linear, all from the parameter table so they follow
the chemistry):

  charge, cold    0 below ``lt_chg_rec``, 10 % there, 100 % at +15 degC
  charge, hot     100 % up to ``t_chg_ot`` - 10 degC, 0 at ``t_chg_ot``
  charge, cell V  100 % up to ``ov1`` - KNEE_MV, 0 at ``ov1`` (the highest
                  cell; gives the balancer time on an unbalanced pack)
  charge, SOC     100 % up to 95 %, 20 % at 100 %
  discharge, cold 20 % at ``lt_dsg_rec``, 100 % at +15 degC, 0 below ``lt_dsg``
  discharge, hot  100 % up to ``t_cell_ot`` - 10 degC, 0 at ``t_cell_ot``
  discharge, V    100 % down to ``uv1`` + KNEE_MV, 0 at ``uv1`` (lowest cell)
  discharge, SOC  100 % down to 10 %, 10 % at 0 %

Boot publishes at once: until the core has its first complete measurement
(``ready``; the Bms's ``running``) both limits are 0; at that step each
allowed limit jumps to its derated target.  A watchdog reset under load therefore costs an
inverter one or two seconds of supply, not the minute a soft start from 0
would take (the loads behind an inverter cannot wait for a ramp; the
derating factors already hold the pack inside its comfort zone).

After that a limit falls to its target at once but rises at most by the base
limit per RAMP_MS: recovery from a derating or a fault is a ramp, so a
device at the limit does not slam the pack back to full current at a
threshold, and a reading hovering at a breakpoint moves the limit only a
little.  A direction blocked at boot (slave modules not yet discovered,
cold cells, a restored latch) is published at once the first time it is
allowed with complete data; every later rise ramps.  Any fault
whose reaction opens a path, the core's ``inhibit`` (relays held open during
a slave firmware update), the user switches, the sleep request, a core
without data and the low-temperature charge inhibit make the limit 0 at
once (the same rules as ``comms.limits.FaultLimits``).

After an authenticated reset of uv2 (ov2) the fault's recovery path caps the
charge (discharge) limit at LIMIT_PCT of the protection's ``recovery_ma``
(0.05 C), which re-trips the path after 1 s above it: headroom, as for the
base limits, so a device at the limit does not re-latch the fault.

CVL = cells x ``ov_rec`` (the voltage at which charging may resume after an
over-voltage trip, so a CV charger never drives a balanced pack into the
cut-off), never above cells x ``ov1`` whatever the parameters say; DVL =
cells x ``uv_rec``.  Both stay real voltages while a direction is blocked:
blocking is CCL / DCL 0 plus the cleared request flag (comms.inverter_can),
because inverters read a 0 V CVL as "no limit" or as a malformed frame.
"""
from micropython import const

from bms.faults import OV2, R_CHG, R_DSG, R_L2, UV2
from bms.measurements import ROLE_CELL, T_NONE_MAX, T_NONE_MIN
from bms.params import (P_CELL_COUNT, P_CHG_OC, P_CHG_SWITCH, P_DSG_OC, P_DSG_SWITCH,
                        P_KEY_ENABLE, P_LT_CHG_REC, P_LT_DSG, P_LT_DSG_REC, P_OV1, P_OV_REC,
                        P_T_CELL_OT, P_T_CHG_OT, P_UV1, P_UV_REC)
from bms.ticks import ticks_diff

LIMIT_PCT = const(80)
RAMP_MS = const(60000)      # 0 -> base limit in one minute
KNEE_MV = (150, 200, 150, 200)  # per chemistry (NMC, LFP, LTO, NA)


def ramp_pm(x, x0, y0, x1, y1):
    """Linear per-mille factor between (x0, y0) and (x1, y1), clamped."""
    if x1 == x0:
        return y1 if x >= x1 else y0
    if x1 > x0:
        if x <= x0:
            return y0
        if x >= x1:
            return y1
    else:
        if x >= x0:
            return y0
        if x <= x1:
            return y1
    return y0 + (y1 - y0) * (x - x0) // (x1 - x0)


def _scale(base, pm):
    # base (mA, < 1.1e6) * pm (<= 1000) stays a small int up to ~1 MA*pm.
    if base < 1000000:
        return base * pm // 1000
    return base // 1000 * pm


class Derating:
    def __init__(self, params, bms=None):
        self.params = params
        self.bms = bms
        self.cvl_mv = 0
        self.dvl_mv = 0
        self.ccl_ma = 0
        self.dcl_ma = 0
        self.ccl_target_ma = 0
        self.dcl_target_ma = 0
        self.chg_pm = 0           # the factors of the last step, for the app / tests
        self.dsg_pm = 0
        self.charge_enable = False
        self.discharge_enable = False
        self._last = 0
        self._seen = False
        self.ready = True         # complete data (update() copies bms.running)
        self.primed_c = False     # the boot jump of each direction is done
        self.primed_d = False
        self.cap_c = -1           # recovery path caps (mA), -1 none
        self.cap_d = -1

    @property
    def ccl_da(self):
        return self.ccl_ma // 100

    @property
    def dcl_da(self):
        return self.dcl_ma // 100

    def update(self, now=0):
        """Recompute from the attached Bms (the ``comms.limits`` interface)."""
        b = self.bms
        if b is None:
            return
        p = self.params
        block = b.prot.reaction | b.inhibit   # inhibit: relays held open (slave update)
        run = b.running and not b.sleep_requested and not b.waking
        chg = run and p[P_CHG_SWITCH] and not (block & (R_CHG | R_L2)) and \
            not b.heater.charge_inhibit
        dsg = run and p[P_DSG_SWITCH] and not (block & (R_DSG | R_L2))
        if dsg and p[P_KEY_ENABLE] and not b.board.key():
            dsg = False
        prot = b.prot
        # LIMIT_PCT of the recovery path's limit: a device following the cap
        # must not re-trip it (the path re-trips after 1 s above recovery_ma).
        cap = prot.recovery_ma * LIMIT_PCT // 100
        self.cap_c = cap if prot.recovering(UV2) else -1
        self.cap_d = cap if prot.recovering(OV2) else -1
        self.ready = b.running
        self.step(b.meas, b.soc.soc_pm, chg, dsg, now)

    def factors(self, m, soc_pm):
        """Set ``chg_pm`` / ``dsg_pm``, the derating factors in per mille.

        Stored, not returned as a tuple: this runs in the inverter's send
        path, which must not allocate.
        """
        p = self.params
        chem = p[0]
        knee = KNEE_MV[chem] if 0 <= chem < len(KNEE_MV) else 150
        tlo = m.tmin[ROLE_CELL]
        thi = m.tmax[ROLE_CELL]
        c = 1000
        d = 1000
        if tlo != T_NONE_MIN:
            rec = p[P_LT_CHG_REC] * 10
            f = 0 if tlo < rec else ramp_pm(tlo, rec, 100, rec + 150, 1000)
            c = f if f < c else c
            rec = p[P_LT_DSG_REC] * 10
            f = 0 if tlo <= p[P_LT_DSG] * 10 else ramp_pm(tlo, rec, 200, rec + 150, 1000)
            d = f if f < d else d
        if thi != T_NONE_MAX:
            ot = p[P_T_CHG_OT] * 10
            f = ramp_pm(thi, ot - 100, 1000, ot, 0)
            c = f if f < c else c
            ot = p[P_T_CELL_OT] * 10
            f = ramp_pm(thi, ot - 100, 1000, ot, 0)
            d = f if f < d else d
        if m.cells_seen:
            ov = p[P_OV1]
            f = ramp_pm(m.max_mv, ov - knee, 1000, ov, 0)
            c = f if f < c else c
            uv = p[P_UV1]
            f = ramp_pm(m.min_mv, uv + knee, 1000, uv, 0)
            d = f if f < d else d
        f = ramp_pm(soc_pm, 950, 1000, 1000, 200)
        c = f if f < c else c
        f = ramp_pm(soc_pm, 100, 1000, 0, 100)
        d = f if f < d else d
        self.chg_pm = c
        self.dsg_pm = d

    def step(self, m, soc_pm, chg_allowed, dsg_allowed, now):
        """Pure core of ``update``: targets from ``m``, ramped limits."""
        p = self.params
        n = p[P_CELL_COUNT]
        v = p[P_OV_REC]
        if v > p[P_OV1]:
            v = p[P_OV1]
        self.cvl_mv = n * v
        self.dvl_mv = n * p[P_UV_REC]
        self.factors(m, soc_pm)
        c = self.chg_pm
        d = self.dsg_pm
        base_c = p[P_CHG_OC] * LIMIT_PCT  # 0.1 A * 100 * pct / 100 = mA
        base_d = p[P_DSG_OC] * LIMIT_PCT
        tc = _scale(base_c, c) if chg_allowed else 0
        td = _scale(base_d, d) if dsg_allowed else 0
        if 0 <= self.cap_c < tc:
            tc = self.cap_c
        if 0 <= self.cap_d < td:
            td = self.cap_d
        self.ccl_target_ma = tc
        self.dcl_target_ma = td
        if self._seen:
            dt = ticks_diff(now, self._last)
            if dt < 0:
                dt = 0
            elif dt > 2000:
                dt = 2000
        else:
            dt = 0
            self._seen = True
        self._last = now
        if not self.ready:
            tc = td = 0
        if not self.primed_c and tc > 0:
            self.primed_c = True
            self.ccl_ma = tc
        if not self.primed_d and td > 0:
            self.primed_d = True
            self.dcl_ma = td
        self.ccl_ma = self._ramp(self.ccl_ma, tc, base_c, dt)
        self.dcl_ma = self._ramp(self.dcl_ma, td, base_d, dt)
        self.charge_enable = self.ccl_ma > 0
        self.discharge_enable = self.dcl_ma > 0

    @staticmethod
    def _ramp(cur, target, base, dt):
        if target <= cur:
            return target
        up = base * dt // RAMP_MS
        if up < 1 and dt > 0:
            up = 1
        v = cur + up
        return target if v > target else v
