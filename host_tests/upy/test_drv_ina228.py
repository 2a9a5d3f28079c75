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
    # Imax is the range's full scale, 40.96 mV / 100 uOhm = 409.6 A, not
    # the 300 A asked for: CURRENT must not overflow before VSHUNT clips.
    lsb_a = applied["current_lsb_ua"] * 1e-6
    assert 409.6 / 2 ** 19 <= lsb_a <= 1.25 * 409.6 / 2 ** 19
    assert applied["full_scale_ma"] == 409600
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
    drv = INA228(FixedI2C({}), shunt_uohm=100, max_current_ma=600000, current_lsb_ua=3125)
    assert drv.adcrange == 0
    lsb = 3125e-6  # 163.84 mV / 100 uOhm / 2**19: the whole range
    assert drv.cal == int(13107.2e6 * lsb * 100e-6 + 0.5) == 4096
    assert raises(ValueError, INA228, FixedI2C({}), 100, 100, 2000000)  # 200 mV
    # An LSB for 600 A only (SHUNT_CAL 1500 < 4096): CURRENT would overflow
    # between 600 A and the ADC's 1638.4 A, so it is refused.
    assert raises(ValueError, INA228, FixedI2C({}), 0x40, 100, 600000, None, None, 3, 1145)


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
    drv, _ = _fixed({"shunt_uohm": 100, "max_current_ma": 300000, "current_lsb_ua": 782}, regs)
    assert drv.read_current_raw() == -1
    assert drv.read_current_ma() == -1           # -0.782 mA rounds to -1
    assert drv.read_bus_mv() == 48000
    assert drv.read_shunt_uv() == 40960          # 524287 * 78.125 nV
    assert drv.read_die_dc() == 250
    assert drv.read_charge_raw() == -1
    assert drv.diag() == 3
    regs[0x06][0] = 0xEC                         # 0xEC00 = -5120 -> -40 degC
    regs[0x06][1] = 0x00
    assert drv.read_die_dc() == -400
    regs[0x07][0] = 0xC0                         # 0xC00000: -2**18
    regs[0x07][1] = 0x00
    regs[0x07][2] = 0x00
    assert drv.read_current_ma() == -204997     # -262144 * 0.782 mA, rounded
    regs[0x07][0] = 0x3F                         # 0x3FFFF0: +2**18-1
    regs[0x07][1] = 0xFF
    regs[0x07][2] = 0xF0
    assert drv.read_current_ma() == 204996      # 262143 * 0.782 = 204995.8
    assert not drv.saturated


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


def _set20(reg, v):
    v &= 0xFFFFF
    reg[0] = v >> 12
    reg[1] = (v >> 4) & 0xFF
    reg[2] = (v << 4) & 0xF0


def test_a_reading_at_full_scale_counts_as_the_full_scale_current():
    # docs/safety.md, current beyond the shunt's range: CURRENT = VSHUNT *
    # 4096 / SHUNT_CAL; within 1/128 of the ADC's full-scale code (2**19)
    # the reading is saturated: +-full_ma (163.84 mV / 100 uOhm), flagged.
    regs = {0x07: bytearray(3)}
    drv, _ = _fixed({"shunt_uohm": 100, "max_current_ma": 1600000}, regs)
    assert drv.cal == 4096 and drv.full_ma == 1638400
    sat = (2 ** 19 - 1) - 4096                  # codes: CURRENT == VSHUNT here
    below = ((sat - 1) * 3125 + 500) // 1000    # 1625.594 A, a plain reading
    for code, ma, flag in ((sat - 1, below, False),
                           (sat, 1638400, True), (2 ** 19 - 1, 1638400, True),
                           (-sat + 1, -below, False),
                           (-sat, -1638400, True), (-2 ** 19, -1638400, True),
                           (1000, 3125, False)):
        _set20(regs[0x07], code)
        assert drv.read_current_ma() == ma, code
        assert drv.saturated == flag, code


def test_current_beyond_full_scale_reads_full_scale_through_the_emulated_chip():
    # 2000 A through 100 uOhm is 200 mV, beyond the +-163.84 mV the ADC
    # measures: VSHUNT clips and CURRENT (scaled over the whole range)
    # cannot overflow, so the reading is the full-scale current, flagged.
    src = StaticSource(current_ma=-2000000)
    emu = EmuINA228(src, shunt_uohm=100)
    drv = INA228(emu, shunt_uohm=100, max_current_ma=1600000)
    drv.configure()
    assert drv.read_current_ma() == -1638400 and drv.saturated
    assert not emu.regs[0x0B] & 0x0200          # no MATHOF: CURRENT did not overflow
    # Above the board's 1600 A but inside the ADC: a plain reading (a
    # CURRENT scaled for 1600 A only overflowed here, MATHOF).
    src.current = 1620000
    assert abs(drv.read_current_ma() - 1620000) <= 4 and not drv.saturated
    assert not emu.regs[0x0B] & 0x0200
    src.current = 1630000                       # within 1/128 of full scale
    assert drv.read_current_ma() == 1638400 and drv.saturated
    src.current = -1500000
    assert abs(drv.read_current_ma() + 1500000) <= 4 and not drv.saturated
