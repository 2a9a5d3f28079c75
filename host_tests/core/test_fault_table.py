# One test per row of the fault table, on the value-level board.
#
# Each case provokes the fault's condition, then checks that
#   * the fault does not set before its delay,
#   * the outputs its reaction names are in the safe state no later than
#     delay + one cell sweep + one fast tick (the detection latency),
#   * outputs it does not name stay as they were,
#   * in the hysteresis band (past recovery for the value, but not past the
#     recovery threshold) it stays active,
#   * it recovers only per its rule: auto faults after their clear delay,
#     latched faults only after a reset command.
# MicroPython-compatible: runs under pytest and the unix port.
from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2
from bms.core import CELL_MS, CMD_RESET_FAULTS, FAST_MS
from bms.measurements import T_OPEN
from bms.watchdog import EXC_QUIET_MS
from harness import Rig

STEP = 10
LATENCY = CELL_MS + FAST_MS + STEP


def _cells(r, mv):
    for i in range(len(r.board.cells)):
        r.board.cells[i] = mv


def _temps(r, idx, dc):
    for i in idx:
        r.board.temps[i] = dc


def _pv(r, name):
    from bms import params as P
    return r.params[P.index(name)]


# name: (provoke, hold-in-band or None, restore, extra-latency-ms)
def _ov1(r):
    r.board.cells[5] = _pv(r, "ov1") + 10


def _ov1_band(r):
    r.board.cells[5] = _pv(r, "ov_rec") + 10


def _ov1_ok(r):
    r.board.cells[5] = _pv(r, "ov_rec") - 20


def _ov2(r):
    r.board.cells[5] = _pv(r, "ov2") + 10


def _uv_base(r):
    # Keep the others close so the cell-difference fault stays out of it.
    _cells(r, _pv(r, "uv_rec") + 100)


def _uv1(r):
    _uv_base(r)
    r.board.cells[7] = _pv(r, "uv1") - 10


def _uv1_band(r):
    r.board.cells[7] = _pv(r, "uv_rec") - 10


def _uv1_ok(r):
    _cells(r, 3300)


def _uv2(r):
    _uv_base(r)
    r.board.cells[7] = _pv(r, "uv2") - 10


def _chg_oc(r):
    r.board.current_ma = _pv(r, "chg_oc") * 100 + 500


def _dsg_oc(r):
    r.board.current_ma = -(_pv(r, "dsg_oc") * 100 + 500)


def _peak(r):
    r.board.current_ma = -(_pv(r, "peak") * 100 + 500)


def _short(r):
    r.board.current_ma = -(_pv(r, "short_circuit") * 100 + 500)


def _i_zero(r):
    r.board.current_ma = 0


def _t(idx, name, mul=10, off=10):
    def f(r):
        _temps(r, idx, _pv(r, name) * mul + off)
    return f


def _t_ok(r):
    _temps(r, (0, 1, 2, 3), 250)


def _diff(r):
    _cells(r, 3400)
    r.board.cells[3] = 3400 - _pv(r, "diff_prot") - 20


def _diff_band(r):
    r.board.cells[3] = 3400 - _pv(r, "diff_rec") - 20


def _diff_ok(r):
    _cells(r, 3400)


def _ntc_open(idx):
    def f(r):
        r.board.temp_status[idx] = T_OPEN
    return f


def _ntc_ok(r):
    for i in range(len(r.board.temp_status)):
        r.board.temp_status[i] = 0


def _cells_dead(r):
    r.board.fail_cells = 1000000


def _cells_back(r):
    r.board.fail_cells = 0


def _cur_dead(r):
    r.board.fail_current = 1000000


def _cur_back(r):
    r.board.fail_current = 0


def _pre_stuck(r):
    r.board.load_mv = 0
    r.bms.request(CMD_RESET_FAULTS)  # irrelevant; the relay cycle below starts precharge
    r.params.set(r.params_index("dsg_switch"), 0)
    r.run(200)
    r.params.set(r.params_index("dsg_switch"), 1)


def _pre_ok(r):
    r.board.load_mv = None


def _crash(r):
    r.board.crash = True


def _no_crash(r):
    r.board.crash = False


def _afe(r):
    r.board.afe = 1


def _afe_ok(r):
    r.board.afe = 0


def _flag(sig, on):
    def f(r):
        r.bms.prot.set_flag(sig, on)
    return f


def _nop(r):
    pass




def _alarm_t(name, sign):
    # A value inside the alarm margin, short of the protection threshold.
    def f(r):
        _temps(r, (2,), _pv(r, name) * 10 + sign * (_pv(r, "alarm_margin_c") * 10 - 5))
    return f


def _alarm_cells(name, sign):
    def f(r):
        _cells(r, _pv(r, name) + sign * (_pv(r, "alarm_margin_mv") - 5))
    return f


def _alarm_i(name, sign):
    def f(r):
        r.board.current_ma = sign * _pv(r, name) * 92
    return f


def _cells_ok(r):
    _cells(r, 3300)


def _weld(r):
    # The charge relay is told to open (manual switch) but its contacts are
    # welded: charge current keeps flowing.
    r.board.weld = 1 << RELAY_CHG
    r.board.current_ma = 10000
    r.params.set(r.params_index("chg_switch"), 0)


def _weld_ok(r):
    r.board.weld = 0
    r.board.current_ma = 0
    r.params.set(r.params_index("chg_switch"), 1)


def _cur2_off(r):
    r.board.current2 = 20000  # the AFE's counter says 20 A, the shunt 0 A


def _cur2_ok(r):
    r.board.current2 = 0   # agrees again (no reading at all would hold the verdict)


CASES = (
    ("ov1", _ov1, _ov1_band, _ov1_ok),
    ("ov2", _ov2, _ov1_band, _ov1_ok),
    ("uv1", _uv1, _uv1_band, _uv1_ok),
    ("uv2", _uv2, _uv1_band, _uv1_ok),
    ("chg_oc", _chg_oc, None, _i_zero),
    ("dsg_oc", _dsg_oc, None, _i_zero),
    ("peak", _peak, None, _i_zero),
    ("short", _short, None, _i_zero),
    ("t_power", _t((0,), "t_power_ot"), _t((0,), "t_power_rec"), _t_ok),
    ("t_bal", _t((1,), "t_bal_ot"), _t((1,), "t_bal_rec"), _t_ok),
    ("t_cell", _t((2,), "t_cell_ot"), _t((2,), "t_cell_rec"), _t_ok),
    ("t_chg", _t((3,), "t_chg_ot"), _t((3,), "t_chg_rec"), _t_ok),
    ("lt_chg", _t((2, 3), "lt_chg", 10, -10), _t((2, 3), "lt_chg_rec", 10, -10), _t_ok),
    ("lt_dsg", _t((2, 3), "lt_dsg", 10, -10), _t((2, 3), "lt_dsg_rec", 10, -10), _t_ok),
    ("cell_diff", _diff, _diff_band, _diff_ok),
    ("temp_sensor", _ntc_open(2), None, _ntc_ok),
    ("bal_sensor", _ntc_open(1), None, _ntc_ok),
    ("cell_stale", _cells_dead, None, _cells_back),
    ("current_stale", _cur_dead, None, _cur_back),
    ("precharge", _pre_stuck, None, _pre_ok),
    ("internal", _crash, None, _no_crash),
    ("afe", _afe, None, _afe_ok),
    ("comm", _flag(F.SIG_COMM, True), None, _flag(F.SIG_COMM, False)),
    ("lease", _flag(F.SIG_LEASE, True), None, _flag(F.SIG_LEASE, False)),
    ("ov_alarm", _alarm_cells("ov1", -1), None, _cells_ok),
    ("uv_alarm", _alarm_cells("uv1", 1), None, _cells_ok),
    ("ot_alarm", _alarm_t("t_cell_ot", -1), None, _t_ok),
    ("lt_alarm", _alarm_t("lt_chg", 1), None, _t_ok),
    ("chg_oc_alarm", _alarm_i("chg_oc", 1), None, _i_zero),
    ("dsg_oc_alarm", _alarm_i("dsg_oc", -1), None, _i_zero),
    ("relay_weld", _weld, None, _weld_ok),
    ("current_sensor", _cur2_off, None, _cur2_ok),
)

# Where the time starts to count from for faults whose delay is a property
# of the core rather than a parameter.
EXTRA_DELAY = {"cell_stale": 1500, "current_stale": 500, "precharge": 3000}


def _safe(r, reaction):
    """True when every output the reaction names is in its safe state."""
    s = r.bms.contactors.state
    if reaction & F.R_L2 and s[RELAY_L2]:
        return False
    if reaction & F.R_CHG and s[RELAY_CHG]:
        return False
    if reaction & F.R_DSG and s[RELAY_DSG]:
        return False
    if reaction & F.R_BAL:
        for b in r.board.balance:
            if b:
                return False
    return True


def _check(name, provoke, band, restore):
    fid = F.index(name)
    assert fid >= 0, name
    row = F.TABLE[fid]
    r = Rig()
    r.params_index = _params_index
    # Balancing on at rest so R_BAL has something to stop.
    _cells(r, 3450)
    r.board.cells[0] = 3420
    r.run(3000)
    _cells(r, 3300)
    r.run(1500)
    assert r.bms.running
    assert not r.bms.prot.active(fid), name
    s0 = bytearray(r.bms.contactors.state)
    assert s0[RELAY_CHG] and s0[RELAY_DSG] and s0[RELAY_L2], (name, list(s0))
    reaction = row[F.F_REACTION]
    delay = F.spec_value(row[F.F_DELAY], r.params.values) + EXTRA_DELAY.get(name, 0)

    provoke(r)
    t_set = r.run_until(lambda: r.bms.prot.active(fid), delay + LATENCY + 500)
    assert t_set >= 0, (name, "never set")
    assert t_set >= delay - STEP, (name, "set early", t_set, delay)
    assert t_set <= delay + LATENCY, (name, "set late", t_set, delay)
    assert _safe(r, reaction), (name, list(r.bms.contactors.state))
    # Outputs no active fault names stay closed (alarms open nothing).
    s = r.bms.contactors.state
    r.run(FAST_MS)
    block = r.bms.prot.reaction
    if not block & (F.R_CHG | F.R_L2):
        assert s[RELAY_CHG], name
    if not block & (F.R_DSG | F.R_L2) and name != "precharge":
        assert s[RELAY_DSG], name
    if not block & F.R_L2:
        assert s[RELAY_L2], name
    if row[F.F_LEVEL] >= F.L_PROT:
        assert r.bms.prot.level >= F.L_PROT
    assert r.log.find(1, fid), name  # EV_FAULT_SET logged

    clear = F.spec_value(row[F.F_CLEAR], r.params.values)
    if band is not None:
        band(r)
        r.run(clear + 3000)
        assert r.bms.prot.active(fid), (name, "cleared inside the hysteresis band")
    restore(r)
    if row[F.F_POLICY] == F.P_LATCH:
        # (at least EXC_QUIET_MS: a reset does not clear `internal` while
        # exceptions are still coming)
        r.run(clear + EXC_QUIET_MS)
        assert r.bms.prot.active(fid), (name, "latched fault cleared by itself")
        assert _safe(r, reaction), name
        r.bms.request(CMD_RESET_FAULTS)
        r.run(100)
    t_clr = r.run_until(lambda: not r.bms.prot.active(fid), clear + LATENCY + 2000)
    assert t_clr >= 0, (name, "never recovered")
    if row[F.F_POLICY] == F.P_AUTO and band is None:
        assert t_clr >= clear - LATENCY, (name, "recovered early", t_clr, clear)
    r.run(4000)
    s = r.bms.contactors.state
    assert s[RELAY_CHG] and s[RELAY_DSG] and s[RELAY_L2], (name, "no reclose", list(s))


def _params_index(name):
    from bms import params as P
    return P.index(name)


def _make(case):
    def t():
        _check(case[0], case[1], case[2], case[3])
    return t


TESTS = []
for _case in CASES:
    TESTS.append(("test_fault_" + _case[0], _make(_case)))
    globals()["test_fault_" + _case[0]] = TESTS[-1][1]


def test_every_fault_has_a_case():
    names = [c[0] for c in CASES]
    for i in range(F.N_FAULTS):
        assert F.TABLE[i][F.F_NAME] in names, F.TABLE[i][F.F_NAME]
