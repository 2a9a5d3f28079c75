"""AFE figures: bus bytes, wire time and the waits the data sheets require
per operation (from the emulators' frame logs and the virtual clock the
drivers wait on), and driver-only CPU time and allocation per read under the
MicroPython unix port (host CPU, so only relative)."""
from array import array

from tools.bench.common import Row, parse_kv

AREA = "afe"
CONF = {"cells": 16, "shunt_uohm": 100, "cov_mv": 3700, "cuv_mv": 2450, "occ_ma": 125000,
        "ocd1_ma": 375000, "scd_ma": 650000}


def _i2c_bytes(log):
    n = 0
    for op, _reg, data in log:
        n += len(data) + (3 if op == "r" else 2)  # address(es) and register byte
    return n


def _bq(crc):
    from drivers.bq76952 import BQ76952
    from tools.sim.emu_bq76952 import EmuBQ76952, StaticSource
    from tools.sim.vclock import UsClock
    clk = UsClock()
    emu = EmuBQ76952(StaticSource([3300] * 16), crc=crc, shunt_uohm=100, clock=clk)
    drv = BQ76952(emu, crc=crc, cells=16, wait_us=clk.sleep_us)
    return emu, drv, clk


def _bq_op(crc, op):
    """(bus bytes, waited us) of one driver operation."""
    emu, drv, clk = _bq(crc)
    if op != "configure":
        drv.configure(CONF)
    emu.log = []
    t0 = clk.slept_us
    if op == "read":
        drv.read_cells(array("H", [0] * 16), 16)
    elif op == "configure":
        drv.configure(CONF)
    elif op == "balance":
        f = bytearray(16)
        f[0] = f[2] = 1
        drv.balance(f)
    elif op == "switches":
        drv.set_switches(True, True)
    return _i2c_bytes(emu.log), clk.slept_us - t0


def _ltc(chips, sleep_first):
    from drivers.ltc681x import LTC681x
    from tools.sim.emu_bq76952 import StaticSource
    from tools.sim.emu_ltc681x import EmuLTC681x
    from tools.sim.vclock import UsClock
    clk = UsClock()
    emu = EmuLTC681x(StaticSource([3300] * (18 * chips)), chips=chips, model=6813, clock=clk)
    drv = LTC681x(emu.spi, emu.cs, chips=chips, model=6813, wait_us=clk.sleep_us,
                  ticks_ms=clk.ticks_ms)
    drv.configure({"cells": 18 * chips})
    if sleep_first:
        clk.advance_ms(3000)  # idle: the watchdog has put the chain to sleep
    emu.log = []
    t0 = clk.slept_us
    drv.read_cells(array("H", [0] * (18 * chips)), 18 * chips)
    return sum(len(f[1]) for f in emu.log), clk.slept_us - t0


def _ltc_open_wire(chips):
    from drivers.ltc681x import LTC681x
    from tools.sim.emu_bq76952 import StaticSource
    from tools.sim.emu_ltc681x import EmuLTC681x
    from tools.sim.vclock import UsClock
    clk = UsClock()
    emu = EmuLTC681x(StaticSource([3300] * (12 * chips)), chips=chips, model=6811, clock=clk)
    drv = LTC681x(emu.spi, emu.cs, chips=chips, wait_us=clk.sleep_us, ticks_ms=clk.ticks_ms)
    drv.configure({"cells": 12 * chips})
    emu.log = []
    t0 = clk.slept_us
    drv.open_wire_check()
    return sum(len(f[1]) for f in emu.log), clk.slept_us - t0


def _note_i2c(n, wait_us):
    return "%.2f ms at 400 kHz I2C + %.2f ms data-sheet waits" % (n * 9 / 400.0, wait_us / 1000.0)


def run(ctx):
    rows = []
    for crc in (False, True):
        n, w = _bq_op(crc, "read")
        rows.append(Row(AREA, "bq76952 16-cell read%s" % (" crc" if crc else ""), n, "bytes",
                        "", _note_i2c(n, w)))
    for op, what in (("configure", "configure (backstop, read back)"),
                     ("balance", "balance (CB_ACTIVE_CELLS)"),
                     ("switches", "set_switches both on")):
        n, w = _bq_op(True, op)
        rows.append(Row(AREA, "bq76952 crc %s" % what, n, "bytes", "", _note_i2c(n, w)))
    for sleep_first, what in ((False, "read"), (True, "read after 3 s idle (chain asleep)")):
        n, w = _ltc(14, sleep_first)
        rows.append(Row(AREA, "ltc6813 x14 (252 cells) %s" % what, n, "bytes", "",
                        "%.2f ms at 1 MHz SPI + %.2f ms waits (wake-up, conversion)"
                        % (n * 8 / 1000.0, w / 1000.0)))
    n, w = _ltc_open_wire(4)
    rows.append(Row(AREA, "ltc6811 x4 open-wire check (filtered)", n, "bytes", "",
                    "%.2f ms at 1 MHz SPI + %.0f ms conversions: not for the control loop"
                    % (n * 8 / 1000.0, w / 1000.0)))
    if ctx.micropython:
        kv = parse_kv(ctx.upy("tools/bench/upy/afe_cost.py"))
        rows.append(Row(AREA, "bq76952 read_cells cpu (unix port)", kv.get("bq_read_cells_us"), "us"))
        rows.append(Row(AREA, "bq76952 read_cells alloc", kv.get("bq_alloc_bytes"), "bytes", "0"))
        rows.append(Row(AREA, "ltc6813 x14 read_cells cpu (unix port)", kv.get("ltc_read_cells_us"), "us",
                        "", "waits injected as no-ops: CPU only"))
        rows.append(Row(AREA, "ltc6813 x14 read_cells alloc", kv.get("ltc_alloc_bytes"), "bytes", "0",
                        "with the wait and ticks calls"))
    return rows
