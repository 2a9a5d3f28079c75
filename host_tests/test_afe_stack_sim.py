# The firmware core on the stacked ChipBoard (pack > 16 cells): two byte-level
# BQ76952 emulators fed by the pack model behind drivers.afe_stack, as
# `make sim ARGS="--cells 24"` runs it.  CPython only (pack.py).
import pytest

from bms.contactors import RELAY_CHG, RELAY_DSG
from tools.sim import __main__ as simmain
from tools.sim.chipboard import ChipBoard
from tools.sim.simulator import Simulation


def _sim(cells):
    return Simulation("LFP", cells=cells, soc=0.5, seed=4,
                      board_factory=lambda pack: ChipBoard(pack, seed=5))


@pytest.mark.parametrize("cells,n0", [(24, 16), (31, 16), (17, 14)])
def test_stacked_chipboard_reads_every_cell_in_order(cells, n0):
    sim = _sim(cells)
    board = sim.board
    assert board.emu_top is not None and board.max_cells == cells
    sim.pack.load_a = 20.0
    sim.run(4)
    assert len(board.emu_afe.vcell_channels()) == n0     # configured by the driver
    assert len(board.emu_top.vcell_channels()) == cells - n0
    b = sim.bms
    assert b.running and b.exceptions == 0 and sim.active_faults() == []
    truth = sim.pack.cell_voltages()
    for i in range(cells):
        assert abs(b.meas.cell_mv[i] - truth[i] * 1000.0) <= 3
    assert abs(b.meas.pack_mv - sum(truth) * 1000.0) <= 10 * 2 + 3 * cells
    assert sim.board.i2c_top.transactions > 10


def test_stacked_chipboard_dead_top_chip_opens_relays():
    sim = _sim(24)
    sim.run(4)
    assert sim.pack.relays[RELAY_DSG] == 1
    sim.board.top_dead = True
    sim.run(3)
    assert "cell_stale" in sim.active_faults() and sim.bms.exceptions == 0
    assert sim.pack.relays[RELAY_DSG] == 0 and sim.pack.relays[RELAY_CHG] == 0
    sim.board.top_dead = False
    sim.run(5)
    assert "cell_stale" not in sim.active_faults()


def test_make_sim_chip_board_runs_24_cells(tmp_path):
    # No shared /tmp links and no state folder under build/: a test leaves nothing behind.
    args = ["--board", "chip", "--cells", "24", "--seconds", "3", "--speed", "1000",
            "--no-pc-link", "--no-ttl-link", "--flash", str(tmp_path)]
    assert simmain.main(args) == 0
    with pytest.raises(SystemExit):
        simmain.main(["--board", "chip", "--cells", "33", "--seconds", "1", "--no-pc-link",
                      "--no-ttl-link", "--flash", str(tmp_path)])


def test_top_chip_hardware_overvoltage_backstop_opens_relays():
    from bms.params import ParamSet
    holder = {}

    def fac(pack):
        holder["b"] = ChipBoard(pack, seed=5, params=ParamSet(1, max_cells=32))
        return holder["b"]

    sim = Simulation("LFP", cells=24, soc=0.5, seed=4, board_factory=fac)
    sim.run(4)
    b = holder["b"]
    assert sim.active_faults() == [] and sim.pack.relays[RELAY_DSG] == 1
    # Enabled Protections A: bottom SCD|OCD1|OCC|COV|CUV, top COV|CUV only.
    assert b.emu_afe.dm_get(0x9261, "<B") == 0xBC and b.emu_top.dm_get(0x9261, "<B") == 0x0C
    src = b.emu_top.source
    real = src.cell_mv
    src.cell_mv = lambda i: 3900 if i == 5 else real(i)   # cell 22 above the chip's COV
    sim.run(1)
    assert b.hw.afe_fault() & 0x008                       # FAULT_OV, from the top chip
    assert "afe" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0 and sim.pack.relays[RELAY_CHG] == 0


def test_an_open_sense_wire_on_the_top_chip_opens_the_charge_path():
    # docs/safety.md, open sense wire (BQ76952): the top chip runs the cell
    # open-wire check too (its own configure), without a hardware backstop
    # in this rig: the firmware's own cell checks open the charge path.
    sim = _sim(24)
    sim.pack.charger_a = 10.0
    sim.run(4)
    assert sim.pack.relays[RELAY_CHG] == 1 and sim.active_faults() == []
    sim.board.emu_top.open_tap(3)      # between cells 19 and 20
    assert sim.run_until(lambda s: s.pack.relays[RELAY_CHG] == 0, 8.0)
    sim.run(10)
    assert sim.pack.relays[RELAY_CHG] == 0 and "cell_stale" in sim.active_faults()
