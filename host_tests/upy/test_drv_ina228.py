# INA228 driver against datasheet numbers (SLYS021A) and the byte-level emulator.
import drv_helpers  # noqa: F401  (path set-up)
from drv_helpers import FixedI2C, heap_locked, raises

from drivers.ina228 import INA228
from emu_ina228 import EmuINA228, StaticSource


def _writes(log, reg):
    return [b for (op, r, b) in log if op == "w" and r == reg]


def test_configure_bytes_match_datasheet_formula():
    src = StaticSource()
    emu = EmuINA228(src, shunt_uohm=100)
    emu.log = []
    drv = INA228(emu, shunt_uohm=100, max_current_ma=300000)
    applied = drv.configure()
    # Datasheet: CURRENT_LSB >= Imax / 2**19 (the driver takes a whole uA
    # value within 25 % of that), SHUNT_CAL = 13107.2e6 * CURRENT_LSB * R,
    # x4 for ADCRANGE = 1 (300 A * 100 uOhm = 30 mV fits +-40.96 mV).
    lsb_a = applied["current_lsb_ua"] * 1e-6
    assert 300.0 / 2 ** 19 <= lsb_a <= 1.25 * 300.0 / 2 ** 19
    exact = 13107.2e6 * lsb_a * 100e-6 * 4
    cal = int(exact + 0.5)
    assert abs(exact - cal) / exact < 1e-5  # LSB chosen for an exact SHUNT_CAL
    assert _writes(emu.log, 0x02) == [bytes([cal >> 8, cal & 0xFF])]
    # CONFIG: RST (bit 15) first, then ADCRANGE (bit 4).
    assert _writes(emu.log, 0x00) == [b"\x80\x00", b"\x00\x10"]
    # ADC_CONFIG: MODE=Fh continuous, VBUSCT=540 us (4), VSHCT=1052 us (5),
    # VTCT=540 us (4), AVG=16 (2).
    assert _writes(emu.log, 0x01) == [bytes([0xF9, 0x62])]
    assert applied["shunt_cal"] == cal and applied["adcrange"] == 1
    # Identity registers were checked first.
    assert emu.log[0] == ("r", 0x3E, b"TI")
    assert emu.log[1][1] == 0x3F


def test_wide_range_uses_adcrange_0():
    # 600 A * 100 uOhm = 60 mV > 40.96 mV -> ADCRANGE 0, no x4.
    drv = INA228(FixedI2C({}), shunt_uohm=100, max_current_ma=600000, current_lsb_ua=1145)
    assert drv.adcrange == 0
    lsb = 1145e-6  # ceil(600 A / 2**19) in whole uA
    assert drv.cal == int(13107.2e6 * lsb * 100e-6 + 0.5)
    assert raises(ValueError, INA228, FixedI2C({}), 100, 100, 2000000)  # 200 mV


def _fixed(drv_kw, regs):
    i2c = FixedI2C(regs)
    return INA228(i2c, **drv_kw), i2c


def test_raw_register_decoding():
    regs = {
        0x07: bytearray(b"\xff\xff\xf0"),        # CURRENT = -1 LSB (bits 23:4)
        0x05: bytearray(b"\x3c\x00\x00"),        # VBUS 245760 * 195.3125 uV = 48 V
        0x04: bytearray(b"\x7f\xff\xf0"),        # VSHUNT +FS 524287 LSB
        0x06: bytearray(b"\x0c\x80"),            # 3200 * 7.8125 m degC = 25 degC
        0x0A: bytearray(b"\xff\xff\xff\xff\xff"),  # CHARGE = -1 LSB
        0x0B: bytearray(b"\x00\x03"),
    }
    drv, _ = _fixed({"shunt_uohm": 100, "max_current_ma": 300000, "current_lsb_ua": 573}, regs)
    assert drv.read_current_raw() == -1
    assert drv.read_current_ma() == -1           # -0.573 mA rounds to -1
    assert drv.read_bus_mv() == 48000
    assert drv.read_shunt_uv() == 40960          # 524287 * 78.125 nV
    assert drv.read_die_dc() == 250
    assert drv.read_charge_raw() == -1
    assert drv.diag() == 3
    regs[0x06][0] = 0xEC                         # 0xEC00 = -5120 -> -40 degC
    regs[0x06][1] = 0x00
    assert drv.read_die_dc() == -400
    regs[0x07][0] = 0x80                         # most negative: -2**19
    regs[0x07][1] = 0x00
    regs[0x07][2] = 0x00
    assert drv.read_current_ma() == -300417     # -524288 * 0.573 mA, rounded
    regs[0x07][0] = 0x7F                         # 0x7FFFF0: +2**19-1
    regs[0x07][1] = 0xFF
    regs[0x07][2] = 0xF0
    assert drv.read_current_ma() == 300416      # 524287 * 0.573 = 300416.45


def test_current_through_emulated_chip():
    src = StaticSource(current_ma=-123456, bus_mv=52100)
    emu = EmuINA228(src, shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=300000)
    drv.configure()
    # One CURRENT_LSB (0.573 mA) plus the shunt-voltage quantisation.
    assert abs(drv.read_current_ma() + 123456) <= 2
    assert abs(drv.read_shunt_uv() + 12346) <= 1  # 123.456 A * 100 uOhm
    assert abs(drv.read_bus_mv() - 52100) <= 1
    src.current = 250000
    assert abs(drv.read_current_ma() - 250000) <= 2


def test_charge_accumulator_and_reset():
    src = StaticSource(current_ma=10000, bus_mv=50000)
    emu = EmuINA228(src, shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=300000)
    drv.configure()
    drv.read_charge_raw()
    src.t = 3600.0  # one hour at 10 A = 10000 mAh = 36e6 mAs
    mas = drv.read_charge_mas()
    assert abs(mas - 36000000) <= 36000000 // 1000
    drv.reset_charge()
    assert drv.read_charge_raw() == 0


def test_nack_retried_within_bound_then_oserror():
    emu = EmuINA228(StaticSource(current_ma=5000), shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=300000, retry_limit=3)
    drv.configure()
    emu.nack = 3  # three NACKs, the fourth attempt succeeds
    t0 = emu.transactions
    assert abs(drv.read_current_ma() - 5000) <= 2
    assert drv.retries == 3 and emu.transactions - t0 == 4
    emu.nack = 4  # one more than the bound: exactly 4 attempts, then OSError
    t0 = emu.transactions
    assert raises(OSError, drv.read_current_ma)
    assert emu.transactions - t0 == 4 and drv.errors == 1
    emu.dead = True
    assert raises(OSError, drv.read_bus_mv)
    emu.dead = False
    assert abs(drv.read_current_ma() - 5000) <= 2


def test_wrong_chip_or_address_is_oserror():
    emu = EmuINA228(StaticSource(), shunt_uohm=100)
    emu.stuck = {0x3F: b"\x22\x71"}  # an INA227-ish id, not 0x228x
    assert raises(OSError, INA228(emu).configure)
    emu.stuck = {}
    assert raises(OSError, INA228(emu, addr=0x41).configure)


def test_hot_path_reads_do_not_allocate():
    regs = {0x07: bytearray(b"\x01\x23\x40"), 0x05: bytearray(b"\x3c\x00\x00"),
            0x04: bytearray(b"\x00\x10\x00"), 0x06: bytearray(b"\x0c\x80")}
    drv, _ = _fixed({"shunt_uohm": 100, "max_current_ma": 300000}, regs)

    def cycle():
        return drv.read_current_ma() + drv.read_bus_mv() + drv.read_shunt_uv() + drv.read_die_dc()

    expect = cycle()
    assert heap_locked(cycle) == expect


def test_alert_limits_match_the_datasheet_units_and_assert_the_pin():
    # 300 A on 100 uOhm: ADCRANGE=1, SOVL/SUVL at 1.25 uV/LSB (5 uV with 0).
    src = StaticSource()
    emu = EmuINA228(src, shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=300000)
    drv.configure()
    hi, lo = drv.set_alert_ma(150000, -160000)
    assert hi == 12000                       # 15 mV / 1.25 uV
    assert lo == 0x10000 - 12800             # -16 mV, two's complement
    assert emu.regs[0x0C] == hi and emu.regs[0x0D] == lo
    assert emu.regs[0x0B] & 0xF000 == 0      # transparent, active low, every conversion
    for ma, level, flag in ((0, 1, 0), (150000, 1, 0), (150010, 0, 0x40),
                            (-160000, 1, 0), (-160010, 0, 0x20), (-300000, 0, 0x20)):
        src.current = ma
        assert emu.alert_level() == level, ma
        assert drv.diag() & 0x60 == flag, ma
    # A limit is rounded up in magnitude: the pin never asserts below it.
    drv.set_alert_ma(100001, -100001)
    assert emu.regs[0x0C] == 8001 and emu.regs[0x0D] == 0x10000 - 8001


def test_alert_limits_in_the_wide_range_and_beyond_full_scale():
    src = StaticSource()
    emu = EmuINA228(src, shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=600000)
    drv.configure()
    assert drv.adcrange == 0
    assert drv.set_alert_ma(200000, -250000) == (4000, 0x10000 - 5000)   # 5 uV/LSB
    assert drv.set_alert_ma(10 ** 8, -10 ** 8) == (0x7FFF, 0x8001)
    # The chip did not take it (a stuck register reads back wrong): OSError.
    emu.stuck = {0x0C: b"\x00\x01"}
    assert raises(OSError, drv.set_alert_ma, 200000, -250000)
