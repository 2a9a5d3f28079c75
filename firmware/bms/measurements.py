"""The measurement snapshot every control cycle reads and drivers fill.

All buffers are allocated once here; drivers write into them in place and
``update_cell_stats`` / ``update_temp_stats`` recompute the summary fields
without allocating.  Units: mV, mA (positive = charging the pack),
0.1 degC, ticks in ms.
"""
from array import array

from micropython import const

from bms.ticks import ticks_diff

# Temperature sensor roles (TOPBMS: power board, balance board, cells).
ROLE_POWER = const(0)
ROLE_BALANCE = const(1)
ROLE_CELL = const(2)
_ROLE_AMBIENT = const(3)
N_ROLES = const(4)
ROLE_NAMES = ("power", "balance", "cell", "ambient")

# Temperature sensor status (drivers set it; anything but T_OK is a sensor fault).
T_OK = const(0)
T_OPEN = const(1)
T_SHORT = const(2)
T_NO_DATA = const(3)

# Sentinels for "no valid sensor of this role": they can never trip a limit.
T_NONE_MAX = const(-32768)
T_NONE_MIN = const(32767)


class Measurements:
    def __init__(self, max_cells, temp_roles):
        n = len(temp_roles)
        self.max_cells = max_cells
        self.n_cells = max_cells
        self.cell_mv = array("H", [0] * max_cells)
        # Per-cell validity and time of last update: module-based packs fill
        # cells at different times, and a cell that stops updating must be
        # noticed on its own.
        self.cell_ok = bytearray(max_cells)
        self.cell_ts = array("i", [0] * max_cells)
        self.cells_ts = 0
        self.cells_seen = False

        self.n_temps = n
        self.temp_role = bytearray(temp_roles)
        self.temp_dc = array("h", [0] * n)
        self.temp_status = bytearray([T_NO_DATA] * n)
        self.temps_ts = 0
        self.temps_seen = False

        self.current_ma = 0
        self.current_ts = 0
        self.current_seen = False
        self.pack_mv = 0  # measured stack voltage (AFE or shunt bus), 0 if none
        self.load_mv = 0  # load-side voltage behind the relays, for precharge
        self.load_ok = False

        # Derived by update_cell_stats().
        self.max_mv = 0
        self.max_idx = 0
        self.min_mv = 0
        self.min_idx = 0
        self.diff_mv = 0
        self.sum_mv = 0
        self.bad_cells = 0
        # Derived by update_temp_stats(), per role.
        self.tmax = array("h", [T_NONE_MAX] * N_ROLES)
        self.tmin = array("h", [T_NONE_MIN] * N_ROLES)
        self.tmax_idx = bytearray(N_ROLES)
        self.tmin_idx = bytearray(N_ROLES)
        self.bad_temps = array("H", [0] * N_ROLES)

    def fresh(self, now, max_age_ms):
        """True if current, cells and temperatures were all read within ``max_age_ms``."""
        return (self.current_seen and self.cells_seen and self.temps_seen
                and ticks_diff(now, self.current_ts) <= max_age_ms
                and ticks_diff(now, self.cells_ts) <= max_age_ms
                and ticks_diff(now, self.temps_ts) <= max_age_ms)

    def set_cell_count(self, n):
        if n < 1 or n > self.max_cells:
            raise ValueError("cell count")
        self.n_cells = n

    def update_cell_stats(self):
        n = self.n_cells
        mv = self.cell_mv
        ok = self.cell_ok
        hi = -1
        lo = 100000
        hi_i = 0
        lo_i = 0
        total = 0
        bad = 0
        for i in range(n):
            if not ok[i]:
                bad += 1
                continue
            v = mv[i]
            total += v
            if v > hi:
                hi = v
                hi_i = i
            if v < lo:
                lo = v
                lo_i = i
        self.bad_cells = bad
        self.sum_mv = total
        if hi < 0:
            # Nothing valid: leave extremes neutral, the stale-data fault acts.
            self.max_mv = 0
            self.min_mv = 0
            self.diff_mv = 0
            return
        self.max_mv = hi
        self.max_idx = hi_i
        self.min_mv = lo
        self.min_idx = lo_i
        self.diff_mv = hi - lo

    def update_temp_stats(self):
        tmax = self.tmax
        tmin = self.tmin
        bad = self.bad_temps
        for r in range(N_ROLES):
            tmax[r] = T_NONE_MAX
            tmin[r] = T_NONE_MIN
            bad[r] = 0
        role = self.temp_role
        st = self.temp_status
        t = self.temp_dc
        for i in range(self.n_temps):
            r = role[i]
            if st[i] != T_OK:
                bad[r] += 1
                continue
            v = t[i]
            if v > tmax[r]:
                tmax[r] = v
                self.tmax_idx[r] = i
            if v < tmin[r]:
                tmin[r] = v
                self.tmin_idx[r] = i
