"""Current-sensor plausibility: is the current reading believable?

Two checks feed the ``current_sensor`` fault (faults.SIG_CUR_PLAUS):

1. Second source (``fast``, every fast tick).  Boards with an independent
   second reading (``meas.current2_ok``: the BQ76952's coulomb counter on the
   same shunt as the INA228) compare the two.  They disagree when
   ``|I - I2| > max(DIFF_MA, |I2| / DIFF_DIV)`` (5 A or 12.5 %).  The flag
   is the disagreement itself; the fault's 1 s set delay (with its flicker
   rule) makes it "for 1 s".  Without a second reading the last verdict
   holds (docs/faults.md: missing data holds a fault's state).

2. Voltage response (``cells``, after every quiet cell sweep, only on boards
   whose cell voltages respond to the current, ``board.voltage_response``).
   A cell voltage cannot step without a current step: a real pack's
   mean cell voltage moves by I x R.  When the mean cell voltage steps by
   ``STEP_MV`` or more between two sweeps and the change of the reported
   current explains less than half of it even with a generous cell
   resistance (R_MAX_UOHM_AH / capacity, 5 mOhm at 100 Ah, about five times
   a real cell's), the step is unexplained; if the voltage stays that far
   off (at least STEP_MV / 2, same direction, still unexplained) for
   HOLD_MS, the flag is raised.  A current sensor stuck at 0 A while 200 A
   flow (a 160 mV per cell sag on a 100 Ah LFP pack) is caught 2 s after the
   load starts, plus the fault's 1 s delay.  The flag clears when the offset
   goes away or is explained; the fault is latched, so the safe state stays
   until a reset.

Integer arithmetic only, nothing allocated per call.
"""
from micropython import const

from bms.params import P_CAPACITY
from bms.ticks import ticks_diff

DIFF_MA = const(5000)
DIFF_DIV = const(8)
STEP_MV = const(25)
HOLD_MS = const(2000)
R_MAX_UOHM_AH = const(500000)   # 5 mOhm per cell at 100 Ah (capacity in 0.1 Ah: /1000)
_R_CAP_UOHM = const(50000)      # never assume more than 50 mOhm per cell


def _abs(x):
    return x if x >= 0 else -x


class CurrentCheck:
    def __init__(self, params):
        self.params = params
        self.second_bad = False
        self.response_bad = False
        self._prev_mv = 0
        self._prev_ma = 0
        self._have_prev = False
        self._pending = False
        self._ref_mv = 0
        self._ref_ma = 0
        self._since = 0
        self._up = False
        self.unexplained = 0     # unexplained steps seen (diagnostics)

    @property
    def bad(self):
        return self.second_bad or self.response_bad

    def fast(self, m):
        if not m.current2_ok:
            # No second reading is no verdict: the last one holds (a pending
            # disagreement must not read as agreement while the AFE is silent).
            return
        a = m.current_ma
        b = m.current2_ma
        lim = _abs(b) // DIFF_DIV
        if lim < DIFF_MA:
            lim = DIFF_MA
        self.second_bad = _abs(a - b) > lim

    def _explained(self, dv, di):
        """True if a current change ``di`` (mA) explains a mean cell step ``dv`` (mV)."""
        cap = self.params[P_CAPACITY]
        r = R_MAX_UOHM_AH * 10 // cap if cap > 0 else _R_CAP_UOHM
        if r > _R_CAP_UOHM:
            r = _R_CAP_UOHM
        a = _abs(di) // 1000       # A, <= 10000 after the core's range check
        mv = a * r // 1000         # A x uOhm / 1000 = mV, < 2**30
        return 2 * mv >= _abs(dv)

    def cells(self, m, now, quiet=True):
        """After a cell sweep; ``quiet`` is False while bleeders pull the readings."""
        n = m.n_cells
        if not quiet or m.bad_cells or n <= 0 or not m.cells_seen or not m.current_seen:
            return
        mean = m.sum_mv // n
        cur = m.current_ma
        if self._pending:
            dv = mean - self._ref_mv
            if (dv > 0) != self._up or _abs(dv) < STEP_MV // 2 or \
                    self._explained(dv, cur - self._ref_ma):
                self._pending = False
                self.response_bad = False
            elif ticks_diff(now, self._since) >= HOLD_MS:
                self.response_bad = True
        elif self._have_prev:
            dv = mean - self._prev_mv
            if _abs(dv) >= STEP_MV and not self._explained(dv, cur - self._prev_ma):
                self._pending = True
                self._up = dv > 0
                self._ref_mv = self._prev_mv
                self._ref_ma = self._prev_ma
                self._since = now
                self.unexplained += 1
        self._prev_mv = mean
        self._prev_ma = cur
        self._have_prev = True

    def reset(self):
        self._pending = False
        self.response_bad = False
        self._have_prev = False
