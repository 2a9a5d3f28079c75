"""Passive balancing decision: which cells bleed this cycle.

Starts when the highest cell is at or above ``bal_start`` and the spread
exceeds ``bal_diff``; bleeds every cell more than ``bal_diff/2`` above the
lowest, and stops once the spread is back within ``bal_diff/2`` (hysteresis so
it does not flick on and off at the threshold).  Runs while charging, or also
at rest when ``bal_mode`` is 1.  When the AFE forbids adjacent bleeders the
odd and even cells take turns each cycle.
"""
from bms.faults import R_BAL
from bms.params import P_BAL_DIFF, P_BAL_ENABLE, P_BAL_MODE, P_BAL_START

CHARGING_MA = 500     # above this the pack is charging
REST_MA = 300         # below this magnitude the pack is at rest


class Balancer:
    def __init__(self, params, max_cells, no_adjacent=True):
        self.params = params
        self.flags = bytearray(max_cells)
        self.no_adjacent = no_adjacent
        self.active = False
        self.count = 0
        self._phase = 0

    def _stop(self):
        f = self.flags
        for i in range(len(f)):
            f[i] = 0
        self.count = 0

    def step(self, m, block):
        p = self.params
        cur = m.current_ma
        allowed = (p[P_BAL_ENABLE] and not (block & R_BAL) and m.cells_seen and m.bad_cells == 0
                   and (cur > CHARGING_MA or (p[P_BAL_MODE] == 1 and -REST_MA < cur < REST_MA)))
        half = p[P_BAL_DIFF] >> 1
        if allowed:
            if self.active:
                self.active = m.diff_mv > half
            else:
                self.active = m.max_mv >= p[P_BAL_START] and m.diff_mv > p[P_BAL_DIFF]
        else:
            self.active = False
        self._stop()
        if not self.active:
            return self.flags
        target = m.min_mv + half
        mv = m.cell_mv
        f = self.flags
        n = 0
        self._phase ^= 1
        for i in range(m.n_cells):
            if mv[i] > target:
                if self.no_adjacent and (i & 1) != self._phase:
                    continue
                f[i] = 1
                n += 1
        self.count = n
        return f
