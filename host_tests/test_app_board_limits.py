"""What the board can measure bounds the parameters, and a master with CAN
modules never loses its core (docs/safety.md "Parameters" and "Master with
CAN modules").

Rules under test, as documented:
* A parameter change the board cannot measure is refused and changes
  nothing: a module layout of more than 16 modules or a module outside
  3..16 cells on a master; fewer cells than a stacked board's two AFEs
  measure.
* Stored settings such a board cannot measure come back with their cell
  layout reset (reported), never a boot that fails.
* A current limit beyond the board's current range is refused the same way:
  ``short_circuit`` or ``chg_oc`` above the shunt monitor's full scale
  (163.84 mV / R; 1638.4 A on the default 100 uOhm shunt), where its
  reading clips; a stored set beyond it has the limit reset at boot, and a
  board whose shunt measures less than the table's defaults boots on
  defaults brought within its range.
* A master whose CAN controller does not answer at boot still runs its core
  on the modules (never on its own board, whose AFE does not measure the
  pack): the comm fault holds charge and discharge open and the PC port
  answers; the controller is restarted with back-off until it answers.
"""
import pytest

from test_app_wiring import Rig, crc_ok, read_regs, write_regs
from modbus_rig import ascii_regs

from bms import faults as F
from bms import params as P
from bms.params import P_CELL_COUNT, P_MODULE_CELLS, ParamSet
from bms.store import SettingsStore
from comms.registers import A_AUTH, A_PARAMS
from drivers.mcp2515 import MODE_NORMAL


class Modular:
    MODULES = True


def _unlock(rig):
    r = write_regs(rig, A_AUTH, ascii_regs(b"123456", 8))
    assert crc_ok(r) and r[1] == 16, r.hex()


def _write(rig, index, value):
    r = write_regs(rig, A_PARAMS + index, [value])
    assert crc_ok(r), r.hex()
    return r[1]


def _store(fs, **values):
    """Settings on the flash as an older or foreign firmware could have
    written them (no board rule applied)."""
    ps = ParamSet(1, max_cells=256)
    s = ps._scratch
    for i in range(len(s)):
        s[i] = ps.values[i]
    for name, v in values.items():
        s[P.index(name)] = v
    ps._commit(s)
    SettingsStore(fs).save_params(ps)


@pytest.mark.parametrize("cells,module_cells", [
    (255, 15),    # 17 modules
    (17, 16),     # the last module would have 1 cell
    (32, 2),      # modules of 2 cells (the BQ76952 measures 3..16)
])
def test_master_refuses_a_module_layout_it_cannot_configure(cells, module_cells):
    rig = Rig(cfg=Modular)
    rig.run(500)
    _unlock(rig)
    p = rig.app.bms.params
    before = (p[P_CELL_COUNT], p[P_MODULE_CELLS], p.version)
    # Either write alone may be fine; the pair must not land.
    fc1 = _write(rig, P_CELL_COUNT, cells)
    fc2 = _write(rig, P_MODULE_CELLS, module_cells)
    assert 0x90 in (fc1, fc2)                       # a Modbus exception for FC16
    assert (p[P_CELL_COUNT], p[P_MODULE_CELLS]) != (cells, module_cells)
    if fc1 == 0x90:
        assert (p[P_CELL_COUNT], p[P_MODULE_CELLS], p.version) == before


def test_master_accepts_every_layout_of_16_modules_or_fewer():
    rig = Rig(cfg=Modular)
    rig.run(200)
    _unlock(rig)
    p = rig.app.bms.params
    assert _write(rig, P_MODULE_CELLS, 12) == 16
    assert _write(rig, P_CELL_COUNT, 192) == 16     # 16 x 12
    assert _write(rig, P_CELL_COUNT, 183) == 16     # 15 x 12 + 3
    assert (p[P_CELL_COUNT], p[P_MODULE_CELLS]) == (183, 12)


def test_stored_layout_the_master_cannot_build_boots_with_the_layout_reset():
    first = Rig(cfg=Modular)
    _store(first.fs, cell_count=255, module_cells=15)
    rig = Rig(fs=first.fs, cfg=Modular)             # a restart on that flash
    app = rig.app
    assert app.failed == []
    p = app.bms.params
    assert p[P_MODULE_CELLS] == 16 and p[P_CELL_COUNT] == 255   # 16 modules of 16, 15
    report = app.parts["settings"].report
    assert any(r[0] == "module_cells" and r[3].startswith("rule") for r in report), report
    assert type(app.bms.board).__name__ == "MasterBoard"
    assert app.bms.meas.n_cells == 255


def test_master_whose_can_controller_is_dead_at_boot_runs_safe_and_restarts_it():
    first = Rig(cfg=Modular)
    _store(first.fs, cell_count=48)      # three modules: more than the local AFE's 16
    import drv_fakemachine as FM
    orig = FM.FakeMachine.__init__

    def dead_can(self, *a, **kw):
        orig(self, *a, **kw)
        self.can.dead = True             # MISO floats high: every read 0xFF
    FM.FakeMachine.__init__ = dead_can
    try:
        rig = Rig(fs=first.fs, cfg=Modular)
    finally:
        FM.FakeMachine.__init__ = orig
    app = rig.app
    bms = app.bms
    assert "can_modules" in app.failed                 # reported
    assert type(bms.board).__name__ == "MasterBoard"    # not the master's own board
    assert bms.meas.n_cells == 48
    rig.run(4000)
    assert bms.prot.active(F.COMM)
    st = bms.contactors.state
    assert st[0] == 0 and st[1] == 0 and st[2] == 0     # discharge, precharge, charge
    assert len(read_regs(rig, A_PARAMS, 4)) == 4       # the PC port answers
    guard = app.parts["can_modules"].master.guard
    assert guard.dead_count >= 1
    # The controller answers again: the guard's next restart configures it.
    rig.fm.can.dead = False
    rig.run(6000)                                       # longest back-off 5 s
    assert rig.fm.can.mode == MODE_NORMAL
    assert guard.restarts >= 1


def test_stacked_board_refuses_fewer_cells_than_its_two_afes_measure():
    rig = Rig(board="pico32", cells=[3300] * 20)
    rig.run(300)
    _unlock(rig)
    p = rig.app.bms.params
    n = p[P_CELL_COUNT]
    assert _write(rig, P_CELL_COUNT, 5) == 0x90      # 3 cells or more on each chip
    assert p[P_CELL_COUNT] == n
    assert _write(rig, P_CELL_COUNT, 6) == 16


def test_stored_cell_count_a_stacked_board_cannot_measure_is_reset_at_boot():
    first = Rig(board="pico32", cells=[3300] * 20)
    _store(first.fs, cell_count=4)
    rig = Rig(fs=first.fs, board="pico32", cells=[3300] * 20)
    assert rig.app.failed == []
    assert rig.app.bms.params[P_CELL_COUNT] == 16      # the LFP default


class SmallShunt:
    OPTS = {"shunt_uohm": 1000, "shunt_max_ma": 100000}   # 1 mOhm: 163.84 A full scale


def test_board_refuses_a_short_circuit_limit_beyond_its_shunts_range():
    rig = Rig()
    rig.run(300)
    _unlock(rig)
    p = rig.app.bms.params
    assert rig.app.hw["shunt"].full_ma == 1638400
    assert _write(rig, P.P_SC, 16390) == 0x90       # 1639 A: beyond 1638.4 A
    assert p[P.P_SC] == 6000
    assert _write(rig, P.P_SC, 16380) == 16         # 1638 A: within


def test_small_shunt_boots_on_defaults_within_its_range_and_refuses_beyond_it():
    rig = Rig(cfg=SmallShunt)
    assert rig.app.failed == []
    p = rig.app.bms.params
    # The table's 600 A short circuit (300 A peak, 150 A dsg_oc) scaled
    # into 163.84 A, their order kept; chg_oc 100 A already fits.
    assert (p[P.P_SC], p[P.P_PEAK], p[P.P_DSG_OC], p[P.P_CHG_OC]) == (1638, 819, 409, 1000)
    assert P.check(p.values, p.max_cells, p.board_rule) is None
    rig.run(300)
    _unlock(rig)
    assert _write(rig, P.P_CHG_OC, 1700) == 0x90    # 170 A charge: beyond
    assert p[P.P_CHG_OC] == 1000
    assert _write(rig, P.P_CHG_OC, 1600) == 16
    assert _write(rig, P.P_SC, 1639) == 0x90
    with pytest.raises(P.ParamError) as e:
        p.set(P.P_SC, 2000)
    assert "current range 163.8 A" in e.value.reason
    p.load_defaults(1)                              # Reset on the Normal page
    assert p[P.P_SC] == 1638


def test_stored_short_circuit_beyond_the_shunts_range_is_reset_at_boot():
    first = Rig()
    _store(first.fs, short_circuit=20000, peak=15000, dsg_oc=5000)
    rig = Rig(fs=first.fs)
    assert rig.app.failed == []
    p = rig.app.bms.params
    assert p[P.P_SC] == 6000
    report = rig.app.parts["settings"].report
    assert any(r[0] == "short_circuit" and r[3].startswith("rule") for r in report), report
