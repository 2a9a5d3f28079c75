# Two BQ76952 stacked behind drivers.afe_stack.AfeStack, each on its own
# byte-level emulator (both at 0x08: the top one is on its own isolated bus).
# The split and the Vcell Mode words expected per cell count are typed from
# docs/wiring.md (bottom chip full first, top chip: VC1.. and its top cell on
# VC16), not taken from the driver.
from array import array

from afe_helpers import crc8_ref
from drv_helpers import FixedI2C, heap_locked, raises
from drivers import afe
from drivers.afe_stack import AfeStack, split
from drivers.bq76952 import BQ76952
from emu_bq76952 import EmuBQ76952, StaticSource
from vclock import UsClock


def cells(n):
    # distinct per cell so any reordering shows
    return [3000 + 7 * i for i in range(n)]


def rig(n, n0, crc=True):
    """Two chips wired for n cells with n0 on the bottom one (the user's
    wiring), drivers built as boards/common.py builds them."""
    mv = cells(n)
    bot_src = StaticSource(mv[:n0], 0, (250, 251, 252, 253))
    top_src = StaticSource(mv[n0:], 0, (300, 301, 302, 303))
    clk = UsClock()   # one MCU: both drivers wait on the same clock
    bot = EmuBQ76952(bot_src, crc=crc, shunt_uohm=100, clock=clk)
    top = EmuBQ76952(top_src, crc=crc, shunt_uohm=100, clock=clk)
    stack = AfeStack([BQ76952(bot, crc=crc, cells=16, wait_us=clk.sleep_us),
                      BQ76952(top, crc=crc, cells=3, wait_us=clk.sleep_us)])
    return mv, bot, top, stack


def test_split_rule_fills_the_bottom_chip_first():
    m = [16, 16]
    assert split(32, m) == [16, 16]
    assert split(31, m) == [16, 15]
    assert split(24, m) == [16, 8]
    assert split(21, m) == [16, 5]
    assert split(19, m) == [16, 3]
    assert split(18, m) == [15, 3]   # the top chip keeps its 3-cell minimum
    assert split(17, m) == [14, 3]
    assert split(6, m) == [3, 3]
    assert raises(ValueError, split, 5, m)
    assert raises(ValueError, split, 33, m)
    assert split(40, [16, 16, 16]) == [16, 16, 8]
    assert split(20, [16, 16, 16]) == [14, 3, 3]


def _check_layout(n, n0, bot_mask, top_mask):
    mv, bot, top, stack = rig(n, n0)
    a = stack.configure({"cells": n, "shunt_uohm": 100})
    assert a["cells"] == n and a["split"] == (n0, n - n0)
    assert bot.dm_get(0x9304, "<H") == bot_mask
    assert top.dm_get(0x9304, "<H") == top_mask
    out = array("H", [0] * 32)
    assert stack.read_cells(out, n) == n
    assert list(out[:n]) == mv
    assert list(out[n:]) == [0] * (32 - n)
    return bot, top, stack


def test_21s_16_bottom_5_top_in_order():
    _check_layout(21, 16, 0xFFFF, 0x800F)   # top: VC1..VC4 + VC16


def test_31s_and_32s_and_24s():
    _check_layout(31, 16, 0xFFFF, 0xBFFF)   # top: VC1..VC14 + VC16
    _check_layout(32, 16, 0xFFFF, 0xFFFF)
    _check_layout(24, 16, 0xFFFF, 0x807F)


def test_17s_keeps_three_on_top():
    _check_layout(17, 14, 0x9FFF, 0x8003)   # bottom VC1..VC13 + VC16; top VC1, VC2, VC16


def test_top_chip_read_is_one_crc_block_from_0x14():
    mv, bot, top, stack = rig(21, 16)
    stack.configure({"cells": 21, "shunt_uohm": 100})
    top.log = []
    out = array("H", [0] * 21)
    stack.read_cells(out, 21)
    op, reg, data = top.log[0]
    assert op == "r" and reg == 0x14 and len(data) == 64   # 16 x I2 + CRC per byte
    assert data[1] == crc8_ref([0x10, 0x14, 0x11, data[0]])
    assert data[0] | (data[2] << 8) == mv[16]                # cell 17 = top chip's VC1


def test_fewer_than_six_cells_refused():
    _mv, _bot, _top, stack = rig(6, 3)
    assert raises(ValueError, stack.configure, {"cells": 5, "shunt_uohm": 100})
    a = stack.configure({"cells": 6, "shunt_uohm": 100})
    assert a["split"] == (3, 3)


def test_top_chip_gets_no_current_protection():
    _mv, bot, top, stack = rig(24, 16)
    conf = {"cells": 24, "shunt_uohm": 100, "cov_mv": 3800, "cuv_mv": 2200,
            "occ_ma": 125000, "ocd1_ma": 375000, "scd_ma": 650000}
    a = stack.configure(conf)
    # Enabled Protections A (0x9261): bit7 SCD, 5 OCD1, 4 OCC, 3 COV, 2 CUV.
    assert bot.dm_get(0x9261, "<B") == 0xBC
    assert top.dm_get(0x9261, "<B") == 0x0C
    assert top.dm_get(0x9278, "<b") == 76 and bot.dm_get(0x9278, "<b") == 76  # 76 x 50.6 mV
    assert a["occ_ma"] == 140000 and a["cov_mv"] == 3845
    assert a["chips"][1]["prot_a"] == 0x0C
    # A current through the top chip's (shorted) sense inputs trips nothing there.
    top.source.current = -900000
    assert stack.fault() == 0
    assert raises(ValueError, stack.configure, {"cells": 24, "vcell_mask": 0xFFFF})


def test_fault_bits_or_and_current_bits_only_from_bottom():
    mv, bot, top, stack = rig(24, 16)
    stack.configure({"cells": 24, "shunt_uohm": 100, "cov_mv": 3800, "scd_ma": 600000})
    assert stack.fault() == 0
    top.source.cells[7] = 3900                  # cell 24 over the top chip's COV
    assert stack.fault() == afe.FAULT_OV
    top.source.cells[7] = mv[23]
    assert stack.fault() == 0
    top.trip_scd()                              # cannot be real: masked
    assert stack.fault() == 0
    bot.trip_scd()
    assert stack.fault() & afe.FAULT_SCD
    stack.clear_fault()
    assert stack.fault() == 0


def test_current_and_switches_from_the_bottom_chip_only():
    _mv, bot, top, stack = rig(24, 16)
    stack.configure({"cells": 24, "shunt_uohm": 100, "scd_ma": 300000})
    bot.source.current = -12340
    top.source.current = 5000
    assert stack.read_current() == -12340
    stack.set_switches(False, True)
    assert not bot.chg_fet and bot.dsg_fet
    assert top.host_off == 0
    other = AfeStack(stack.afes, fet_chip=-1)    # a high-side FET board: the top chip
    other.set_switches(True, False)
    assert top.host_off == 0x03 and not bot.chg_fet
    assert stack.read_stack_mv() == sum(bot.source.cells) // 10 * 10 + sum(top.source.cells) // 10 * 10


def test_balance_split_per_chip():
    _mv, bot, top, stack = rig(24, 16)
    stack.configure({"cells": 24, "shunt_uohm": 100})
    flags = bytearray(24)
    flags[2] = flags[19] = 1                     # cells 3 and 20
    stack.balance(flags)
    assert bot.cb_mask == 0x0004                 # VC3
    assert top.cb_mask == 0x0008                 # cell 20 = top cell 4 on VC4
    flags = bytearray(24)
    flags[15] = flags[16] = 1                    # 16 and 17: different chips, allowed
    stack.balance(flags)
    assert bot.cb_mask == 0x8000 and top.cb_mask == 0x0001
    flags = bytearray(24)
    flags[0] = flags[17] = flags[18] = 1         # 18 and 19 on the top chip: refused
    bot.log = []
    top.log = []
    assert raises(ValueError, stack.balance, flags)
    assert bot.log == [] and top.log == []       # neither chip written
    assert bot.cb_mask == 0x8000 and top.cb_mask == 0x0001


def test_balance_top_cell_of_short_top_chip_on_vc16():
    _mv, bot, top, stack = rig(21, 16)
    stack.configure({"cells": 21, "shunt_uohm": 100})
    flags = bytearray(21)
    flags[20] = 1                                # cell 21: the top chip's VC16
    stack.balance(flags)
    assert top.cb_mask == 0x8000 and bot.cb_mask == 0
    assert top.source.balance == [0, 0, 0, 0, 1]


def test_temps_chip_by_chip():
    _mv, _bot, _top, stack = rig(24, 16)
    t = array("h", [0] * 8)
    assert stack.read_temps(t) == 8
    assert list(t) == [250, 251, 252, 253, 300, 301, 302, 303]
    short = array("h", [0] * 4)
    assert stack.read_temps(short) == 4 and list(short) == [250, 251, 252, 253]


def test_counters_are_sums():
    _mv, bot, top, stack = rig(24, 16)
    stack.configure({"cells": 24, "shunt_uohm": 100})
    out = array("H", [0] * 24)
    top.corrupt = 1
    stack.read_cells(out, 24)
    assert stack.crc_errors == 1 and stack.retries == 1
    bot.nack = 1
    stack.read_cells(out, 24)
    assert stack.crc_errors == 1 and stack.retries == 2


def test_dead_top_chip_raises_oserror_bottom_still_answers():
    _mv, bot, top, stack = rig(24, 16)
    stack.configure({"cells": 24, "shunt_uohm": 100})
    top.dead = True
    out = array("H", [0] * 24)
    assert raises(OSError, stack.read_cells, out, 24)
    assert raises(OSError, stack.fault)
    assert raises(OSError, stack.configure, {"cells": 24, "shunt_uohm": 100})
    assert stack.read_current() == 0             # the shunt chip is fine
    # Modes and recovery go to every chip; the live one is not skipped.
    assert raises(OSError, stack.set_mode, afe.MODE_SHUTDOWN)
    assert bot.shutdown and not top.shutdown


def test_mode_reaches_every_chip():
    _mv, bot, top, stack = rig(24, 16)
    stack.set_mode(afe.MODE_NORMAL)
    assert not bot.sleep_enabled and not top.sleep_enabled
    stack.set_mode(afe.MODE_SLEEP)
    assert bot.sleep_enabled and top.sleep_enabled


def test_read_path_does_not_allocate():
    def chip(cells_n, base):
        regs = {0x14: bytearray(32), 0x02: bytearray(6), 0x12: bytearray(2), 0x3A: bytearray(2),
                0x68: bytearray(b"\xb8\x0b"), 0x70: bytearray(6)}
        for i in range(16):
            v = base + i
            regs[0x14][2 * i] = v & 0xFF
            regs[0x14][2 * i + 1] = v >> 8
        return BQ76952(FixedI2C(regs), cells=cells_n)

    stack = AfeStack([chip(16, 3100), chip(8, 3200)])
    out = array("H", [0] * 32)
    t = array("h", [0] * 8)

    def cycle():
        stack.read_cells(out, 24)
        stack.read_current()
        stack.fault()
        stack.read_temps(t)

    cycle()
    heap_locked(cycle)
    assert list(out[:16]) == [3100 + i for i in range(16)]
    # top chip: 8 cells on VC1..VC7 and VC16
    assert list(out[16:24]) == [3200 + i for i in range(7)] + [3215]
    assert t[0] == 3000 - 2731 and t[4] == 3000 - 2731
