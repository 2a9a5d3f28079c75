# HwBoard: the core's board interface over driver objects (fakes here; the
# emulator-backed runs are in test_drv_boards / test_drv_chipboard).
import drv_helpers  # noqa: F401
from drv_helpers import raises

from bms.measurements import ROLE_BALANCE, ROLE_CELL, T_OK, T_OPEN, Measurements
from drivers import gpio
from drivers.hwboard import FAULT_RELAY, HwBoard


class FakeAfe:
    max_cells = 4
    balance_no_adjacent = True

    def __init__(self):
        self.cells = [3300, 3310, 0, 3290]
        self.fail = False
        self.fail_switch = False
        self.fault_bits = 0
        self.confs = []
        self.switches = None
        self.flags = None
        self.modes = []

    def set_mode(self, mode):
        self.modes.append(mode)

    def configure(self, conf):
        if self.fail:
            raise OSError(19)
        self.confs.append(dict(conf))
        return conf

    def read_cells(self, mv, n):
        if self.fail:
            raise OSError(5)
        for i in range(n):
            mv[i] = self.cells[i]
        return n

    def read_temps(self, t):
        t[0] = 312
        return 1

    def read_current(self):
        return -1500

    def read_stack_mv(self):
        return sum(self.cells)

    def read_ld_mv(self):
        return 13000

    def fault(self):
        return self.fault_bits

    def clear_fault(self):
        self.fault_bits = 0

    def balance(self, flags):
        if self.fail:
            raise OSError(5)
        self.flags = bytes(flags)

    def set_switches(self, chg, dsg):
        if self.fail_switch:
            raise OSError(5)
        self.switches = (chg, dsg)


class Ntc:
    def __init__(self, t, st=T_OK):
        self.temp_dc = t
        self.st = st

    def read(self):
        return self.st


class Pin:
    def __init__(self, v=0):
        self.v = v
        self.log = None

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        if self.log is not None:
            self.log.append((self, v))
        return None


def _board(**kw):
    afe = FakeAfe()
    pins = [Pin() for _ in range(5)]
    relays = [gpio.Relay(p) for p in pins]
    ntcs = [(Ntc(250), ROLE_CELL), (Ntc(0, T_OPEN), ROLE_CELL)]
    b = HwBoard(afe, None, ntcs, relays, afe_temps=[(0, ROLE_BALANCE)],
                afe_conf={"cells": 4}, **kw)
    return b, afe, pins


def test_measurements_through_the_interface():
    b, afe, _ = _board()
    assert b.init() and b.temp_roles == (ROLE_CELL, ROLE_CELL, ROLE_BALANCE)
    assert afe.modes == [0]          # MODE_NORMAL: no autonomous chip sleep
    m = Measurements(b.max_cells, b.temp_roles)
    b.read_cells(m, 100)
    assert list(m.cell_mv) == [3300, 3310, 0, 3290]
    assert list(m.cell_ok) == [1, 1, 0, 1]          # 0 mV = open input
    assert m.cell_ts[3] == 100
    b.read_current(m, 100)
    # The voltages are not read with the current (the core reads them at the
    # cell sweep, and every tick only while precharging).
    assert m.current_ma == -1500 and m.pack_mv == 0 and not m.load_ok
    b.read_volts(m, 100)
    assert m.pack_mv == 9900 and m.load_mv == 13000 and m.load_ok
    b.read_temps(m, 100)
    assert list(m.temp_status) == [T_OK, T_OPEN, T_OK]
    assert m.temp_dc[0] == 250 and m.temp_dc[2] == 312


def test_cell_count_change_reconfigures_afe():
    b, afe, _ = _board()
    b.init()
    m = Measurements(4, b.temp_roles)
    m.set_cell_count(3)
    b.read_cells(m, 0)
    assert afe.confs[-1]["cells"] == 3


def test_failed_init_is_retried_by_reads():
    b, afe, _ = _board()
    afe.fail = True
    assert not b.init() and b.init_errors == 1
    m = Measurements(4, b.temp_roles)
    assert raises(OSError, b.read_cells, m, 0)
    afe.fail = False
    b.read_cells(m, 0)
    assert b.afe_ok and m.cell_ok[0] == 1


def test_relays_open_before_close_and_fet_rules():
    b, afe, pins = _board(afe_fets=True)
    b.init()
    log = []
    for p in pins:
        p.log = log
    b.set_relays(bytearray([1, 0, 1, 1, 0]))
    log[:] = []
    b.set_relays(bytearray([0, 1, 1, 1, 0]))       # precharge on, discharge off
    assert log.index((pins[0], 0)) < log.index((pins[1], 1))
    assert afe.switches == (True, False)
    afe.fail_switch = True
    b.set_relays(bytearray([1, 0, 1, 1, 0]))       # failed close: counted
    assert b.output_errors == 1
    assert raises(OSError, b.set_relays, bytearray([0, 0, 0, 0, 0]))  # failed open: raised


def test_balance_errors_counted_not_raised():
    b, afe, _ = _board()
    b.init()
    b.set_balance(bytearray([1, 0, 1, 0]))
    assert afe.flags == b"\x01\x00\x01\x00"
    afe.fail = True
    b.set_balance(bytearray([0, 1, 0, 0]))
    assert b.output_errors == 1


def test_a_failed_balance_write_is_repeated_at_the_next_cell_read():
    b, afe, _ = _board()
    b.init()
    m = Measurements(b.max_cells, b.temp_roles)
    m.set_cell_count(4)
    b.set_balance(bytearray([1, 0, 1, 0]))
    afe.fail = True
    b.set_balance(bytearray(4))          # "all off" lost on the bus
    afe.fail = False
    assert afe.flags == b"\x01\x00\x01\x00"
    b.read_cells(m, 100)
    assert afe.flags == b"\x00\x00\x00\x00"
    afe.flags = None
    b.read_cells(m, 350)                 # written once it went through
    assert afe.flags is None


def test_first_cell_read_after_a_restart_turns_the_chips_bleeders_off():
    b, afe, _ = _board()
    afe.flags = b"\x00\x01\x00\x00"    # left by the firmware before the restart
    b.init()
    m = Measurements(b.max_cells, b.temp_roles)
    m.set_cell_count(4)
    b.read_cells(m, 100)
    assert afe.flags == b"\x00\x00\x00\x00"


def _relay_board():
    """One relay with a readback input that stays off; (board, afe, readback pin)."""
    afe = FakeAfe()
    fb = Pin(0)
    r = gpio.Relay(Pin(), fb_pin=fb, fb_samples=2)
    b = HwBoard(afe, None, (), [r], afe_conf={"cells": 4})
    b.init()
    return b, afe, fb


def test_relay_readback_fault_reaches_afe_fault():
    b, afe, fb = _relay_board()
    m = Measurements(4, ())
    b.set_relays(bytearray([1]))                    # commanded on, readback stays off
    b.read_cells(m, 0)
    assert b.afe_fault() == 0
    b.read_cells(m, 50)
    assert b.afe_fault() & FAULT_RELAY
    fb.v = 1
    b.clear_afe_fault()
    assert b.afe_fault() == 0
    afe.fault_bits = 1
    b.read_cells(m, 100)
    assert b.afe_fault() == 1


def test_read_faults_without_reading_cells():
    # A master with CAN modules reads no cells from its own AFE: read_faults
    # alone must bring the trip bits and the relay readback to afe_fault().
    b, afe, _fb = _relay_board()
    b.set_relays(bytearray([1]))
    b.read_faults()
    b.read_faults()
    assert b.afe_fault() & FAULT_RELAY
    afe.fault_bits = 1
    b.read_faults()
    assert b.afe_fault() & 1


def test_the_core_is_called_between_the_bus_transactions_of_a_read():
    # Between the AFE's cell block and its fault status, and between the
    # NTCs and the AFE's temperatures: the core's service reads a port there.
    b, afe, _ = _board()
    assert b.init()
    m = Measurements(b.max_cells, b.temp_roles)
    seen = []
    b.between = lambda: seen.append((list(m.cell_mv), afe.fault_calls, list(m.temp_dc)))
    afe.fault_calls = 0
    plain = afe.fault

    def fault():
        afe.fault_calls += 1
        return plain()
    afe.fault = fault
    b.read_cells(m, 100)
    assert seen == [([3300, 3310, 0, 3290], 0, [0, 0, 0])]   # cells in, faults not yet read
    assert afe.fault_calls == 1
    b.read_temps(m, 100)
    assert len(seen) == 2 and seen[1][2] == [250, 0, 0]        # NTCs in, the AFE's not yet
    assert m.temp_dc[2] == 312


def test_a_bms_gives_the_board_its_service_as_the_gap_call():
    from bms.core import Bms
    from bms.params import ParamSet
    from modbus_rig import UsClock
    b, _afe, _ = _board()
    calls = []
    bms = Bms(b, ParamSet(max_cells=4), UsClock())
    bms.service = lambda: calls.append(1)
    assert b.between is not None
    b.between()
    assert calls == [1]
    bms.service = None
    b.between()          # no service: nothing to call, no error


def test_balancing_stops_on_a_chip_that_failed_to_configure():
    # SLUAA81A (BQ769x2 cell balancing): CB_ACTIVE_CELLS "When written,
    # starts balancing on the specified cells. Write 0x0000 to turn balancing
    # off" - host balancing has no timeout.  A reconfigure that the chip does
    # not hold marks the AFE failed and the core stops balancing (flags 0):
    # that stop must still reach the chip, or its bleed FETs keep draining
    # cells nobody measures until the configuration succeeds.
    import drv_fakemachine  # noqa: F401  (tools/sim on the path)
    from emu_bq76952 import EmuBQ76952, StaticSource
    from vclock import UsClock
    from drivers.bq76952 import BQ76952

    class Src:
        version = 1

        def conf(self):
            return {"cov_mv": 3650}

    clk = UsClock()
    emu = EmuBQ76952(StaticSource([3300 + i for i in range(16)]), crc=True,
                     shunt_uohm=100, clock=clk)
    afe = BQ76952(emu, crc=True, cells=16, wait_us=clk.sleep_us)
    b = HwBoard(afe, None, afe_conf={"cells": 16})
    assert b.init()
    flags = bytearray(16)
    flags[1] = flags[5] = 1
    b.set_balance(flags)
    assert emu.cb_mask == (1 << 1) | (1 << 5)
    emu.drop_dm[0x9261] = 10 ** 6       # the chip never holds the new setup
    b.attach_backstop(Src())
    assert not b.afe_ok
    b.set_balance(bytearray(16))
    assert emu.cb_mask == 0
