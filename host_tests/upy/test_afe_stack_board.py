# The pico32 board (two stacked BQ76952, the top one on I2C1) built by the real
# board file and app.build on a fake machine whose I2C0/I2C1 lead to two
# byte-level chip emulators; the core protects a 24S pack through both.
from drv_helpers import run_app as _run
from drv_fakemachine import FakeMachine

from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2
from bms.params import CHEM_LFP, P_CELL_COUNT, ParamSet
from bms.ticks import VirtualClock

import app as main

LFP24 = [3290 + i for i in range(24)]


def _boot(cells=LFP24, n0=16, count=24):
    fm = FakeMachine(cells[:n0], top_mv=cells[n0:])
    clock = VirtualClock(0)
    params = ParamSet(CHEM_LFP, max_cells=32)
    params.set(P_CELL_COUNT, count)
    app = main.build("pico32", machine=fm, clock=clock, params=params)
    return fm, clock, app


def _active(bms, name):
    i = F.index(name)
    assert i >= 0, name
    return bms.prot.active(i)


def test_pico32_boots_24s_on_two_chips():
    fm, clock, app = _boot()
    assert ("I2C", 0, 4, 5, 400000) in fm.created
    assert ("I2C", 1, 6, 7, 400000) in fm.created       # top chip: I2C1 GP6/GP7
    board = app.hw["board"]
    assert board.max_cells == 32 and app.bms.params.max_cells == 32
    assert app.failed == []                              # every part built (modbus, ttl, ...)
    _run(app, clock, 3000)
    b = app.bms
    assert b.running and b.exceptions == 0 and b.bus_errors == 0
    assert list(b.meas.cell_mv[:24]) == LFP24
    assert fm.bq.dm_get(0x9304, "<H") == 0xFFFF and fm.bq_top.dm_get(0x9304, "<H") == 0x807F
    st = b.contactors.state
    assert st[RELAY_L2] and st[RELAY_DSG] and st[RELAY_CHG]
    assert fm.pin(10).v == 1 and fm.pin(12).v == 1
    # both dies are balance temperatures (the bleed FETs are inside each chip)
    assert len(board.temp_roles) == 5


def test_pico32_overvoltage_on_cell_20_opens_the_charge_relay():
    fm, clock, app = _boot()
    _run(app, clock, 3000)
    assert fm.pin(12).v == 1
    fm.bq_top.source.cells[3] = 3700            # cell 20 = the top chip's 4th cell
    _run(app, clock, 7000)                       # LFP ov1 3650 mV, 5 s delay
    b = app.bms
    assert b.meas.cell_mv[19] == 3700 and b.meas.max_idx == 19
    assert _active(b, "ov1")
    assert fm.pin(12).v == 0                     # charge relay J3 open
    assert fm.pin(10).v == 1                     # discharge stays
    assert b.exceptions == 0


def test_pico32_dead_top_chip_opens_relays_then_recovers():
    fm, clock, app = _boot()
    _run(app, clock, 3000)
    assert fm.pin(10).v == 1
    fm.bq_top.dead = True                        # isolated bus or top chip gone
    _run(app, clock, 3000)
    b = app.bms
    assert b.exceptions == 0 and b.bus_errors > 0
    assert _active(b, "cell_stale")
    assert fm.pin(10).v == 0 and fm.pin(12).v == 0   # discharge and charge open
    fm.bq_top.dead = False
    _run(app, clock, 5000)
    assert not _active(b, "cell_stale")
    assert list(b.meas.cell_mv[:24]) == LFP24


def test_pico32_cell_count_change_reconfigures_both_chips():
    cells = [3290 + i for i in range(24)]
    fm, clock, app = _boot(cells)
    _run(app, clock, 2000)
    # The user rewires to 21S (top chip inputs 6..16 to the pack positive)
    # and sets cell_count: the top chip now runs VC1..VC4 + VC16.
    fm.bq_top.source.cells = cells[16:21]
    app.bms.params.set(P_CELL_COUNT, 21)
    _run(app, clock, 3000)
    assert fm.bq_top.dm_get(0x9304, "<H") == 0x800F
    assert fm.bq.dm_get(0x9304, "<H") == 0xFFFF
    assert list(app.bms.meas.cell_mv[:21]) == cells[:21]
    assert app.bms.exceptions == 0 and app.bms.running


def test_pico32_too_few_cells_is_a_safe_state_not_a_crash():
    fm, clock, app = _boot(count=5)              # two chips need 3 cells each
    board = app.hw["board"]
    assert not board.afe_ok and board.init_errors >= 1
    _run(app, clock, 3000)
    b = app.bms
    assert b.exceptions == 0 and not b.running
    assert fm.pin(10).v == 0 and fm.pin(12).v == 0
    b.params.set(P_CELL_COUNT, 24)
    _run(app, clock, 3000)
    assert b.running and board.afe_ok and list(b.meas.cell_mv[:24]) == LFP24
