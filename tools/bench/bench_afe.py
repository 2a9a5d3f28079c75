"""AFE figures: bus bytes and wire time per full cell read (from the
emulators' frame logs), and driver-only CPU time and allocation per read under
the MicroPython unix port (host CPU, so only relative)."""
from array import array

from tools.bench.common import Row, parse_kv

AREA = "afe"


def _bq_wire(crc):
    from drivers.bq76952 import BQ76952
    from tools.sim.emu_bq76952 import EmuBQ76952, StaticSource
    emu = EmuBQ76952(StaticSource([3300] * 16), crc=crc)
    drv = BQ76952(emu, crc=crc, cells=16)
    emu.log = []
    drv.read_cells(array("H", [0] * 16), 16)
    n = 0
    for op, _reg, data in emu.log:
        n += len(data) + (3 if op == "r" else 2)  # address(es) and register byte
    return n


def _ltc_wire(chips):
    from drivers.ltc681x import LTC681x
    from tools.sim.emu_bq76952 import StaticSource
    from tools.sim.emu_ltc681x import EmuLTC681x
    emu = EmuLTC681x(StaticSource([3300] * (18 * chips)), chips=chips, model=6813)
    drv = LTC681x(emu.spi, emu.cs, chips=chips, model=6813)
    drv.configure({"cells": 18 * chips})
    emu.log = []
    drv.read_cells(array("H", [0] * (18 * chips)), 18 * chips)
    return sum(len(f[1]) for f in emu.log)


def run(ctx):
    rows = []
    for crc in (False, True):
        n = _bq_wire(crc)
        rows.append(Row(AREA, "bq76952 16-cell read%s" % (" crc" if crc else ""), n, "bytes",
                        "", "%.2f ms at 400 kHz I2C" % (n * 9 / 400.0)))
    n = _ltc_wire(14)
    rows.append(Row(AREA, "ltc6813 x14 (252 cells) read", n, "bytes", "",
                    "%.2f ms at 1 MHz SPI + ~3 ms conversion" % (n * 8 / 1000.0)))
    if ctx.micropython:
        kv = parse_kv(ctx.upy("tools/bench/upy/afe_cost.py"))
        rows.append(Row(AREA, "bq76952 read_cells cpu (unix port)", kv.get("bq_read_cells_us"), "us"))
        rows.append(Row(AREA, "bq76952 read_cells alloc", kv.get("bq_alloc_bytes"), "bytes", "0"))
        rows.append(Row(AREA, "ltc6813 x14 read_cells cpu (unix port)", kv.get("ltc_read_cells_us"), "us"))
        rows.append(Row(AREA, "ltc6813 x14 read_cells alloc", kv.get("ltc_alloc_bytes"), "bytes", "0"))
    return rows
