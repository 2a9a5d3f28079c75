# The chip emulators fed by the physical pack model (CPython: pack.py uses
# bisect/random), read through the real drivers.
from array import array

from drivers import afe
from drivers.bq76952 import BQ76952
from drivers.ltc681x import LTC681x
from tools.sim.emu_bq76952 import EmuBQ76952, PackSource
from tools.sim.emu_ltc681x import EmuLTC681x
from tools.sim.pack import Pack
from tools.sim.vclock import UsClock


def test_bq76952_reads_pack_and_trips_on_short():
    pack = Pack("LFP", cells=16, soc=0.5, soc_spread=0.05, seed=3)
    pack.relays = [1, 0, 1, 1, 0]
    clk = UsClock()
    emu = EmuBQ76952(PackSource(pack), crc=True, shunt_uohm=100, clock=clk)
    drv = BQ76952(emu, crc=True, cells=16, wait_us=clk.sleep_us)
    drv.configure({"cells": 16, "shunt_uohm": 100, "scd_ma": 600000, "cov_mv": 3800,
                   "cuv_mv": 2200})
    drv.set_switches(True, True)
    mv = array("H", [0] * 16)
    drv.read_cells(mv, 16)
    truth = pack.cell_voltages()
    for i in range(16):
        assert abs(mv[i] - truth[i] * 1000.0) <= 1.0
    pack.load_a = 50.0
    pack.step(0.1)
    assert abs(drv.read_current() + 50000) <= 10
    pack.short = True
    pack.step(0.001)
    assert drv.fault() & afe.FAULT_SCD
    assert not emu.dsg_fet
    # Recovery after Protections:SCD:Recovery Time once the short is gone.
    pack.short = False
    pack.load_a = 0.0
    pack.step(0.001)
    emu.advance(6000)
    assert drv.fault() == 0 and emu.dsg_fet


def test_bq76952_balancing_bleeds_pack_cells():
    pack = Pack("NMC", cells=8, seed=4)
    clk = UsClock()
    emu = EmuBQ76952(PackSource(pack), clock=clk)
    drv = BQ76952(emu, cells=8, wait_us=clk.sleep_us)
    drv.configure({"cells": 8, "shunt_uohm": 100})
    flags = bytearray(8)
    flags[1] = flags[7] = 1
    drv.balance(flags)
    assert pack.cells[1].bleed_a > 0 and pack.cells[7].bleed_a > 0 and pack.cells[2].bleed_a == 0


def test_ltc_chain_reads_32_cell_pack_with_open_wire_flag():
    pack = Pack("NMC", cells=32, soc=0.6, soc_spread=0.05, seed=5)
    src = PackSource(pack)
    clk = UsClock()
    emu = EmuLTC681x(src, chips=4, model=6811, cells_per_chip=8, clock=clk)
    drv = LTC681x(emu.spi, emu.cs, chips=4, wait_us=clk.sleep_us, ticks_ms=clk.ticks_ms)
    drv.configure({"cells": 32})
    mv = array("H", [0] * 32)
    drv.read_cells(mv, 32)
    truth = pack.cell_voltages()
    for i in range(32):
        assert abs(mv[i] - truth[i] * 1000.0) <= 1.0
    emu.open_wire = {(2, 3)}
    assert drv.open_wire_check() == 1 << (2 * 13 + 3)
