"""Fault table: one row per protection, alarm and diagnostic.

Row fields (index constants F_*):
  name      short identifier used by the log, Modbus docs and the PC tool
  signal    which measured quantity it watches (SIG_*)
  kind      K_HIGH trips at value >= threshold, clears below recovery;
            K_LOW trips at value <= threshold, clears above recovery;
            K_FLAG trips when a diagnostic flag is set
  thr, rec  threshold / recovery specs, see ``spec_value``
  delay     set delay spec in ms (the condition must persist this long;
            an up/down counter, so noise around the threshold cannot trip it
            and a brief dip does not restart the wait)
  clear     clear delay spec in ms: the recovery condition must hold
            continuously this long before the fault clears
  policy    P_AUTO clears by itself; P_LATCH waits, after recovery, for a
            reset (the authenticated command; a K switch cycle only for
            latches below L_CRIT); P_RETRY clears by itself like P_AUTO but
            latches once it has tripped more than ``oc_retries`` times within
            ``oc_window`` seconds of the first trip of the series.  Latches
            are persisted (settings store) and restored at boot: a restart
            never clears one
  reaction  R_* bits: what the contactor logic must open or stop
  level     L_WARN (alarm only), L_PROT (protection), L_CRIT (level 2 /
            latched, loudest buzzer)

A spec is ``(p, mul, q, qmul, c)``: ``values[p]*mul + values[q]*qmul + c``
with -1 meaning "no parameter"; it converts the user's units to the core's
(mV, mA, 0.1 degC, ms) once per parameter change.
"""
from micropython import const

# Signals (computed each fast tick by Protection).
SIG_CELL_MAX = const(0)   # mV
SIG_CELL_MIN = const(1)   # mV
SIG_CELL_DIFF = const(2)  # mV
SIG_CHG_I = const(3)      # mA, charging part of the current
SIG_DSG_I = const(4)      # mA, discharging part of the current
SIG_T_POWER = const(5)    # 0.1 degC, hottest power-module sensor
SIG_T_BAL = const(6)      # 0.1 degC, hottest balance-module sensor
SIG_T_CELL_MAX = const(7)  # 0.1 degC
SIG_T_CELL_MIN = const(8)  # 0.1 degC
# Diagnostic flags (1/0), set by the core, drivers and comms.
SIG_T_SENSOR = const(9)    # a power or cell NTC is open/short/missing
SIG_BAL_SENSOR = const(10)  # a balance-module NTC is open/short/missing, or no temperatures for 3 s
SIG_CELL_STALE = const(11)  # cell data old, missing or a cell reading invalid
SIG_CUR_STALE = const(12)   # current data old or missing
SIG_PRECHARGE = const(13)   # precharge did not reach its voltage in time
SIG_INTERNAL = const(14)    # firmware exception in a control cycle
SIG_AFE = const(15)         # the AFE reported a hardware trip or fault
SIG_COMM = const(16)        # a slave module or the AFE stopped answering
SIG_LEASE = const(17)       # lease expired (discharge disabled)
SIG_RELAY = const(18)       # a relay commanded open still conducts, or its readback disagrees
SIG_CUR_PLAUS = const(19)   # the current reading disagrees with a second source
N_SIGNALS = const(20)
FIRST_FLAG = const(9)

K_HIGH = const(0)
K_LOW = const(1)
K_FLAG = const(2)

P_AUTO = const(0)
P_LATCH = const(1)
P_RETRY = const(2)

R_CHG = const(1)    # open the charge relay
R_DSG = const(2)    # open the discharge (and precharge) relay
R_L2 = const(4)     # open the level-2 protect relay (everything)
R_BAL = const(8)    # stop balancing
R_HEAT = const(16)  # heater off

L_WARN = const(1)
L_PROT = const(2)
L_CRIT = const(3)
LEVEL_NAMES = ("ok", "warning", "protection", "critical")

F_NAME = const(0)
F_SIGNAL = const(1)
F_KIND = const(2)
F_THR = const(3)
F_REC = const(4)
F_DELAY = const(5)
F_CLEAR = const(6)
F_POLICY = const(7)
F_REACTION = const(8)
F_LEVEL = const(9)

_N = const(-1)  # no parameter in a spec

# Parameter indices of bms.params (P_* there).  Literal copies, so every spec
# below is one compile-time constant that stays in flash when frozen (names
# imported from another module are not folded and would build TABLE on the
# heap); host_tests/test_const_tables.py checks them against bms.params.
_P_OV1 = const(3)
_P_OV2 = const(4)
_P_OV_REC = const(5)
_P_OV_DELAY = const(6)
_P_OV2_DELAY = const(7)
_P_UV1 = const(8)
_P_UV2 = const(9)
_P_UV_REC = const(10)
_P_UV_DELAY = const(11)
_P_UV2_DELAY = const(12)
_P_CHG_OC = const(13)
_P_CHG_OC_DELAY = const(14)
_P_DSG_OC = const(15)
_P_DSG_OC_DELAY = const(16)
_P_PEAK = const(17)
_P_PEAK_DELAY = const(18)
_P_SC = const(19)
_P_OC_RELEASE = const(20)
_P_T_POWER_OT = const(21)
_P_T_POWER_REC = const(22)
_P_T_BAL_OT = const(23)
_P_T_BAL_REC = const(24)
_P_T_CELL_OT = const(25)
_P_T_CELL_REC = const(26)
_P_T_CHG_OT = const(27)
_P_T_CHG_REC = const(28)
_P_LT_CHG = const(29)
_P_LT_CHG_REC = const(30)
_P_LT_DSG = const(31)
_P_LT_DSG_REC = const(32)
_P_DIFF_PROT = const(33)
_P_DIFF_REC = const(34)
_P_ALARM_MV = const(45)
_P_ALARM_C = const(46)
_P_CAPACITY = const(2)

# Specs used by several rows.
_ONE = const((_N, 0, _N, 0, 1))
_OC_RELEASE = const((_P_OC_RELEASE, 1000, _N, 0, 0))
_RECOVER = const((_N, 0, _N, 0, 1000))     # recovery must hold 1 s before a voltage fault clears
_T_DELAY = const((_N, 0, _N, 0, 2000))     # temperatures: 2 s debounce against NTC noise
_T_RECOVER = const((_N, 0, _N, 0, 5000))

# Fault ids: the row order of TABLE.
OV1 = const(0)
OV2 = const(1)
UV1 = const(2)
UV2 = const(3)
CHG_OC = const(4)
DSG_OC = const(5)
PEAK = const(6)
SHORT = const(7)
T_POWER = const(8)
T_BAL = const(9)
T_CELL = const(10)
T_CHG = const(11)
LT_CHG = const(12)
LT_DSG = const(13)
DIFF = const(14)
T_SENSOR = const(15)
BAL_SENSOR = const(16)
CELL_STALE = const(17)
CUR_STALE = const(18)
PRECHARGE = const(19)
INTERNAL = const(20)
AFE = const(21)
COMM = const(22)
LEASE = const(23)
OV_ALARM = const(24)
UV_ALARM = const(25)
OT_ALARM = const(26)
LT_ALARM = const(27)
CHG_OC_ALARM = const(28)
DSG_OC_ALARM = const(29)
RELAY_WELD = const(30)
CURRENT_SENSOR = const(31)
N_FAULTS = const(32)

# Faults with a way out of their latch (after an authenticated reset while
# the condition still holds): only the recovering direction may flow, at
# most RECOVERY_C_DIV of the capacity (capacity / 20 = 0.05 C), until the
# recovery voltage is reached.  The recovering reaction is the row's
# reaction without R_L2.
RECOVERY = (OV2, UV2)
RECOVERY_C_DIV = const(20)

TABLE = (
    # name, signal, kind,
    #  thr, rec,
    #  delay, clear,
    #  policy, reaction, level
    ("ov1", SIG_CELL_MAX, K_HIGH,
     (_P_OV1, 1, _N, 0, 0), (_P_OV_REC, 1, _N, 0, 0),
     (_P_OV_DELAY, 1, _N, 0, 0), _RECOVER,
     P_AUTO, R_CHG, L_PROT),
    ("ov2", SIG_CELL_MAX, K_HIGH,
     (_P_OV2, 1, _N, 0, 0), (_P_OV_REC, 1, _N, 0, 0),
     (_P_OV2_DELAY, 1, _N, 0, 0), _RECOVER,
     P_LATCH, R_CHG | R_L2, L_CRIT),
    ("uv1", SIG_CELL_MIN, K_LOW,
     (_P_UV1, 1, _N, 0, 0), (_P_UV_REC, 1, _N, 0, 0),
     (_P_UV_DELAY, 1, _N, 0, 0), _RECOVER,
     P_AUTO, R_DSG | R_BAL | R_HEAT, L_PROT),
    ("uv2", SIG_CELL_MIN, K_LOW,
     (_P_UV2, 1, _N, 0, 0), (_P_UV_REC, 1, _N, 0, 0),
     (_P_UV2_DELAY, 1, _N, 0, 0), _RECOVER,
     P_LATCH, R_DSG | R_L2 | R_BAL | R_HEAT, L_CRIT),
    ("chg_oc", SIG_CHG_I, K_HIGH,
     (_P_CHG_OC, 100, _N, 0, 0), (_P_CHG_OC, 100, _N, 0, 0),
     (_P_CHG_OC_DELAY, 1, _N, 0, 0), _OC_RELEASE,
     P_RETRY, R_CHG, L_PROT),
    ("dsg_oc", SIG_DSG_I, K_HIGH,
     (_P_DSG_OC, 100, _N, 0, 0), (_P_DSG_OC, 100, _N, 0, 0),
     (_P_DSG_OC_DELAY, 1, _N, 0, 0), _OC_RELEASE,
     P_RETRY, R_DSG, L_PROT),
    ("peak", SIG_DSG_I, K_HIGH,
     (_P_PEAK, 100, _N, 0, 0), (_P_DSG_OC, 100, _N, 0, 0),
     (_P_PEAK_DELAY, 1, _N, 0, 0), _OC_RELEASE,
     P_RETRY, R_DSG, L_PROT),
    ("short", SIG_DSG_I, K_HIGH,
     (_P_SC, 100, _N, 0, 0), (_P_DSG_OC, 100, _N, 0, 0),
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 1000),
     P_LATCH, R_DSG | R_CHG, L_CRIT),
    ("t_power", SIG_T_POWER, K_HIGH,
     (_P_T_POWER_OT, 10, _N, 0, 0), (_P_T_POWER_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_CHG | R_DSG | R_BAL, L_PROT),
    ("t_bal", SIG_T_BAL, K_HIGH,
     (_P_T_BAL_OT, 10, _N, 0, 0), (_P_T_BAL_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_BAL, L_PROT),
    ("t_cell", SIG_T_CELL_MAX, K_HIGH,
     (_P_T_CELL_OT, 10, _N, 0, 0), (_P_T_CELL_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_CHG | R_DSG | R_BAL | R_HEAT, L_PROT),
    ("t_chg", SIG_T_CELL_MAX, K_HIGH,
     (_P_T_CHG_OT, 10, _N, 0, 0), (_P_T_CHG_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_CHG, L_PROT),
    ("lt_chg", SIG_T_CELL_MIN, K_LOW,
     (_P_LT_CHG, 10, _N, 0, 0), (_P_LT_CHG_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_CHG, L_PROT),
    ("lt_dsg", SIG_T_CELL_MIN, K_LOW,
     (_P_LT_DSG, 10, _N, 0, 0), (_P_LT_DSG_REC, 10, _N, 0, 0),
     _T_DELAY, _T_RECOVER,
     P_AUTO, R_DSG, L_PROT),
    ("cell_diff", SIG_CELL_DIFF, K_HIGH,
     (_P_DIFF_PROT, 1, _N, 0, 0), (_P_DIFF_REC, 1, _N, 0, 0),
     (_N, 0, _N, 0, 5000), (_N, 0, _N, 0, 5000),
     P_AUTO, R_CHG | R_DSG, L_PROT),
    ("temp_sensor", SIG_T_SENSOR, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 1000), (_N, 0, _N, 0, 5000),
     P_AUTO, R_CHG | R_DSG, L_PROT),
    ("bal_sensor", SIG_BAL_SENSOR, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 1000), (_N, 0, _N, 0, 5000),
     P_AUTO, R_BAL, L_WARN),
    ("cell_stale", SIG_CELL_STALE, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 1000),
     P_AUTO, R_CHG | R_DSG | R_BAL, L_PROT),
    ("current_stale", SIG_CUR_STALE, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 1000),
     P_AUTO, R_CHG | R_DSG, L_PROT),
    ("precharge", SIG_PRECHARGE, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 0),
     P_LATCH, R_DSG, L_PROT),
    ("internal", SIG_INTERNAL, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 0),
     P_LATCH, R_CHG | R_DSG | R_L2 | R_BAL | R_HEAT, L_CRIT),
    ("afe", SIG_AFE, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 1000),
     P_LATCH, R_CHG | R_DSG, L_CRIT),
    ("comm", SIG_COMM, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 2000),
     P_AUTO, R_CHG | R_DSG | R_BAL, L_PROT),
    ("lease", SIG_LEASE, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 0), (_N, 0, _N, 0, 0),
     P_AUTO, R_DSG, L_PROT),
    ("ov_alarm", SIG_CELL_MAX, K_HIGH,
     (_P_OV1, 1, _P_ALARM_MV, -1, 0), (_P_OV1, 1, _P_ALARM_MV, -1, -20),
     (_N, 0, _N, 0, 2000), (_N, 0, _N, 0, 2000),
     P_AUTO, 0, L_WARN),
    ("uv_alarm", SIG_CELL_MIN, K_LOW,
     (_P_UV1, 1, _P_ALARM_MV, 1, 0), (_P_UV1, 1, _P_ALARM_MV, 1, 20),
     (_N, 0, _N, 0, 2000), (_N, 0, _N, 0, 2000),
     P_AUTO, 0, L_WARN),
    ("ot_alarm", SIG_T_CELL_MAX, K_HIGH,
     (_P_T_CELL_OT, 10, _P_ALARM_C, -10, 0), (_P_T_CELL_OT, 10, _P_ALARM_C, -10, -20),
     _T_DELAY, _T_RECOVER,
     P_AUTO, 0, L_WARN),
    ("lt_alarm", SIG_T_CELL_MIN, K_LOW,
     (_P_LT_CHG, 10, _P_ALARM_C, 10, 0), (_P_LT_CHG, 10, _P_ALARM_C, 10, 20),
     _T_DELAY, _T_RECOVER,
     P_AUTO, 0, L_WARN),
    ("chg_oc_alarm", SIG_CHG_I, K_HIGH,
     (_P_CHG_OC, 90, _N, 0, 0), (_P_CHG_OC, 85, _N, 0, 0),
     (_N, 0, _N, 0, 1000), (_N, 0, _N, 0, 2000),
     P_AUTO, 0, L_WARN),
    ("dsg_oc_alarm", SIG_DSG_I, K_HIGH,
     (_P_DSG_OC, 90, _N, 0, 0), (_P_DSG_OC, 85, _N, 0, 0),
     (_N, 0, _N, 0, 1000), (_N, 0, _N, 0, 2000),
     P_AUTO, 0, L_WARN),
    ("relay_weld", SIG_RELAY, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 500), (_N, 0, _N, 0, 1000),
     P_LATCH, R_CHG | R_DSG | R_L2 | R_HEAT, L_CRIT),
    ("current_sensor", SIG_CUR_PLAUS, K_FLAG,
     _ONE, _ONE,
     (_N, 0, _N, 0, 1000), (_N, 0, _N, 0, 5000),
     P_LATCH, R_CHG | R_DSG, L_PROT),
)


def spec_value(spec, values):
    p, mul, q, qmul, c = spec
    v = c
    if p >= 0:
        v += values[p] * mul
    if q >= 0:
        v += values[q] * qmul
    return v


def index(name):
    for i in range(N_FAULTS):
        if TABLE[i][F_NAME] == name:
            return i
    return -1
