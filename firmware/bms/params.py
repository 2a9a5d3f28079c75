"""Parameter table: the single source of truth for every user setting.

Each row is ``(name, unit, lo, hi, defaults, chem_dependent, text)`` where
``defaults`` holds one value per chemistry in CHEM_* order. Every value is a
16-bit integer in the unit the row names, so the Modbus register map, the PC
tool and the docs can be generated from this table without any scaling
tables of their own.  The core converts to its fixed units (mV, mA, 0.1 degC,
ms) once, when a parameter changes, never in the control loop.

Defaults for NMC, LFP and LTO are the TOPBMS parameter sheet's; sodium-ion
(layered-oxide / NFPP cells, 1.5-4.0 V window, nominal 3.0-3.1 V) follows
published cell datasheets (e.g. CATL/HiNa: charge 3.95-4.0 V, discharge
cut-off 1.5-2.0 V, charging down to -20 degC).

Cross-parameter rules are data too (RULES); ``ParamSet`` refuses any single
or multi-parameter change that breaks a range or a rule and then changes
nothing.

Chemistry ceilings (CHEM_LIMITS): absolute limits per chemistry, from cell
datasheets (sources in docs/parameters.md), on the highest over-voltage
(``ov2``, so ``ov1``, ``ov_rec`` and ``bal_start`` below it too), the lowest
under-voltage (``uv2``), the charge temperature window (``lt_chg``,
``t_chg_ot``) and the cell difference (``diff_prot``).  The AFE backstop and
the slave modules take their limits from these parameters, so they are
bounded too.  Only ``custom_chem`` = 1 lifts them; that parameter is in
FACTORY_ONLY (a write needs the factory role) and, like every change, is
logged.

Step limits (STEP_LIMITS): a parameter write may move ``cur_gain`` by at most
that much at once (a user or a bad calibration cannot halve the effective
over-current limits in one write); loading a stored set or defaults is not a
step.
"""
from array import array

from micropython import const

CHEM_NMC = const(0)
CHEM_LFP = const(1)
CHEM_LTO = const(2)
CHEM_NA = const(3)
CHEM_NAMES = ("NMC", "LFP", "LTO", "NA")

# Parameter indices; keep in the order of TABLE.
P_CHEMISTRY = const(0)
P_CELL_COUNT = const(1)
P_CAPACITY = const(2)
P_OV1 = const(3)
P_OV2 = const(4)
P_OV_REC = const(5)
P_OV_DELAY = const(6)
P_OV2_DELAY = const(7)
P_UV1 = const(8)
P_UV2 = const(9)
P_UV_REC = const(10)
P_UV_DELAY = const(11)
P_UV2_DELAY = const(12)
P_CHG_OC = const(13)
P_CHG_OC_DELAY = const(14)
P_DSG_OC = const(15)
P_DSG_OC_DELAY = const(16)
P_PEAK = const(17)
P_PEAK_DELAY = const(18)
P_SC = const(19)
P_OC_RELEASE = const(20)
P_T_POWER_OT = const(21)
P_T_POWER_REC = const(22)
P_T_BAL_OT = const(23)
P_T_BAL_REC = const(24)
P_T_CELL_OT = const(25)
P_T_CELL_REC = const(26)
P_T_CHG_OT = const(27)
P_T_CHG_REC = const(28)
P_LT_CHG = const(29)
P_LT_CHG_REC = const(30)
P_LT_DSG = const(31)
P_LT_DSG_REC = const(32)
P_DIFF_PROT = const(33)
P_DIFF_REC = const(34)
P_BAL_START = const(35)
P_BAL_DIFF = const(36)
P_BAL_ENABLE = const(37)
P_BAL_MODE = const(38)
P_CHG_SWITCH = const(39)
P_DSG_SWITCH = const(40)
P_KEY_ENABLE = const(41)
P_PRECHARGE_PCT = const(42)
P_PRECHARGE_TIMEOUT = const(43)
P_BUZZER = const(44)
P_ALARM_MV = const(45)
P_ALARM_C = const(46)
P_CUR_GAIN = const(47)
P_CUR_OFFSET = const(48)
P_HEATER_MODE = const(49)
P_HEAT_ON = const(50)
P_HEAT_OFF = const(51)
P_MODBUS_ADDR = const(52)
P_MODBUS_BAUD = const(53)
P_SPECIAL_CHARGER = const(54)
P_MODULE_CELLS = const(55)
P_MODULE_TIMEOUT = const(56)
P_OC_RETRIES = const(57)
P_OC_WINDOW = const(58)
P_CUSTOM_CHEM = const(59)
P_BAL_CURRENT = const(60)
P_SLEEP_IDLE = const(61)
P_SLEEP_CURRENT = const(62)
P_FULL_CHG_DAYS = const(63)
N_PARAMS = const(64)

HEATER_OFF = const(0)
HEATER_CHARGE = const(1)
HEATER_DISCHARGE = const(2)
HEATER_KEEP = const(3)
HEATER_FORCED = const(4)

BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200)

_D4 = const(1)  # chemistry-dependent row
_D1 = const(0)  # same default for every chemistry


# name, unit, lo, hi, defaults (NMC, LFP, LTO, NA), chem_dependent, text
TABLE = (
    ("chemistry", "enum", 0, 3, (0, 1, 2, 3), _D4,
     "Cell chemistry: 0 NMC (3.7 V), 1 LFP (3.2 V), 2 LTO (2.3 V), 3 sodium-ion. "
     "Writing it loads that chemistry's protection defaults."),
    ("cell_count", "cells", 3, 256, (16, 16, 16, 16), _D1,
     "Cells in series (board limit applies: 32 single board, 256 master)"),
    ("capacity", "0.1Ah", 10, 65000, (1000, 1000, 1000, 1000), _D1, "Rated pack capacity"),
    ("ov1", "mV", 1500, 4500, (4200, 3650, 2800, 3950), _D4,
     "Level-1 cell over-voltage: opens the charge relay"),
    ("ov2", "mV", 2950, 4800, (4300, 3750, 2950, 4050), _D4,
     "Level-2 cell over-voltage: opens the level-2 relay (latched)"),
    ("ov_rec", "mV", 1500, 4500, (4100, 3550, 2700, 3850), _D4,
     "Over-voltage recovery: charging resumes when every cell is below it"),
    ("ov_delay", "ms", 4000, 10000, (5000, 5000, 5000, 5000), _D1, "Level-1 over-voltage delay"),
    ("ov2_delay", "ms", 500, 10000, (2000, 2000, 2000, 2000), _D1, "Level-2 over-voltage delay"),
    ("uv1", "mV", 1500, 4500, (2750, 2500, 1800, 2000), _D4,
     "Level-1 cell under-voltage: opens the discharge relay"),
    ("uv2", "mV", 1000, 4500, (2500, 2250, 1600, 1700), _D4,
     "Level-2 cell under-voltage: opens the level-2 relay (latched)"),
    ("uv_rec", "mV", 1500, 4500, (3100, 2900, 2200, 2300), _D4,
     "Under-voltage recovery: discharging resumes when every cell is above it"),
    ("uv_delay", "ms", 4000, 10000, (5000, 5000, 5000, 5000), _D1, "Level-1 under-voltage delay"),
    ("uv2_delay", "ms", 500, 10000, (2000, 2000, 2000, 2000), _D1, "Level-2 under-voltage delay"),
    ("chg_oc", "0.1A", 1, 5000, (1000, 1000, 1000, 1000), _D1,
     "Charge over-current (at most the board's current range, as short_circuit)"),
    ("chg_oc_delay", "ms", 100, 60000, (3000, 3000, 3000, 3000), _D1, "Charge over-current delay"),
    ("dsg_oc", "0.1A", 1, 5000, (1500, 1500, 1500, 1500), _D1, "Continuous discharge over-current"),
    ("dsg_oc_delay", "ms", 100, 60000, (5000, 5000, 5000, 5000), _D1,
     "Discharge over-current delay"),
    ("peak", "0.1A", 2, 15000, (3000, 3000, 3000, 3000), _D1, "Peak discharge current"),
    ("peak_delay", "ms", 50, 5000, (500, 500, 500, 500), _D1, "Peak discharge current delay"),
    ("short_circuit", "0.1A", 3, 30000, (6000, 6000, 6000, 6000), _D1,
     "Short-circuit current: the AFE trips in hardware, firmware latches at the next fast tick. "
     "At most the board's current range (its shunt monitor's full scale, 1638.4 A on the "
     "default 100 uOhm shunt), where the reading clips: a higher limit is refused"),
    ("oc_release", "s", 1, 600, (30, 30, 30, 30), _D1,
     "Over-current release: the relay recloses after this time (see oc_retries)"),
    ("t_power_ot", "degC", 20, 120, (90, 90, 90, 90), _D1, "Power-module over-temperature"),
    ("t_power_rec", "degC", 10, 115, (85, 85, 85, 85), _D1,
     "Power-module over-temperature recovery"),
    ("t_bal_ot", "degC", 20, 120, (70, 70, 70, 70), _D1, "Balance-module over-temperature"),
    ("t_bal_rec", "degC", 10, 115, (65, 65, 65, 65), _D1,
     "Balance-module over-temperature recovery"),
    ("t_cell_ot", "degC", 20, 100, (65, 65, 65, 65), _D1, "Cell over-temperature"),
    ("t_cell_rec", "degC", 10, 95, (60, 60, 60, 60), _D1, "Cell over-temperature recovery"),
    ("t_chg_ot", "degC", 20, 100, (50, 55, 55, 55), _D4, "Cell over-temperature while charging"),
    ("t_chg_rec", "degC", 10, 95, (45, 50, 50, 50), _D4, "Charge over-temperature recovery"),
    ("lt_chg", "degC", -30, 20, (0, 0, -30, -20), _D4,
     "Low-temperature charge protection (charge inhibit)"),
    ("lt_chg_rec", "degC", -25, 30, (5, 5, -25, -15), _D4, "Low-temperature charge recovery"),
    ("lt_dsg", "degC", -40, 10, (-20, -20, -40, -30), _D4, "Low-temperature discharge protection"),
    ("lt_dsg_rec", "degC", -35, 20, (-15, -15, -35, -25), _D4,
     "Low-temperature discharge recovery"),
    ("diff_prot", "mV", 20, 2000, (800, 800, 800, 800), _D1, "Cell-difference protection"),
    ("diff_rec", "mV", 10, 1990, (600, 600, 600, 600), _D1, "Cell-difference recovery"),
    ("bal_start", "mV", 1000, 4300, (4100, 3400, 2600, 3700), _D4, "Balancing start voltage"),
    ("bal_diff", "mV", 1, 30, (20, 20, 20, 20), _D1, "Balancing voltage difference"),
    ("bal_enable", "bool", 0, 1, (1, 1, 1, 1), _D1, "Balancing (Equalization) enabled"),
    ("bal_mode", "enum", 0, 1, (0, 0, 0, 0), _D1, "0 balance while charging only, 1 also at rest"),
    ("chg_switch", "bool", 0, 1, (1, 1, 1, 1), _D1, "Charge MOS/relay switch (Normal page)"),
    ("dsg_switch", "bool", 0, 1, (1, 1, 1, 1), _D1, "Discharge MOS/relay switch (Normal page)"),
    ("key_enable", "bool", 0, 1, (0, 0, 0, 0), _D1,
     "ON/OFF key (K) controls the discharge relay; cycling it clears latched faults "
     "below critical (not short, ov2, uv2, internal, afe, relay_weld)"),
    ("precharge_pct", "%", 50, 99, (90, 90, 90, 90), _D1,
     "Precharge ends when load voltage reaches this share of pack voltage"),
    ("precharge_timeout", "ms", 100, 30000, (3000, 3000, 3000, 3000), _D1,
     "Precharge time-out (then latched fault)"),
    ("buzzer", "bool", 0, 1, (1, 1, 1, 1), _D1, "Buzzer alarm enabled"),
    ("alarm_margin_mv", "mV", 0, 500, (50, 50, 50, 50), _D1,
     "Voltage alarms warn this far before protection"),
    ("alarm_margin_c", "degC", 0, 20, (5, 5, 5, 5), _D1,
     "Temperature alarms warn this far before protection"),
    ("cur_gain", "1e-4", 9000, 11000, (10000, 10000, 10000, 10000), _D1,
     "Current calibration gain (+-10 %; one write or calibration moves it by at most 5 %)"),
    ("cur_offset", "mA", -5000, 5000, (0, 0, 0, 0), _D1, "Current calibration offset"),
    ("heater_mode", "enum", 0, 4, (0, 0, 0, 0), _D1,
     "Heater: 0 off, 1 while charging, 2 while discharging, 3 keep heating, 4 forced"),
    ("heat_on", "degC", -30, 20, (0, 0, -30, -20), _D4, "Heater switches on below"),
    ("heat_off", "degC", -25, 30, (8, 8, -20, -10), _D4, "Heater switches off above"),
    ("modbus_addr", "addr", 1, 247, (1, 1, 1, 1), _D1, "Modbus device address"),
    ("modbus_baud", "enum", 0, 5, (1, 1, 1, 1), _D1,
     "Modbus baud: 0 4800, 1 9600, 2 19200, 3 38400, 4 57600, 5 115200"),
    ("special_charger", "bool", 0, 1, (0, 0, 0, 0), _D1, "Special charger on RS485-1 enabled"),
    ("module_cells", "cells", 1, 16, (16, 16, 16, 16), _D1,
     "Cells per slave module (master with CAN slaves; the last module takes the rest of "
     "cell_count). The module count follows after a restart"),
    ("module_timeout", "ms", 1500, 10000, (2500, 2500, 2500, 2500), _D1,
     "A slave module without a complete, consistent sweep this long raises the comm fault"),
    ("oc_retries", "count", 0, 10, (3, 3, 3, 3), _D1,
     "Over-current releases allowed: one more trip of chg_oc, dsg_oc or peak within "
     "oc_window latches it until reset"),
    ("oc_window", "s", 10, 3600, (600, 600, 600, 600), _D1,
     "Over-current retry window, from the first trip of a series"),
    ("custom_chem", "bool", 0, 1, (0, 0, 0, 0), _D1,
     "Custom chemistry: 1 lifts the chemistry ceilings on voltage, charge temperature "
     "and cell difference (factory role only; logged)"),
    ("bal_current", "mA", 2, 2000, (100, 100, 100, 100), _D1,
     "Balancing current of the board's bleed resistors (cell voltage / resistor); the "
     "per-cell balanced charge readout uses it"),
    ("sleep_idle", "min", 0, 1440, (30, 30, 30, 30), _D1,
     "SmartSleep: sleep after this long below sleep_current (0 = SmartSleep off)"),
    ("sleep_current", "mA", 10, 5000, (200, 200, 200, 200), _D1,
     "SmartSleep: the pack counts as idle below this current"),
    ("full_chg_days", "d", 0, 365, (0, 7, 0, 0), _D4,
     "Ask the inverter for a full charge (CAN 0x35C bit 3) after this many days of "
     "operation without one, until the next full anchor (0 = never): on LFP's plateau only "
     "a full charge calibrates SOC. Counted since boot"),
)

# Chemistry ceilings: (parameter, LIM_MAX or LIM_MIN, (NMC, LFP, LTO, NA), source).
# Sources (cell datasheets; docs/parameters.md has the details):
#   NMC  Samsung INR18650-25R / LG INR18650-MJ1: charge 4.20 V +-0.05, cut-off
#        2.5 V, charge 0..45/50 degC
#   LFP  EVE LF280K / CATL 280 Ah: charge 3.65 V, cut-off 2.5 V (2.0 V below
#        0 degC), charge 0..55/60 degC
#   LTO  Toshiba SCiB / Yinlong 66160: charge 2.7-2.8 V, cut-off 1.5 V,
#        charge down to -30 degC, up to 55 degC
#   NA   CATL / HiNa sodium-ion: charge 3.95-4.0 V, cut-off 1.5 V, charge
#        -20..55 degC
# Level-2 ceilings sit 50-150 mV above the datasheet charge voltage (a trip
# point, not a charge voltage) and never below the TOPBMS defaults.
LIM_MAX = const(0)
LIM_MIN = const(1)
CHEM_LIMITS = (
    (P_OV2, LIM_MAX, (4300, 3750, 3000, 4100), "cell voltage ceiling"),
    (P_UV2, LIM_MIN, (2500, 2000, 1500, 1500), "cell voltage floor"),
    (P_LT_CHG, LIM_MIN, (0, 0, -30, -20), "lowest charge temperature"),
    (P_T_CHG_OT, LIM_MAX, (50, 60, 55, 55), "highest charge temperature"),
    (P_DIFF_PROT, LIM_MAX, (1000, 1000, 1000, 1000), "cell difference ceiling"),
)

# Parameters only the factory role may write (ParamSet.set_many(factory=True)).
FACTORY_ONLY = (P_CUSTOM_CHEM,)
# (parameter, largest change of one write).
CUR_GAIN_STEP = const(500)
STEP_LIMITS = ((P_CUR_GAIN, CUR_GAIN_STEP),)

OP_GT = const(0)
OP_LT = const(1)

# (a, op, b, reason): value[a] op value[b] must hold.
RULES = (
    (P_OV2, OP_GT, P_OV1, "level-2 over-voltage must be above level-1 over-voltage"),
    (P_OV_REC, OP_LT, P_OV1, "over-voltage recovery must be below level-1 over-voltage"),
    (P_UV2, OP_LT, P_UV1, "level-2 under-voltage must be below level-1 under-voltage"),
    (P_UV_REC, OP_GT, P_UV1, "under-voltage recovery must be above level-1 under-voltage"),
    (P_UV_REC, OP_LT, P_OV_REC, "under-voltage recovery must be below over-voltage recovery"),
    (P_OV2_DELAY, OP_LT, P_OV_DELAY, "level-2 over-voltage delay must be shorter than level-1"),
    (P_UV2_DELAY, OP_LT, P_UV_DELAY, "level-2 under-voltage delay must be shorter than level-1"),
    (P_BAL_START, OP_LT, P_OV1, "balancing start must be below level-1 over-voltage"),
    (P_BAL_START, OP_GT, P_UV1, "balancing start must be above level-1 under-voltage"),
    (P_PEAK, OP_GT, P_DSG_OC, "peak current must be above discharge over-current"),
    (P_SC, OP_GT, P_PEAK, "short-circuit current must be above peak current"),
    (P_PEAK_DELAY, OP_LT, P_DSG_OC_DELAY, "peak delay must be shorter than discharge over-current delay"),
    (P_T_POWER_REC, OP_LT, P_T_POWER_OT, "power over-temperature recovery must be below its protection"),
    (P_T_BAL_REC, OP_LT, P_T_BAL_OT, "balance over-temperature recovery must be below its protection"),
    (P_T_CELL_REC, OP_LT, P_T_CELL_OT, "cell over-temperature recovery must be below its protection"),
    (P_T_CHG_REC, OP_LT, P_T_CHG_OT, "charge over-temperature recovery must be below its protection"),
    (P_T_CHG_OT, OP_LT, P_T_CELL_OT, "charge over-temperature must be below cell over-temperature"),
    (P_LT_CHG_REC, OP_GT, P_LT_CHG, "low-temperature charge recovery must be above its protection"),
    (P_LT_DSG_REC, OP_GT, P_LT_DSG, "low-temperature discharge recovery must be above its protection"),
    (P_LT_CHG_REC, OP_LT, P_T_CHG_REC, "low-temperature charge recovery must be below charge over-temperature recovery"),
    (P_LT_DSG, OP_LT, P_LT_CHG_REC, "low-temperature discharge must be below low-temperature charge recovery"),
    (P_DIFF_REC, OP_LT, P_DIFF_PROT, "cell-difference recovery must be below cell-difference protection"),
    (P_BAL_DIFF, OP_LT, P_DIFF_REC, "balancing difference must be below cell-difference recovery"),
    (P_HEAT_OFF, OP_GT, P_HEAT_ON, "heater off temperature must be above heater on temperature"),
    (P_HEAT_OFF, OP_LT, P_T_CHG_REC, "heater off temperature must be below charge over-temperature recovery"),
    (P_HEAT_OFF, OP_GT, P_LT_CHG_REC, "heater off temperature must be above low-temperature charge recovery"),
)


# The over-current retry limit (protection.py): the (oc_retries + 1)-th trip
# of chg_oc, dsg_oc or peak within oc_window s of the first latches.  Trips
# come at least one release cycle apart: oc_release, then (a discharge path
# recloses through precharge) up to precharge_timeout, then the row's delay,
# plus a second for the ticks in between.  A window that cannot hold
# oc_retries cycles makes the limit unreachable, so check() refuses it.
OC_SERIES = (P_OC_WINDOW, P_OC_RELEASE, P_OC_RETRIES, P_CHG_OC_DELAY, P_DSG_OC_DELAY,
             P_PRECHARGE_TIMEOUT)


def oc_cycle_s(values):
    """The longest release cycle, from one over-current trip to the next
    (release, a full precharge, the longer delay), rounded up to s: the
    window must hold oc_retries of them for the limit to be reached."""
    d = values[P_CHG_OC_DELAY]
    if values[P_DSG_OC_DELAY] > d:
        d = values[P_DSG_OC_DELAY]
    return values[P_OC_RELEASE] + (d + values[P_PRECHARGE_TIMEOUT] + 999) // 1000 + 1


def index(name):
    """Parameter index by name, or -1."""
    for i in range(N_PARAMS):
        if TABLE[i][0] == name:
            return i
    return -1


def defaults(chem):
    """A fresh value array holding ``chem``'s defaults."""
    v = array("i", [0] * N_PARAMS)
    for i in range(N_PARAMS):
        v[i] = TABLE[i][4][chem]
    return v


def check(values, max_cells=256, board_rule=None):
    """None if ``values`` is a valid set, else ``(index, reason)``.

    ``board_rule(values)``: what this board can measure beyond the table
    (a stacked AFE's fewest cells, a module layout on a CAN master): None or
    ``(index, reason)`` like this function."""
    for i in range(N_PARAMS):
        row = TABLE[i]
        v = values[i]
        if v < row[2] or v > row[3]:
            return (i, "%s=%d out of range %d..%d %s" % (row[0], v, row[2], row[3], row[1]))
    if values[P_CELL_COUNT] > max_cells:
        return (P_CELL_COUNT, "cell_count=%d above this board's %d cells" % (values[P_CELL_COUNT], max_cells))
    if board_rule is not None:
        bad = board_rule(values)
        if bad is not None:
            return bad
    for a, op, b, reason in RULES:
        va = values[a]
        vb = values[b]
        ok = va > vb if op == OP_GT else va < vb
        if not ok:
            return (a, "%s (%s=%d, %s=%d)" % (reason, TABLE[a][0], va, TABLE[b][0], vb))
    n = values[P_OC_RETRIES]
    cyc = oc_cycle_s(values) if n else 0
    if n and n * cyc >= values[P_OC_WINDOW]:
        return (P_OC_WINDOW, "oc_window=%d s too short for oc_retries=%d release cycles of %d s "
                "(oc_release+precharge+delay+1): the retry limit never latches"
                % (values[P_OC_WINDOW], n, cyc))
    if not values[P_CUSTOM_CHEM]:
        chem = values[P_CHEMISTRY]
        for i, bound, lims, what in CHEM_LIMITS:
            lim = lims[chem]
            v = values[i]
            if (v > lim) if bound == LIM_MAX else (v < lim):
                return (i, "%s=%d beyond the %s %s %d for %s (custom_chem lifts it: factory role)"
                        % (TABLE[i][0], v, what, "<=" if bound == LIM_MAX else ">=", lim,
                           CHEM_NAMES[chem]))
    return None


def min_cells_rule(lo):
    """A board rule (see check): cell_count of at least ``lo`` (a stack of
    two AFEs measures 3 cells or more on each chip)."""
    def rule(values):
        n = values[P_CELL_COUNT]
        if n < lo:
            return (P_CELL_COUNT, "cell_count=%d below this board's %d cells" % (n, lo))
        return None
    return rule


class CurrentRule:
    """A board rule (see check): ``short_circuit`` and ``chg_oc`` within
    ``max_ma``, the largest current the board's sensor tells apart (the
    shunt monitor's full scale: 163.84 mV / R on an INA228).  A current
    beyond it reads as full scale (drivers.ina228), so a limit above it
    would never trip: refused.  ``peak`` and ``dsg_oc`` sit below
    ``short_circuit`` (RULES), so within it too."""

    def __init__(self, max_ma):
        self.max_ma = max_ma

    def __call__(self, values):
        top = self.max_ma
        for i in (P_SC, P_CHG_OC):
            v = values[i]
            if v * 100 > top:
                return (i, "%s=%d (%d.%d A) above this board's current range %d.%d A: "
                        "its shunt reading clips there, so a current beyond it never "
                        "reaches the limit" % (TABLE[i][0], v, v // 10, v % 10,
                                               top // 1000, top % 1000 // 100))
        return None

    def fit(self, values):
        """Bring a default set within the range (a board whose shunt
        measures less than the table's defaults still boots on defaults):
        short_circuit down to the range, peak and dsg_oc scaled with it
        (their order kept), chg_oc capped."""
        top = self.max_ma // 100
        sc = values[P_SC]
        if sc > top:
            values[P_PEAK] = values[P_PEAK] * top // sc
            values[P_DSG_OC] = values[P_DSG_OC] * top // sc
            values[P_SC] = top
        if values[P_CHG_OC] > top:
            values[P_CHG_OC] = top


class BoardRules:
    """Several board rules as one (check() takes one): the first refusal."""

    def __init__(self, rules):
        self.rules = rules

    def __call__(self, values):
        for r in self.rules:
            bad = r(values)
            if bad is not None:
                return bad
        return None

    def fit(self, values):
        for r in self.rules:
            fit_defaults(values, r)


def board_rules(*rules):
    """One board rule from any of ``rules`` (None: no rule)."""
    rs = [r for r in rules if r is not None]
    if not rs:
        return None
    return rs[0] if len(rs) == 1 else BoardRules(rs)


def fit_defaults(values, board_rule):
    """A default set brought within what ``board_rule`` allows, where the
    rule knows how (its ``fit``); the cell count is the caller's."""
    f = getattr(board_rule, "fit", None)
    if f is not None:
        f(values)
    return values


class ParamError(ValueError):
    """A refused change; ``index`` names the first offending parameter."""

    def __init__(self, index, reason):
        super().__init__(reason)
        self.index = index
        self.reason = reason


class ParamSet:
    """The live parameter values with validated, all-or-nothing updates.

    ``version`` increases on every accepted change so the core can refresh
    its derived thresholds at its next cycle.  ``listener(index, old, new)``
    (the event log, the settings store) hears every changed value.
    """

    def __init__(self, chem=CHEM_LFP, max_cells=256, values=None, board_rule=None):
        self.max_cells = max_cells
        self.board_rule = board_rule    # see check()
        self.values = fit_defaults(defaults(chem), board_rule)
        if max_cells < self.values[P_CELL_COUNT]:
            self.values[P_CELL_COUNT] = max_cells
        self._scratch = array("i", self.values)
        self.version = 0
        self.listener = None
        if values is not None:
            self.replace(values)

    def get(self, i):
        return self.values[i]

    def __getitem__(self, i):
        return self.values[i]

    def name(self, i):
        return TABLE[i][0]

    def set(self, i, value):
        """Set one parameter; raises ParamError and changes nothing if refused."""
        self.set_many(((i, value),))

    def set_many(self, pairs, factory=False):
        """Apply ``(index, value)`` pairs atomically; ParamError on refusal.

        A chemistry change loads that chemistry's defaults for the
        chemistry-dependent rows first, then the other pairs on top, so a
        pack never runs LFP limits on NMC cells.  ``factory``: the writer
        holds the factory role (FACTORY_ONLY rows, no STEP_LIMITS).
        """
        s = self._scratch
        for i in range(N_PARAMS):
            s[i] = self.values[i]
        for i, v in pairs:
            if i < 0 or i >= N_PARAMS:
                raise ParamError(i, "no parameter %d" % i)
            if not factory:
                if i in FACTORY_ONLY and v != self.values[i]:
                    raise ParamError(i, "%s needs the factory role" % TABLE[i][0])
                for j, step in STEP_LIMITS:
                    if i == j and (v - self.values[i] > step or self.values[i] - v > step):
                        raise ParamError(i, "%s may change by at most %d per write (%d -> %d)"
                                         % (TABLE[i][0], step, self.values[i], v))
            if i == P_CHEMISTRY:
                if v < 0 or v > 3:
                    raise ParamError(i, "chemistry=%d out of range 0..3" % v)
                if v == self.values[P_CHEMISTRY]:
                    continue  # rewriting the same chemistry keeps custom limits
                for j in range(N_PARAMS):
                    if TABLE[j][5]:
                        s[j] = TABLE[j][4][v]
        for i, v in pairs:
            v = int(v)
            row = TABLE[i]
            if v < row[2] or v > row[3]:
                # Checked before the store: MicroPython's array would
                # silently keep only the low 32 bits of a huge value.
                raise ParamError(i, "%s=%d out of range %d..%d %s" % (row[0], v, row[2], row[3], row[1]))
            s[i] = v
        bad = check(s, self.max_cells, self.board_rule)
        if bad is not None:
            raise ParamError(bad[0], bad[1])
        self._commit(s)

    def replace(self, values):
        """Load a whole stored set (settings store); refused if invalid."""
        s = self._scratch
        for i in range(N_PARAMS):
            s[i] = values[i]
        bad = check(s, self.max_cells, self.board_rule)
        if bad is not None:
            raise ParamError(bad[0], bad[1])
        self._commit(s)

    def load_defaults(self, chem):
        """Factory defaults for ``chem`` (Reset on the Normal page)."""
        d = fit_defaults(defaults(chem), self.board_rule)
        d[P_CELL_COUNT] = self.values[P_CELL_COUNT]   # the wiring does not change
        d[P_MODULE_CELLS] = self.values[P_MODULE_CELLS]
        d[P_CAPACITY] = self.values[P_CAPACITY]
        self.replace(d)

    def _commit(self, s):
        changed = False
        for i in range(N_PARAMS):
            old = self.values[i]
            if old != s[i]:
                self.values[i] = s[i]
                changed = True
                if self.listener is not None:
                    self.listener(i, old, s[i])
        if changed:
            self.version += 1
