"""A master and its slave modules, each its own emulated RP2040 running its
own image (pico with MODULES = True, slave_module), on one simulated CAN
bus (the MCP2515 emulator on each chip's SPI).  The chips run in lockstep
slices of emulated time.

Two modules keep this to about a minute; the bench's 256S master uses the
slave firmware's Python build for its 16 modules instead (16 emulated chips
would take about 16x the wall time of one)."""
import pytest

from rp2_rig import uf2

import tools  # noqa: F401
from comms import can_ids as C
from tools.rp2emu.board import EmuBoard, VirtualCanBus
from tools.rp2emu.measure import set_params_modbus
from tools.rp2emu.repl import Repl
from tools.sim.pack import Pack

SLICE_MS = 2
MODULES = 2


class Rack:
    """Every chip on the bus, advanced together; the master's REPL waits
    through ``run_ms`` so the modules keep running meanwhile."""

    def __init__(self, master, slaves):
        self.boards = [master] + slaves
        self.chip = master.chip

    def run_ms(self, ms):
        for _ in range(int(ms) // SLICE_MS or 1):
            for b in self.boards:
                b.run_ms(SLICE_MS)


@pytest.fixture
def rack():
    pack = Pack("LFP", 16 * MODULES, 100.0, 0.5, seed=3)
    bus = VirtualCanBus(C.BITRATE)
    master = EmuBoard(uf2("pico"), pack, board="pico", can_bus=bus)
    slaves = [EmuBoard(uf2("slave_module"), pack, board="slave_module", can_bus=bus,
                       cells=(16 * k, 16), physics=False, module_addr=k + 1, seed=10 + k)
              for k in range(MODULES)]
    r = Rack(master, slaves)
    yield r, pack
    for b in r.boards:
        b.close()


@pytest.mark.timeout(900)   # minutes of emulation on a busy 2-core machine
def test_master_reads_every_module_chip_over_can(rack):
    r, pack = rack
    repl = Repl(r)
    r.run_ms(2500)
    repl.enter()
    repl.exec("f = open('/config.py', 'w')\nf.write('MODULES = True\\n')\nf.close()")
    repl.soft_reset()
    r.run_ms(2500)
    set_params_modbus(r, r.boards[0], {"cell_count": 16 * MODULES})
    repl.enter()
    repl.soft_reset()
    r.run_ms(6000)
    repl.enter()
    failed, n, cells, mods = repl.eval(
        "(lambda a: (a.failed, a.bms.meas.n_cells, list(a.bms.meas.cell_mv[:a.bms.meas.n_cells]),"
        " a.bms.board.master.n_modules))(__import__('app').APP)")
    assert failed == []
    assert mods == MODULES
    assert n == 16 * MODULES
    truth = [v * 1000.0 for v in pack.cell_voltages()]
    # Each module's BQ76952 (1 mV, +-1 mV emulator noise), over CAN to the master.
    assert all(abs(cells[i] - truth[i]) <= 2.5 for i in range(n)), (cells, truth)
