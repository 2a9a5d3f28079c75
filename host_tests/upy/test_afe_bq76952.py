# BQ76952 driver against the byte-level emulator.  Expected bytes come from
# TI's documents typed in here (SLUAA11B examples, SLUUBY2B register table),
# CRCs from the bitwise reference in afe_helpers, never from the driver.
from array import array

from afe_helpers import crc8_ref
from drivers import afe
from drivers.bq76952 import BQ76952, crc8
from emu_bq76952 import EmuBQ76952, StaticSource
from vclock import UsClock

CELLS16 = [3300 + 10 * i for i in range(16)]


def rig(cells=16, crc=False, mv=None, current=0, shunt_uohm=100):
    # The driver waits on the same virtual clock the emulator keeps time by.
    clk = UsClock()
    src = StaticSource(mv if mv is not None else CELLS16[:cells], current, (251, 262, 273, 284))
    emu = EmuBQ76952(src, crc=crc, shunt_uohm=shunt_uohm, clock=clk)
    drv = BQ76952(emu, crc=crc, cells=cells, wait_us=clk.sleep_us)
    return src, emu, drv


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


def test_crc8_ti_vectors():
    # SLUAA11B section 4: FET_ENABLE write [0x10 0x3E 0x22] -> 0x63, [0x00] -> 0x00;
    # Cell 1 read [0x10 0x14 0x11 0x68] -> 0x33, second byte [0x0B] -> 0x31.
    assert crc8_ref([0x10, 0x3E, 0x22]) == 0x63
    assert crc8_ref([0x00]) == 0x00
    assert crc8_ref([0x10, 0x14, 0x11, 0x68]) == 0x33
    assert crc8_ref([0x0B]) == 0x31
    data = bytes(range(0, 256, 7))
    assert crc8(data, len(data)) == crc8_ref(data)


def test_crc_mode_subcommand_bytes_match_ti_example():
    _, emu, drv = rig(crc=True)
    emu.log = []
    drv.subcommand(0x0022)  # FET_ENABLE
    assert emu.log == [("w", 0x3E, bytes([0x22, 0x63, 0x00, 0x00]))]
    assert emu.fet_en


def test_read_cells_one_block_from_0x14():
    _, emu, drv = rig()
    emu.log = []
    mv = array("H", [0] * 16)
    assert drv.read_cells(mv, 16) == 16
    assert list(mv) == CELLS16
    op, reg, data = emu.log[0]
    assert op == "r" and reg == 0x14 and len(data) == 32
    assert data[0] == 3300 & 0xFF and data[1] == 3300 >> 8  # little-endian mV
    assert data[30] | (data[31] << 8) == 3450                  # cell 16 at 0x32


def test_read_cells_crc_mode_every_byte_checked():
    _, emu, drv = rig(crc=True)
    emu.log = []
    mv = array("H", [0] * 16)
    drv.read_cells(mv, 16)
    assert list(mv) == CELLS16
    data = emu.log[0][2]
    assert len(data) == 64
    assert data[1] == crc8_ref([0x10, 0x14, 0x11, data[0]])
    for i in range(1, 32):
        assert data[2 * i + 1] == crc8_ref([data[2 * i]])
    assert drv.crc_errors == 0 and drv.retries == 0


def test_fewer_cells_top_cell_on_vc16():
    mv8 = [3000 + i for i in range(8)]
    _, emu, drv = rig(cells=8, mv=mv8)
    drv.configure({"cells": 8, "shunt_uohm": 100})
    assert emu.dm_get(0x9304, "<H") == 0x807F  # VC1..VC7 and VC16
    out = array("H", [0] * 8)
    drv.read_cells(out, 8)
    assert list(out) == mv8


def test_data_memory_write_matches_ti_checksum_example():
    # SLUUBY2B: write 0x307A to 0x9180 -> checksum 0x44, length 0x06.
    _, emu, drv = rig()
    drv._cfgupdate(True)
    drv.dm_write(0x9180, "<H", 0x1234)
    assert emu.dm_get(0x9180, "<H") == 0x1234
    emu.log = []
    drv.dm_write(0x9180, "<H", 0x307A)
    assert emu.log == [("w", 0x3E, bytes([0x80, 0x91, 0x7A, 0x30])),
                       ("w", 0x60, bytes([0x44, 0x06]))]
    assert emu.dm_get(0x9180, "<H") == 0x307A
    assert drv.dm_read(0x9180, "<H") == 0x307A


def test_data_memory_ignored_outside_config_update():
    _, emu, drv = rig()
    drv.dm_write(0x9278, "<b", 90)
    assert emu.dm_get(0x9278, "<b") == 86  # TRM default stays


def test_configure_returns_quantised_applied_values():
    _, emu, drv = rig(shunt_uohm=100)
    conf = {"cells": 16, "shunt_uohm": 100, "cov_mv": 3800, "cov_delay_ms": 3000,
            "cuv_mv": 2200, "cuv_delay_ms": 3000, "occ_ma": 125000, "occ_delay_ms": 200,
            "ocd1_ma": 375000, "ocd1_delay_ms": 600, "scd_ma": 650000, "scd_delay_us": 200}
    a = drv.configure(conf)
    # COV/CUV steps are 50.6 mV: 76 x 50.6 = 3845.6 (first step >= 3800),
    # 43 x 50.6 = 2175.8 (last step <= 2200).
    assert emu.dm_get(0x9278, "<b") == 76 and a["cov_mv"] == 3845
    assert emu.dm_get(0x9275, "<b") == 43 and a["cuv_mv"] == 2175
    # Delays: 3.3 ms steps plus 6.6 ms: 908 -> 3003 ms.
    assert emu.dm_get(0x9279, "<H") == 908 and a["cov_delay_ms"] == 3003
    # OCC: 125 A x 100 uOhm = 12.5 mV -> 7 x 2 mV = 14 mV = 140 A.
    assert emu.dm_get(0x9280, "<b") == 7 and a["occ_ma"] == 140000
    # OCD1 delay capped at 127 (425.7 ms), the chip's maximum.
    assert emu.dm_get(0x9283, "<B") == 127 and a["ocd1_delay_ms"] == 425
    # SCD: 65 mV -> next table step 80 mV (code 4) = 800 A; 200 us -> code 15 = 210 us.
    assert emu.dm_get(0x9286, "<B") == 4 and a["scd_ma"] == 800000
    assert emu.dm_get(0x9287, "<B") == 15 and a["scd_delay_us"] == 210
    assert emu.dm_get(0x9261, "<B") == 0xBC  # SCD OCD1 OCC COV CUV enabled
    assert a["user_amps_ma"] == 100          # 800 A overflows I2 in mA and 10 mA
    assert not emu.cfgupdate and emu.fet_en


def test_configure_enables_only_configured_protections():
    _, emu, drv = rig()
    a = drv.configure({"cells": 16, "shunt_uohm": 100, "scd_ma": 300000})
    assert emu.dm_get(0x9261, "<B") == 0x80
    assert "cov_mv" not in a and a["scd_ma"] == 400000  # 30 mV -> 40 mV step


def test_current_and_stack_units():
    src, emu, drv = rig(current=-12345)
    drv.configure({"cells": 16, "shunt_uohm": 100, "scd_ma": 300000})
    assert drv.read_current() == -12340  # 10 mA units
    src.current = 5000
    assert drv.read_current() == 5000
    assert drv.read_stack_mv() == sum(CELLS16) // 10 * 10


def test_temperatures_from_0p1_kelvin():
    _, emu, drv = rig()
    t = array("h", [0] * 4)
    assert drv.read_temps(t) == 4
    assert list(t) == [251, 262, 273, 284]


def test_nack_retried_within_bound():
    _, emu, drv = rig()
    mv = array("H", [0] * 16)
    emu.nack = 2
    drv.read_cells(mv, 16)
    assert drv.retries == 2 and list(mv) == CELLS16
    emu.nack = 100
    before = emu.transactions
    assert raises(OSError, drv.read_cells, mv, 16)
    assert emu.transactions - before == drv.retry_limit + 1


def test_bad_crc_counted_retried_then_oserror():
    _, emu, drv = rig(crc=True)
    mv = array("H", [0] * 16)
    emu.corrupt = 1
    drv.read_cells(mv, 16)
    assert drv.crc_errors == 1 and drv.retries == 1 and list(mv) == CELLS16
    emu.corrupt = 100
    assert raises(OSError, drv.read_cells, mv, 16)
    assert drv.crc_errors == 1 + drv.retry_limit + 1


def test_garbage_without_crc_is_not_detectable():
    # Why boards should run CRC mode: 0xFF filler reads as -1 mV -> 0.
    _, emu, drv = rig()
    mv = array("H", [0] * 16)
    emu.garbage = 1
    drv.read_cells(mv, 16)
    assert mv[0] == 0 and drv.crc_errors == 0


def test_dead_chip_raises_oserror():
    _, emu, drv = rig()
    emu.dead = True
    assert raises(OSError, drv.read_current)
    assert raises(OSError, drv.fault)


def test_stuck_register():
    _, emu, drv = rig()
    emu.stuck[0x18] = 0  # cell 3
    mv = array("H", [0] * 16)
    drv.read_cells(mv, 16)
    assert mv[2] == 0 and mv[3] == CELLS16[3]


def test_balance_refuses_adjacent_and_sends_cb_active_cells():
    src, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    flags = bytearray(16)
    flags[3] = flags[4] = 1
    emu.log = []
    assert raises(ValueError, drv.balance, flags)
    assert emu.log == []
    flags = bytearray(16)
    flags[0] = flags[2] = flags[15] = 1
    drv.balance(flags)
    mask = 0x8005
    cks = (~(0x83 + 0x00 + 0x05 + 0x80)) & 0xFF
    assert emu.log == [("w", 0x3E, bytes([0x83, 0x00, 0x05, 0x80])),
                       ("w", 0x60, bytes([cks, 6]))]
    assert emu.cb_mask == mask
    assert src.balance[0] == 1 and src.balance[1] == 0 and src.balance[15] == 1


def test_set_switches_fet_control():
    _, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    drv.set_switches(True, True)
    assert emu.chg_fet and emu.dsg_fet
    drv.set_switches(True, False)
    assert emu.chg_fet and not emu.dsg_fet
    drv.set_switches(False, True)
    assert not emu.chg_fet and emu.dsg_fet
    drv.set_switches(False, False)
    assert not emu.chg_fet and not emu.dsg_fet
    assert drv.fet_status() & 0x05 == 0


def test_hardware_scd_trip_opens_fets_and_reports():
    src, emu, drv = rig(shunt_uohm=100)
    drv.configure({"cells": 16, "shunt_uohm": 100, "scd_ma": 600000, "cov_mv": 4000,
                   "cuv_mv": 2500})
    drv.set_switches(True, True)
    assert drv.fault() == 0
    src.current = -700000  # 70 mV across 100 uOhm, above the 60 mV step
    f = drv.fault()
    assert f & afe.FAULT_SCD
    assert not emu.dsg_fet and not emu.chg_fet
    src.current = 0
    drv.clear_fault()
    assert drv.fault() == 0 and emu.dsg_fet


def test_cell_overvoltage_backstop_trips_in_hardware():
    src, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100, "cov_mv": 3800})
    drv.set_switches(True, True)
    src.cells[5] = 3900
    assert drv.fault() & afe.FAULT_OV
    assert not emu.chg_fet and emu.dsg_fet


def test_modes():
    _, emu, drv = rig()
    drv.set_mode(afe.MODE_NORMAL)
    assert not emu.sleep_enabled
    drv.set_mode(afe.MODE_SLEEP)
    assert emu.sleep_enabled
    drv.set_mode(afe.MODE_SHUTDOWN)
    assert emu.shutdown
    assert raises(ValueError, drv.set_mode, 9)


def test_device_number():
    _, emu, drv = rig(crc=True)
    assert drv.device_number() == 0x7695


def test_subcommand_polls_until_echo_then_gives_up():
    _, emu, drv = rig()
    emu.busy = 3
    assert drv.device_number() == 0x7695
    emu.busy = 10 ** 6
    assert raises(OSError, drv.device_number)


def test_backstop_trips_only_beyond_the_firmware_limits():
    """docs/afe.md: the chip's own protections back the firmware up; they
    must not pre-empt its level-2 reaction (short circuit excepted: only
    hardware is fast enough, so it uses the parameter itself)."""
    from bms import params as P
    from bms.backstop import Backstop, afe_backstop
    ps = P.ParamSet(P.CHEM_LFP, 16)
    c = afe_backstop(ps)
    assert c["cov_mv"] > ps[P.P_OV2] and c["cuv_mv"] < ps[P.P_UV2]
    assert c["cov_delay_ms"] > ps[P.P_OV2_DELAY] and c["cuv_delay_ms"] > ps[P.P_UV2_DELAY]
    assert c["occ_ma"] > ps[P.P_CHG_OC] * 100 and c["ocd1_ma"] > ps[P.P_PEAK] * 100
    assert c["occ_delay_ms"] > ps[P.P_CHG_OC_DELAY] and c["ocd1_delay_ms"] > ps[P.P_PEAK_DELAY]
    assert c["scd_ma"] == ps[P.P_SC] * 100
    for v in c.values():
        assert isinstance(v, int)            # plain numbers for the driver
    # a master whose AFE measures no cells: current protections only
    nc = afe_backstop(ps, cells=False)
    assert "cov_mv" not in nc and "cuv_mv" not in nc and nc["scd_ma"] == c["scd_ma"]
    bs = Backstop(ps)
    v0 = bs.version
    ps.set(P.P_SC, ps[P.P_SC] + 100)
    assert bs.version != v0 and bs.conf()["scd_ma"] == c["scd_ma"] + 10000
    _, emu, drv = rig()
    c["cells"] = 16
    c["shunt_uohm"] = 100
    a = drv.configure(c)
    assert a["cov_mv"] >= c["cov_mv"] and a["cuv_mv"] <= c["cuv_mv"]


def test_read_cells_does_not_allocate():
    try:
        import micropython
        import gc
    except ImportError:
        return
    if not hasattr(gc, "mem_alloc") or not hasattr(micropython, "heap_lock"):
        return
    _, emu, drv = rig()
    emu_regs = emu  # the emulator allocates; measure the driver alone
    mv = array("H", [0] * 16)
    # Replace the bus with one that only copies preallocated bytes.
    frame = bytearray(32)

    class Bus:
        def readfrom_mem_into(self, a, r, buf):
            for i in range(len(buf)):
                buf[i] = frame[i]

    drv.i2c = Bus()
    drv.read_cells(mv, 16)
    drv.read_current()
    drv.fault()
    micropython.heap_lock()
    try:
        drv.read_cells(mv, 16)
        drv.read_current()
        drv.fault()
    finally:
        micropython.heap_unlock()
    assert emu_regs is not None



def test_bleed_mask_mode_and_fet_writes_do_not_allocate():
    # A slave writes its bleed mask each time its master alternates the odd
    # and even cells: in its steady loop.  With and without CRC.
    from drv_helpers import heap_locked
    for crc in (False, True):
        _, emu, drv = rig(crc=crc)
        drv.configure({"cells": 16, "shunt_uohm": 100})
        a = bytearray(16)
        b = bytearray(16)
        a[0] = a[2] = 1
        b[1] = b[3] = 1

        def writes():
            drv.balance(a)
            drv.balance(b)
            drv.set_mode(afe.MODE_SLEEP)
            drv.set_mode(afe.MODE_NORMAL)
            drv.set_switches(True, False)
            drv.set_switches(True, True)
        writes()

        class Bus:      # takes writes without allocating (the emulator does)
            def __init__(self):
                self.n = 0

            def writeto_mem(self, addr, reg, buf):
                self.n += 1
        bus = drv.i2c = Bus()
        heap_locked(writes)
        assert bus.n == 11, (crc, bus.n)   # block + checksum, or a command alone
        drv.i2c = emu
        drv.balance(b)
        assert emu.cb_mask == 0b1010, crc

def test_fet_control_data_byte_matches_trm_bit_layout():
    # SLUUBY2B / SLUUCW9 FET_CONTROL 0x0097: bit0 DSG_OFF, bit1 PDSG_OFF,
    # bit2 CHG_OFF, bit3 PCHG_OFF.  Checksum = ~(0x97 + 0x00 + data), length 5.
    _, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    emu.log = []
    drv.set_switches(True, False)   # discharge path off: DSG_OFF | PDSG_OFF
    assert emu.log == [("w", 0x3E, bytes([0x97, 0x00, 0x03])),
                       ("w", 0x60, bytes([0x65, 0x05]))]
    emu.log = []
    drv.set_switches(False, True)   # charge path off: CHG_OFF | PCHG_OFF
    assert emu.log == [("w", 0x3E, bytes([0x97, 0x00, 0x0C])),
                       ("w", 0x60, bytes([0x5C, 0x05]))]


def test_cc_gain_float_matches_ti_e2e_vector():
    # SLUUBY2B 4.12: CC Gain = 7.5684 / R[mOhm], IEEE-754 single; TI's answer in
    # E2E thread 1346253 for 8 mOhm: CC Gain 0x3F723055, Capacity Gain 0x4889C74D.
    _, emu, drv = rig(shunt_uohm=8000)
    drv.configure({"cells": 16, "shunt_uohm": 8000})
    raw = bytes(emu.dm[0x91A8 + i] for i in range(8))
    assert raw[0:4] == bytes([0x55, 0x30, 0x72, 0x3F])  # little-endian
    assert raw[4:8] == bytes([0x4D, 0xC7, 0x89, 0x48])


def test_protection_codes_clamped_to_trm_ranges():
    # SLUUBY2B 5.2.4/5.2.5/5.2.7: COV 1.012-5.566 V and CUV 20..90 in 50.6 mV
    # (LibreSolar bq769x2 uses the same 20..90), OCC 4-124 mV = 2..62, OCD1
    # 2..100 (2 mV); COV/CUV delay U2 1..2047 at 3.3 ms x (2 + n).
    _, emu, drv = rig()
    a = drv.configure({"cells": 16, "shunt_uohm": 100, "cov_mv": 6000, "cuv_mv": 5000,
                       "occ_ma": 10000000, "ocd1_ma": 10000000,
                       "cov_delay_ms": 10000, "cuv_delay_ms": 1})
    assert emu.dm_get(0x9278, "<b") == 110 and a["cov_mv"] == 5566
    assert emu.dm_get(0x9275, "<b") == 90 and a["cuv_mv"] == 4554
    assert emu.dm_get(0x9280, "<b") == 62 and emu.dm_get(0x9282, "<b") == 100
    assert emu.dm_get(0x9279, "<H") == 2047 and a["cov_delay_ms"] == 6761  # 3.3 x 2049
    assert emu.dm_get(0x9276, "<H") == 1 and a["cuv_delay_ms"] == 9        # 3.3 x 3
    a = drv.configure({"cells": 16, "shunt_uohm": 100, "cov_mv": 100, "cuv_mv": 100,
                       "occ_ma": 1, "ocd1_ma": 1})
    assert emu.dm_get(0x9278, "<b") == 20 and emu.dm_get(0x9275, "<b") == 20
    assert emu.dm_get(0x9280, "<b") == 2 and emu.dm_get(0x9282, "<b") == 2


# ---- what independent references showed the driver must do ------------------
CONF = {"cells": 16, "shunt_uohm": 100, "cov_mv": 3800, "cuv_mv": 2500, "occ_ma": 125000,
        "ocd1_ma": 375000, "scd_ma": 650000}


def test_fets_close_again_after_both_were_off():
    # SLUUBY2B subcommands: ALL_FETS_OFF (0x0095) keeps every FET off until
    # ALL_FETS_ON (0x0096); FET_CONTROL (0x0097) does not lift that latch.
    _, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    drv.set_switches(True, True)
    assert emu.chg_fet and emu.dsg_fet
    drv.set_switches(False, False)
    assert not emu.chg_fet and not emu.dsg_fet
    drv.set_switches(True, True)
    assert emu.chg_fet and emu.dsg_fet
    drv.set_switches(False, True)
    assert not emu.chg_fet and emu.dsg_fet
    drv.set_switches(True, True)
    assert emu.chg_fet and emu.dsg_fet


def test_all_fets_on_lifts_a_latch_left_by_someone_else():
    # A host tool or an earlier firmware left ALL_FETS_OFF latched (the chip
    # keeps it across an MCU reset).  ALL_FETS_ON is sent only when both
    # paths are wanted on, so it cannot turn on a FET we want off.
    _, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    drv.subcommand(0x0095)
    assert emu.all_off
    emu.log = []
    drv.set_switches(True, False)
    assert not emu.chg_fet and not emu.dsg_fet          # latched: still off
    assert [e for e in emu.log if e[1] == 0x3E and e[2][:2] == bytes([0x96, 0x00])] == []
    drv.set_switches(True, True)
    assert emu.chg_fet and emu.dsg_fet and not emu.all_off
    writes = [e[2][:2] for e in emu.log if e[0] == "w" and e[1] == 0x3E]
    assert writes[-2:] == [bytes([0x97, 0x00]), bytes([0x96, 0x00])]  # FET_CONTROL, then ALL_FETS_ON


def test_host_balancing_more_than_one_cell():
    # Settings:Cell Balancing Config:Cell Balance Max Cells (0x933A) is 1 by
    # default, and the chip refuses a CB_ACTIVE_CELLS mask with more cells.
    src, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    assert emu.dm_get(0x933A, "<B") == 8     # every other cell of 16
    flags = bytearray(16)
    for i in (0, 2, 4, 6, 8, 10, 12, 14):
        flags[i] = 1
    drv.balance(flags)
    assert emu.cb_rejected == 0 and src.balance == list(flags)
    assert drv.dm_read(0x933A, "<B") == 8


def test_balance_max_cells_is_configurable_and_enforced():
    src, emu, drv = rig()
    a = drv.configure({"cells": 16, "shunt_uohm": 100, "bal_max_cells": 2})
    assert a["bal_max_cells"] == 2 and emu.dm_get(0x933A, "<B") == 2
    flags = bytearray(16)
    flags[0] = flags[2] = flags[4] = 1
    emu.log = []
    assert raises(ValueError, drv.balance, flags)
    assert emu.log == []   # refused before the chip would refuse it silently


def test_configure_waits_for_config_update_and_every_write():
    # SET_CFGUPDATE needs 2 ms and EXIT_CFGUPDATE 1 ms (TI's command table as
    # LibreSolar uses it); each write about 200 us.  The emulator drops what
    # comes earlier, so a driver without the waits cannot configure at all.
    src = StaticSource(CELLS16)
    clk = UsClock()
    emu = EmuBQ76952(src, shunt_uohm=100, clock=clk)
    hasty = BQ76952(emu, cells=16)            # no wait_us: back-to-back polling
    assert raises(OSError, hasty.configure, CONF)
    _, emu, drv = rig()
    clk = emu.clock
    t0 = clk.slept_us
    a = drv.configure(CONF)
    assert emu.dropped == 0 and emu.bad_checksums == 0
    assert drv.retries == 0 and drv.verify_errors == 0
    assert clk.slept_us - t0 >= 2000 + 1000 + 17 * 200  # enter, exit, 17 values
    assert a["cov_mv"] == 3845 and not emu.cfgupdate


def test_subcommand_response_is_polled_with_waits():
    _, emu, drv = rig()
    clk = emu.clock
    t0 = clk.slept_us
    assert drv.device_number() == 0x7695
    assert clk.slept_us - t0 >= 250          # the chip's response time in the emulator


def test_dropped_write_is_caught_by_read_back():
    # A write the chip never applied (here the OCC threshold) must not leave
    # the chip's default in force: configure reads every value back and
    # writes again; one that never sticks makes configure raise OSError.
    _, emu, drv = rig()
    emu.drop_dm[0x9280] = 1
    a = drv.configure(CONF)
    assert drv.verify_errors == 1 and drv.retries == 1
    assert emu.dm_get(0x9280, "<b") == 7 and a["occ_ma"] == 140000
    for addr in (0x91A8, 0x9261, 0x9278, 0x9286):  # CC Gain, Enabled Prot. A, COV, SCD
        _, emu, drv = rig()
        emu.drop_dm[addr] = 100
        assert raises(OSError, drv.configure, CONF)
        assert drv.verify_errors == drv.retry_limit + 1


def test_mfg_status_init_keeps_permanent_failure_checks():
    # TI's BQ769x2 example writes Mfg Status Init (0x9343) = 0x0050: PF_EN
    # (bit 6) and FET_EN (bit 4).  The chip loads it into Manufacturing
    # Status only at reset (from OTP once programmed); at run time FET_EN
    # comes from the FET_ENABLE subcommand.
    _, emu, drv = rig()
    drv.configure({"cells": 16, "shunt_uohm": 100})
    assert emu.dm_get(0x9343, "<H") == 0x0050
    assert emu.fet_en and not emu.pf_en      # RAM write: nothing changed yet
    emu.program_otp()
    emu.reset()
    assert emu.pf_en and emu.fet_en
