"""The measurement snapshot every control cycle reads and drivers fill.

All buffers are allocated once here; drivers write into them in place and
``update_cell_stats`` / ``update_temp_stats`` recompute the summary fields
without allocating.  Units: mV, mA (positive = charging the pack),
0.1 degC, ticks in ms.

Range checks before storing: MicroPython's ``array`` keeps only the low bits
of a value that does not fit (68836 mV in an 'H' array reads back as a valid
3300 mV; CPython raises instead).  Drivers therefore store readings through
``put_cell`` / ``put_temp``, which check the value first and mark an
out-of-range reading invalid (CELL_MV_MAX is above the input range of every
supported AFE, TEMP_DC_MIN..MAX beyond every NTC table).  The stats also
treat a stored cell above CELL_MV_MAX as invalid, and the core range-checks
the current (CURRENT_MA_MAX) before it is used.

Invalid readings hold (``cell_held`` / ``temp_held``): the summary fields
use a sensor's last valid value while its reading is invalid, and count it in
``bad_cells`` / ``bad_temps``, so a fault that was pending keeps counting and
an active one cannot recover on data that is not there (bms.protection).
"""
from array import array

from micropython import const

from bms.ticks import cap_age, ticks_diff

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

# A reading older than this is no reading (stale): protection, the SOC
# estimator, the heater and the status block all ask through the *_fresh
# methods below, so they agree on what "valid now" means.
CURRENT_STALE_MS = const(500)
CELL_STALE_MS = const(1500)
TEMP_STALE_MS = const(3000)

# Sentinels for "no valid sensor of this role": they can never trip a limit.
T_NONE_MAX = const(-32768)
T_NONE_MIN = const(32767)

# Plausible ranges: a reading outside is invalid, never stored as a value.
CELL_MV_MAX = const(6000)        # above every AFE's cell input range (BQ76952, LTC681x: 5 V)
TEMP_DC_MIN = const(-550)        # -55 degC
TEMP_DC_MAX = const(1500)        # 150 degC
CURRENT_MA_MAX = const(10000000)  # 10 kA: beyond any shunt here, and a small int


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
        self.cell_last = array("H", [0] * max_cells)  # last valid reading
        self.cell_held = bytearray(max_cells)         # cell_last holds a value
        self.cells_ts = 0
        self.cells_seen = False

        self.n_temps = n
        self.temp_role = bytearray(temp_roles)
        self.temp_dc = array("h", [0] * n)
        self.temp_status = bytearray([T_NO_DATA] * n)
        self.temp_last = array("h", [0] * n)
        self.temp_held = bytearray(n)
        self.temps_ts = 0
        self.temps_seen = False

        self.current_ma = 0
        # The reading sits at the sensor's full scale (clipped): the current
        # is at least that large; the core's calibration never shrinks it.
        self.current_sat = False
        self.current_ts = 0
        self.current_seen = False
        self.pack_mv = 0  # measured stack voltage (AFE or shunt bus), 0 if none
        self.load_mv = 0  # load-side voltage behind the relays, for precharge
        self.load_ok = False
        # A second, independent current reading (the AFE's coulomb counter
        # beside the shunt monitor), for the plausibility check; boards
        # without one leave current2_ok False.
        self.current2_ma = 0
        self.current2_ok = False

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

    def cap_ages(self, now):
        """Hold the reading timestamps within ticks.AGE_CAP_MS of ``now`` (call at
        least once a day).  A tick difference wraps after 2**29 ms (6.2
        days): a sensor dead that long would read as fresh again and its
        stale fault clear, with its last reading frozen in."""
        self.current_ts = cap_age(now, self.current_ts)
        self.cells_ts = cap_age(now, self.cells_ts)
        self.temps_ts = cap_age(now, self.temps_ts)

    def current_fresh(self, now):
        """A current was read within CURRENT_STALE_MS."""
        return self.current_seen and ticks_diff(now, self.current_ts) <= CURRENT_STALE_MS

    def cells_fresh(self, now):
        """Cells were read within CELL_STALE_MS (some may still be invalid: bad_cells)."""
        return self.cells_seen and ticks_diff(now, self.cells_ts) <= CELL_STALE_MS

    def temps_fresh(self, now):
        """Temperatures were read within TEMP_STALE_MS (per role: bad_temps)."""
        return self.temps_seen and ticks_diff(now, self.temps_ts) <= TEMP_STALE_MS

    def fresh(self, now, max_age_ms):
        """True if current, cells and temperatures were all read within ``max_age_ms``."""
        return (self.current_seen and self.cells_seen and self.temps_seen
                and ticks_diff(now, self.current_ts) <= max_age_ms
                and ticks_diff(now, self.cells_ts) <= max_age_ms
                and ticks_diff(now, self.temps_ts) <= max_age_ms)

    def set_cell_count(self, n):
        if n < 1 or n > self.max_cells:
            raise ValueError("cell count")
        if n != self.n_cells:
            h = self.cell_held
            for i in range(self.max_cells):
                h[i] = 0
        self.n_cells = n

    def put_cell(self, i, mv):
        """Store one cell reading; an out-of-range value is marked invalid."""
        if 0 < mv <= CELL_MV_MAX:
            self.cell_mv[i] = mv
            self.cell_ok[i] = 1
            return True
        self.cell_mv[i] = 0
        self.cell_ok[i] = 0
        return False

    def put_temp(self, i, dc, status=T_OK):
        """Store one temperature; out of range is a sensor without data."""
        if status == T_OK and not (TEMP_DC_MIN <= dc <= TEMP_DC_MAX):
            status = T_NO_DATA
        if status == T_OK:
            self.temp_dc[i] = dc
        self.temp_status[i] = status
        return status == T_OK

    def update_cell_stats(self):
        n = self.n_cells
        mv = self.cell_mv
        ok = self.cell_ok
        last = self.cell_last
        held = self.cell_held
        hi = -1
        lo = 100000
        hi_i = 0
        lo_i = 0
        total = 0
        bad = 0
        for i in range(n):
            v = mv[i]
            if ok[i] and v <= CELL_MV_MAX:
                last[i] = v
                held[i] = 1
                total += v
            else:
                ok[i] = 0
                bad += 1
                if not held[i]:
                    continue
                v = last[i]  # invalid now: its last valid value holds
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
        last = self.temp_last
        held = self.temp_held
        for i in range(self.n_temps):
            r = role[i]
            v = t[i]
            if st[i] == T_OK and TEMP_DC_MIN <= v <= TEMP_DC_MAX:
                last[i] = v
                held[i] = 1
            else:
                bad[r] += 1
                if not held[i]:
                    continue
                v = last[i]
            if v > tmax[r]:
                tmax[r] = v
                self.tmax_idx[r] = i
            if v < tmin[r]:
                tmin[r] = v
                self.tmin_idx[r] = i
