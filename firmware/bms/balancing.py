"""Passive balancing: which cells bleed, and when the bleeders are switched.

Rules (TOPBMS manual: "any cell exceeds the balance start voltage and the
set voltage difference -> balance ... until within the set difference"):

* Start when the highest cell is at or above ``bal_start`` and the spread
  exceeds ``bal_diff``; then bleed every cell more than ``bal_diff/2`` above
  the lowest; stop once the spread is within ``bal_diff/2`` or the highest
  cell falls ``_START_HYST_MV`` below ``bal_start`` (hysteresis both ways, so
  nothing flicks at a threshold).
* Only while charging (``bal_mode`` 0) or also at rest (``bal_mode`` 1);
  never while discharging (bleeding then only wastes charge).  While the
  cell-difference fault is active (``rest_ok``) it also runs at rest and
  without waiting for ``bal_start``: that fault holds the charge relay open,
  so balancing that waits for charge current could never clear it.  The
  temperature rules and R_BAL still apply.
* No cell at or below ``uv_rec`` is bled, in any mode (``bal_start`` need
  only be above ``uv1``).
* Stops at once when the protection blocks it (R_BAL: under-voltage, cell /
  balance over-temperature, stale cell data, a balance NTC that is invalid
  or temperatures not read for 3 s: bal_sensor ...), when a cell reading is
  invalid, or when the balance resistors reach ``t_bal_rec`` (it resumes
  ``_HOT_HYST_DC`` lower): balancing throttles itself before the balance
  over-temperature fault at ``t_bal_ot`` has to act.  Without a balance-board
  NTC the power-board NTC stands in.
* Where the AFE forbids bleeding two adjacent cells at once
  (``no_adjacent``), cells are picked highest first (four passes over
  falling thresholds of excess voltage, each taking every cell whose
  neighbours are not taken): the highest cell sets the balancing time and
  never waits for a lower neighbour; ties rotate the scan start every period
  so equal cells take turns.
* Duty cycling: bleed current flows through the sense leads and pulls the
  readings down, so decisions use only "quiet" sweeps.  ``step`` is called
  after every cell sweep; with PERIOD sweeps per period the bleeders are off
  for the last interval of each period, the following sweep is quiet and it
  alone decides the next period's cells.  Duty = (PERIOD-1)/PERIOD.

State per cell: ``flags`` (bleeding now, what the board gets), ``want``
(selected from the last quiet sweep), ``on_count`` (sweep intervals spent
bleeding, ``bleed_s(i)`` in seconds); ``state`` says why it is (not)
balancing.
"""
from array import array

from micropython import const

from bms.faults import R_BAL
from bms.measurements import ROLE_BALANCE, ROLE_POWER, T_NONE_MAX
from bms.params import (P_BAL_DIFF, P_BAL_ENABLE, P_BAL_MODE, P_BAL_START, P_T_BAL_REC,
                        P_UV_REC)

_CHARGING_MA = const(500)    # above this the pack is charging
_REST_MA = const(300)        # below this magnitude the pack is at rest
PERIOD = const(4)           # sweeps per balancing period (one quiet)
_START_HYST_MV = const(20)
_HOT_HYST_DC = const(50)     # 5 degC below t_bal_rec before resuming

ST_DISABLED = const(0)
ST_IDLE = const(1)          # allowed, nothing to do
ST_WAIT = const(2)          # not charging / not at rest (bal_mode)
ST_BLOCKED = const(3)       # protection or invalid data
ST_HOT = const(4)           # balance resistors too warm
ST_ACTIVE = const(5)
STATE_NAMES = ("disabled", "idle", "wait", "blocked", "hot", "active")


class Balancer:
    def __init__(self, params, max_cells, no_adjacent=True, period_ms=250):
        self.params = params
        self.max_cells = max_cells
        self.flags = bytearray(max_cells)
        self.want = bytearray(max_cells)
        self.on_count = array("I", [0] * max_cells)
        self.no_adjacent = no_adjacent
        self.period_ms = period_ms
        self.active = False
        self.hot = False
        self.state = ST_IDLE
        self.count = 0
        self.quiet = True           # the last sweep was taken with bleeders off
        self._sweep = 0
        self._rot = 0
        self._on = False            # bleeders were on during the last interval
        self._force = False         # rest_ok at the last step

    def bleed_s(self, i):
        return self.on_count[i] * self.period_ms // 1000

    def _clear(self, buf):
        for i in range(len(buf)):
            buf[i] = 0

    def _off(self, state):
        """Everything off now; returns True if the board must be told."""
        self.state = state
        self.active = False
        changed = self._on or self.count
        self._clear(self.flags)
        self._clear(self.want)
        self.count = 0
        self._on = False
        self._sweep = 0
        return bool(changed)

    def step(self, m, block, rest_ok=False):
        """Call after every cell sweep; True if ``flags`` changed (write them).

        ``rest_ok``: balance at rest whatever ``bal_mode`` and ``bal_start``
        say (the cell-difference fault is active)."""
        p = self.params
        # Account the interval that just ended and note how it was measured.
        self.quiet = not self._on
        if self._on:
            f = self.flags
            c = self.on_count
            for i in range(m.n_cells):
                if f[i]:
                    c[i] += 1
        if not p[P_BAL_ENABLE]:
            return self._off(ST_DISABLED)
        if (block & R_BAL) or not m.cells_seen or m.bad_cells:
            return self._off(ST_BLOCKED)
        t = m.tmax[ROLE_BALANCE]
        if t == T_NONE_MAX:
            t = m.tmax[ROLE_POWER]
        lim = p[P_T_BAL_REC] * 10
        if t != T_NONE_MAX:
            if self.hot:
                self.hot = t >= lim - _HOT_HYST_DC
            else:
                self.hot = t >= lim
        if self.hot:
            return self._off(ST_HOT)
        cur = m.current_ma
        if not (cur > _CHARGING_MA or
                ((p[P_BAL_MODE] == 1 or rest_ok) and -_REST_MA < cur < _REST_MA)):
            return self._off(ST_WAIT)
        self._force = rest_ok

        s = self._sweep
        self._sweep = s + 1 if s + 1 < PERIOD else 0
        if s == 0:
            if not self.quiet:
                # A period was cut short: make this interval the quiet one.
                self._sweep = 0
                return self._set(False)
            self._decide(m)
            self._set(self.active)
            return True  # rewrite once per period even if unchanged (AFE reset)
        if s == PERIOD - 1:
            return self._set(False)  # the next sweep is the quiet one
        return False

    def _decide(self, m):
        p = self.params
        half = p[P_BAL_DIFF] >> 1
        start = p[P_BAL_START]
        # bal_start may lie below uv_rec (it need only be above uv1): a cell
        # that low is never bled further, in any mode.
        floor = p[P_UV_REC]
        if self._force:
            start = 0
        if self.active:
            self.active = m.diff_mv > half and m.max_mv >= start - _START_HYST_MV
        else:
            self.active = m.max_mv >= start and m.diff_mv > p[P_BAL_DIFF]
        w = self.want
        self._clear(w)
        if not self.active:
            self.state = ST_IDLE
            return
        self.state = ST_ACTIVE
        target = m.min_mv + half
        if target < floor:
            target = floor
        mv = m.cell_mv
        n = m.n_cells
        if not self.no_adjacent:
            for i in range(n):
                if mv[i] > target:
                    w[i] = 1
            return
        e = m.max_mv - target
        rot = self._rot
        self._rot = rot + 1 if rot + 1 < n else 0
        for k in (3, 2, 1, 0):
            thr = target + e * k // 4
            for j in range(n):
                i = j + rot
                if i >= n:
                    i -= n
                if not w[i] and mv[i] > thr and (i == 0 or not w[i - 1]) and \
                        (i == n - 1 or not w[i + 1]):
                    w[i] = 1

    def _set(self, on):
        """Apply ``want`` (respecting adjacency) or all-off; True if changed."""
        f = self.flags
        n = len(f)
        changed = False
        cnt = 0
        if not on:
            for i in range(n):
                if f[i]:
                    f[i] = 0
                    changed = True
        else:
            w = self.want
            for i in range(n):
                if f[i] != w[i]:
                    f[i] = w[i]
                    changed = True
            for i in range(n):
                if f[i]:
                    cnt += 1
        self.count = cnt
        self._on = cnt > 0
        return changed
