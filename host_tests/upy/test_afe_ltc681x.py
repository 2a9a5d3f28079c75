# LTC6811/6813 driver against the byte-level daisy-chain emulator.  Command
# codes and PECs are typed in from the data sheets / computed by the bitwise
# reference in afe_helpers, never taken from the driver.
from array import array

from afe_helpers import pec15_ref
from drivers import afe
from drivers.ltc681x import LTC681x, pec15
from emu_bq76952 import StaticSource
from emu_ltc681x import EmuLTC681x
from vclock import UsClock


def cells(n, base=3300):
    return [base + 7 * i for i in range(n)]


def pair(src, chips=1, model=6811, pc=None, **kw):
    """Emulator and driver on one virtual clock: the driver's waits (wake-up,
    conversion times) and ticks come from the clock the chips keep time by."""
    clk = UsClock()
    emu = EmuLTC681x(src, chips=chips, model=model, cells_per_chip=pc, clock=clk,
                     **{k: kw.pop(k) for k in ("dten_pin", "input_nf") if k in kw})
    drv = LTC681x(emu.spi, emu.cs, chips=chips, model=model, wait_us=clk.sleep_us,
                  ticks_ms=clk.ticks_ms, **kw)
    return emu, drv


def rig(chips=2, model=6811, mv=None, per_chip=None, **kw):
    pc = per_chip or (12 if model == 6811 else 18)
    src = StaticSource(mv if mv is not None else cells(chips * pc), 0, (300,))
    emu, drv = pair(src, chips, model, pc, **kw)
    drv.configure({"cells": chips * pc})
    return src, emu, drv


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


def frames(emu, code):
    return [f for f in emu.log if f[0] == code]


def test_pec15_datasheet_vectors():
    # LTC6811 data sheet: RDCVA (0x0004) is sent as 00 04 07 C2; WRCFGA 0x0001
    # as 00 01 3D 6E.
    assert pec15_ref([0x00, 0x04]) == 0x07C2
    assert pec15_ref([0x00, 0x01]) == 0x3D6E
    data = bytes(range(3, 250, 11))
    assert pec15(data, 0, len(data)) == pec15_ref(data)
    assert pec15(data, 2, 6) == pec15_ref(data[2:8])


def test_read_cells_frames_and_values_two_chips():
    src, emu, drv = rig(chips=2)
    emu.log = []
    mv = array("H", [0] * 24)
    assert drv.read_cells(mv, 24) == 24
    assert list(mv) == src.cells
    rd = frames(emu, 0x0004)
    assert rd and rd[0][1][:4] == bytes([0x00, 0x04, 0x07, 0xC2])
    out = rd[0][2][4:]
    assert len(out) == 16  # 2 chips x (6 data + 2 PEC)
    # Nearest chip first: cells 1..3, 100 uV little-endian.
    assert out[0] | (out[1] << 8) == src.cells[0] * 10
    assert (out[6] << 8) | out[7] == pec15_ref(out[0:6])
    assert out[8] | (out[9] << 8) == src.cells[12] * 10
    # ADCV in 7 kHz normal mode, all cells: 0x0360.
    adcv = [f for f in emu.log if f[0] == 0x0360]
    assert adcv and adcv[0][1][:2] == bytes([0x03, 0x60])
    assert (adcv[0][1][2] << 8) | adcv[0][1][3] == pec15_ref([0x03, 0x60])
    for code in (0x0006, 0x0008, 0x000A):
        assert frames(emu, code)
    assert not frames(emu, 0x0009)  # RDCVE only on the 6813


def test_ltc6813_eighteen_cells():
    src, emu, drv = rig(chips=1, model=6813)
    mv = array("H", [0] * 18)
    drv.read_cells(mv, 18)
    assert list(mv) == src.cells
    emu.log = []
    drv.read_cells(mv, 18)
    assert frames(emu, 0x0009) and frames(emu, 0x000B)  # RDCVE, RDCVF


def test_write_config_top_chip_first_with_pec():
    src, emu, drv = rig(chips=2)
    emu.log = []
    drv.configure({"cells": 24, "cov_mv": 4200, "cuv_mv": 2500})
    w = frames(emu, 0x0001)[0][1]
    assert w[:4] == bytes([0x00, 0x01, 0x3D, 0x6E])
    g_top, g_near = w[4:12], w[12:20]
    for g in (g_top, g_near):
        assert (g[6] << 8) | g[7] == pec15_ref(g[:6])
    # VOV = 4200 mV / 1.6 mV = 2625 (0xA41), VUV = 2500/1.6 - 1 = 1561 (0x619).
    assert g_near[1] == 0x19 and g_near[2] == 0x16 and g_near[3] == 0xA4
    assert emu.chips[0].cfga[1:4] == bytes([0x19, 0x16, 0xA4])
    assert emu.chips[1].cfga[1:4] == bytes([0x19, 0x16, 0xA4])


def test_configure_returns_quantised_thresholds():
    src, emu, drv = rig(chips=1)
    a = drv.configure({"cells": 12, "cov_mv": 4201, "cuv_mv": 2501})
    # 1.6 mV steps: OV up to 2626 x 1.6 = 4201.6, UV down to 1563 x 1.6 = 2500.8.
    assert a["cov_mv"] == 4201 and a["cuv_mv"] == 2500
    assert emu.chips[0].cfga[3] == 2626 >> 4 and emu.chips[0].cfga[1] == (1562 & 0xFF)


def test_balance_sets_dcc_bits_per_chip():
    src, emu, drv = rig(chips=2)
    flags = bytearray(24)
    flags[0] = flags[9] = flags[13] = flags[23] = 1
    drv.balance(flags)
    assert emu.chips[0].cfga[4] == 0x01 and emu.chips[0].cfga[5] & 0x0F == 0x02
    assert emu.chips[1].cfga[4] == 0x02 and emu.chips[1].cfga[5] & 0x0F == 0x08
    assert src.balance == list(flags)
    drv.balance(bytearray(24))
    assert sum(src.balance) == 0


def test_balance_6813_dcc13_to_18_in_cfgrb():
    src, emu, drv = rig(chips=1, model=6813)
    flags = bytearray(18)
    flags[12] = flags[17] = 1
    drv.balance(flags)
    assert emu.chips[0].cfgb[0] & 0xF0 == 0x10 and emu.chips[0].cfgb[1] & 0x03 == 0x02
    assert src.balance == list(flags)


def test_balance_adjacency_policy_optional():
    src = StaticSource(cells(12))
    emu, drv = pair(src, 1, no_adjacent=True)
    flags = bytearray(12)
    flags[4] = flags[5] = 1
    assert raises(ValueError, drv.balance, flags)
    _, _, drv2 = rig(chips=1)
    drv2.balance(flags)  # the chip itself allows it


def test_bad_pec_counted_retried_then_oserror():
    src, emu, drv = rig(chips=2)
    mv = array("H", [0] * 24)
    emu.corrupt = 1
    drv.read_cells(mv, 24)
    assert drv.crc_errors == 1 and drv.retries == 1 and list(mv) == src.cells
    emu.corrupt = 1000
    assert raises(OSError, drv.read_cells, mv, 24)
    assert drv.retries < 40


def test_command_with_bad_pec_is_ignored_by_chip():
    src, emu, drv = rig(chips=1)
    emu.log = []
    emu.cs.value(0)
    emu.spi.write(bytes([0x00, 0x01, 0x3D, 0x6F]) + bytes(8))  # WRCFGA, PEC off by one
    emu.cs.value(1)
    assert emu.bad_pec_cmds == 1
    assert emu.chips[0].cfga[0] == 0xFC  # unchanged


def test_dead_chip_in_chain_raises():
    src, emu, drv = rig(chips=3)
    emu.dead = {1}
    mv = array("H", [0] * 36)
    assert raises(OSError, drv.read_cells, mv, 36)


def test_spi_error_retried():
    src, emu, drv = rig(chips=1)
    mv = array("H", [0] * 12)
    emu.spi_error = 0
    emu.spi_error = 1
    drv.read_cells(mv, 12)
    assert drv.retries == 1 and list(mv) == src.cells
    emu.spi_error = 1000
    assert raises(OSError, drv.read_cells, mv, 12)


def test_stuck_channel():
    src, emu, drv = rig(chips=1)
    mv = array("H", [0] * 12)
    emu.stuck[(0, 4)] = 0
    drv.read_cells(mv, 12)
    assert mv[4] == 0 and mv[5] == src.cells[5]


def test_pladc_polls_until_done():
    src, emu, drv = rig(chips=1)
    emu.conv_polls = 5
    mv = array("H", [0] * 12)
    drv.read_cells(mv, 12)
    assert drv.pladc_polls == 6
    emu.conv_polls = 10 ** 6
    drv.poll_limit = 50
    assert raises(OSError, drv.read_cells, mv, 12)


def test_watchdog_sleep_resets_balancing_and_wakeup_restores_comms():
    src, emu, drv = rig(chips=1)
    flags = bytearray(12)
    flags[3] = 1
    drv.balance(flags)
    assert src.balance[3] == 1
    emu.sleep()
    assert sum(src.balance) == 0  # DCC bits cleared: fails safe
    mv = array("H", [0] * 12)
    drv.read_cells(mv, 12)         # wake-up pulses first, then it answers
    assert list(mv) == src.cells
    drv.balance(flags)
    assert src.balance[3] == 1


def test_open_wire_detection():
    src, emu, drv = rig(chips=2)
    assert drv.open_wire_check() == 0
    emu.open_wire = {(0, 5), (1, 0), (1, 12)}
    emu.log = []
    found = drv.open_wire_check()
    assert found == (1 << 5) | (1 << 13) | (1 << (13 + 12))
    assert drv.fault() & afe.FAULT_OPEN_WIRE
    # ADOW = 0x228 | MD << 7 | PUP << 6; filtered mode MD = 3 (26 Hz with
    # ADCOPT = 0): pull-up 0x03E8, pull-down 0x03A8, each sent twice, each
    # run after CLRCELL (0x0711).
    codes = [f[0] for f in emu.log if f[0] not in (None, 0x0714)]  # without PLADC
    assert codes[:6] == [0x0711, 0x03E8, 0x03E8, 0x0004, 0x0006, 0x0008]
    assert len(frames(emu, 0x03E8)) == 2 and len(frames(emu, 0x03A8)) == 2
    assert len(frames(emu, 0x0711)) == 2
    f = frames(emu, 0x03E8)[0][1]
    assert (f[2] << 8) | f[3] == pec15_ref([0x03, 0xE8])
    drv.clear_fault()
    emu.open_wire = set()
    assert drv.open_wire_check() == 0 and drv.fault() == 0


def test_comparator_flags_reported_as_faults():
    src, emu, drv = rig(chips=1)
    drv.configure({"cells": 12, "cov_mv": 3600, "cuv_mv": 2800})
    mv = array("H", [0] * 12)
    drv.read_cells(mv, 12)
    assert drv.fault() == 0
    src.cells[7] = 3700
    drv.read_cells(mv, 12)
    assert drv.fault() & afe.FAULT_OV
    src.cells[7] = 3300
    src.cells[2] = 2700
    drv.read_cells(mv, 12)
    f = drv.fault()
    assert f & afe.FAULT_UV and not f & afe.FAULT_OV


def test_fewer_cells_per_chip_ignores_unused_inputs():
    src, emu, drv = rig(chips=2, per_chip=8, mv=cells(16))
    drv.configure({"cells": 16, "cuv_mv": 2800, "cov_mv": 3600})
    mv = array("H", [0] * 16)
    drv.read_cells(mv, 16)
    assert list(mv) == src.cells
    assert drv.fault() == 0  # unused (0 V) inputs raise no UV


def test_die_temperature():
    src, emu, drv = rig(chips=2)
    t = array("h", [0] * 2)
    assert drv.read_temps(t) == 2
    assert abs(t[0] - 300) <= 1 and abs(t[1] - 300) <= 1


def test_die_temperature_datasheet_scale():
    # LTC6811/6813 STATA ITMP: T = ITMP x 100 uV / 7.6 mV - 276 degC, so 31 degC
    # is (31 + 276) x 76 = 23332 counts.
    src, emu, drv = rig(chips=1)
    src.temps[0] = 310
    t = array("h", [0])
    drv.read_temps(t)
    c = emu.chips[0]
    assert c.stata[2] | (c.stata[3] << 8) == 23332
    assert t[0] == 310


def test_no_fets_no_current():
    _, _, drv = rig(chips=1)
    assert raises(NotImplementedError, drv.set_switches, 1, 1)
    assert raises(NotImplementedError, drv.read_current)


def test_read_cells_does_not_allocate():
    try:
        import micropython
    except ImportError:
        return
    if not hasattr(micropython, "heap_lock"):
        return
    src, emu, drv = rig(chips=2)
    # Replace the emulator (which allocates) by a bus that answers every read
    # with a valid, preallocated frame.
    grp = bytearray(b"\x10\x80\x10\x80\x10\x80")
    p = pec15_ref(grp)
    frame = bytearray(4 + 16)
    for c in range(2):
        frame[4 + 8 * c:10 + 8 * c] = grp
        frame[10 + 8 * c] = p >> 8
        frame[11 + 8 * c] = p & 0xFF

    class Spi:
        def write(self, b):
            pass

        def write_readinto(self, w, r):
            if len(r) == 1:
                r[0] = 0xFF
                return
            for i in range(len(r)):
                r[i] = frame[i]

    class Pin:
        def value(self, v=None):
            pass

    drv.spi = Spi()
    drv.cs = Pin()
    mv = array("H", [0] * 24)
    drv.read_cells(mv, 24)
    micropython.heap_lock()
    try:
        drv.read_cells(mv, 24)
    finally:
        micropython.heap_unlock()
    assert mv[0] == 3278  # 0x8010 x 100 uV = 3278.4 mV


# ---- what independent references showed the driver must do ------------------
def test_dten_pin_high_does_not_break_configuration_read_back():
    # LTC6811/6813 data sheets, configuration register group: CFGR0 bit 1
    # DTEN is read-only and reads the DTEN pin; GPIO bits read the pins.
    for pin in (0, 1):
        src, emu, drv = rig(chips=3, dten_pin=pin)
        flags = bytearray(36)
        flags[1] = flags[20] = 1
        drv.balance(flags)
        assert src.balance == list(flags) and drv.retries == 0
        assert all(((c.cfga[0] >> 1) & 1) == 0 for c in emu.chips)  # we write 0
    emu.gpio_level = 0                      # thermistor inputs pulled low
    drv.configure({"cells": 36, "cov_mv": 4200})
    assert drv.retries == 0


def test_open_wire_found_behind_large_filter_capacitors():
    # Data sheet, open-wire check: two ADOW runs at 7 kHz find an open wire
    # only with up to 10 nF on the C pins; more capacitance needs
    # 1 + C / 10 nF conversions, or filtered mode (2 conversions up to 1 uF).
    src, emu, drv = rig(chips=1, input_nf=100)
    emu.open_wire = {(0, 5)}
    assert drv.open_wire_check() == 1 << 5                   # filtered, 2 each
    assert drv.open_wire_check(filtered=False) == 0          # 7 kHz x 2: missed
    assert drv.open_wire_check(repeats=11, filtered=False) == 1 << 5
    src, emu, drv = rig(chips=1, input_nf=1000)
    emu.open_wire = {(0, 7)}
    t0 = emu.clock.slept_us
    assert drv.open_wire_check() == 1 << 7
    assert emu.clock.slept_us - t0 >= 4 * 201000             # four 26 Hz conversions


def test_open_wire_check_does_not_pass_stale_values():
    # Linduino clears the cell registers (CLRCELL) before the open-wire runs:
    # a lost ADOW then reads 0xFFFF instead of the previous run's values.
    src, emu, drv = rig(chips=1)
    emu.open_wire = {(0, 5)}
    emu.drop = {0x0328: 2, 0x03A8: 2}    # both pull-down commands lost (7 kHz or 26 Hz)
    assert raises(OSError, drv.open_wire_check)


def test_sleeping_chain_needs_a_long_wake_pulse_per_chip():
    # Data sheet: a chip in SLEEP (power-up, or ~2 s without a wake-up
    # signal) wakes from CS held low for t_WAKE and then wakes the next one;
    # a short pulse leaves it asleep.
    src = StaticSource(cells(48), 0, (300,))
    emu, drv = pair(src, 4)
    assert emu.asleep                         # power-up
    for _ in range(4):                        # short pulses: nothing wakes
        emu.cs.value(0)
        emu.spi.write(b"\xff")
        emu.cs.value(1)
    assert emu.asleep and emu.wakes == 0
    drv.configure({"cells": 48})
    assert not emu.asleep and emu.wakes == 4 and drv.retries == 0
    mv = array("H", [0] * 48)
    drv.read_cells(mv, 48)
    assert list(mv) == src.cells
    # Active a moment ago: the short isoSPI wake-up is enough; the only wait
    # is the conversion (2.3 ms), not 4 x 400 us of wake-up.
    n = drv.long_wakes
    t0 = emu.clock.slept_us
    drv.read_cells(mv, 48)
    assert drv.long_wakes == n and emu.clock.slept_us - t0 == 2300
    # Three seconds idle: the watchdog has put the chain to sleep again.
    emu.clock.advance_ms(3000)
    assert drv.read_cells(mv, 48) == 48
    assert list(mv) == src.cells and drv.retries == 0 and emu.wakes == 8


def test_chain_that_slept_unnoticed_is_woken_on_retry():
    # A chip can sleep without the driver knowing (isoSPI glitch, module
    # brown-out): the failed exchange is retried after the long wake-up.
    src, emu, drv = rig(chips=2)
    emu.sleep()
    mv = array("H", [0] * 24)
    assert drv.read_cells(mv, 24) == 24
    assert list(mv) == src.cells and drv.retries >= 1


def test_conversion_wait_is_the_data_sheet_time():
    # PLADC stays busy for the whole conversion; bytes polled take no virtual
    # time here, so a driver that does not wait the conversion time times out.
    src = StaticSource(cells(12), 0, (300,))
    clk = UsClock()
    emu = EmuLTC681x(src, chips=1, clock=clk)
    hasty = LTC681x(emu.spi, emu.cs, chips=1, wait_us=None, poll_limit=50)
    assert raises(OSError, hasty.read_cells, array("H", [0] * 12), 12)
    src, emu, drv = rig(chips=1)
    t0 = emu.clock.slept_us
    drv.read_cells(array("H", [0] * 12), 12)
    assert emu.clock.slept_us - t0 >= 2300     # 12 cells at 7 kHz


def test_configuration_lost_in_a_watchdog_sleep_is_written_again():
    # LTC6811/6813 data sheets: when the watchdog times out (about 2 s
    # without a valid command) the configuration register group resets,
    # VUV and VOV included.  With VOV = 0 the next ADCV flags every cell
    # over-voltage and with VUV = 0 none under-voltage, so the comparator
    # backstop (cov_mv / cuv_mv) reports a false OV and hides a real UV
    # until the configuration is written again.
    src, emu, drv = rig(chips=1)
    drv.configure({"cells": 12, "cov_mv": 3600, "cuv_mv": 2800})
    mv = array("H", [0] * 12)
    drv.read_cells(mv, 12)
    assert drv.fault() == 0
    emu.clock.advance_ms(3000)          # idle: the watchdog put the chain to sleep
    src.cells[2] = 2700
    drv.read_cells(mv, 12)
    f = drv.fault()
    assert f & afe.FAULT_UV and not f & afe.FAULT_OV
    # A chain that slept without the driver knowing (isoSPI glitch): the ADCV
    # it missed left the registers of before the sleep; they must not pass
    # as this cycle's reading.
    src.cells[2] = 3300
    drv.read_cells(mv, 12)
    emu.sleep()
    src.cells[4] = 3500
    drv.read_cells(mv, 12)
    assert mv[4] == 3500 and drv.fault() == 0


def test_lost_conversion_command_is_not_passed_as_a_reading():
    # LTC6811/6813: a command whose PEC does not match is ignored by the
    # chip, and the cell registers keep the last conversion (0xFFFF only
    # after reset or CLRCELL).  An ADCV lost on the wire must not return the
    # previous sweep's cells as this one's.
    src, emu, drv = rig(chips=2)
    mv = array("H", [0] * 24)
    drv.read_cells(mv, 24)
    src.cells[3] = 3500
    emu.drop[0x0360] = 1                # this sweep's ADCV arrives with a bad PEC
    assert drv.read_cells(mv, 24) == 24
    assert mv[3] == 3500 and list(mv) == src.cells
