"""Command result, clock and event wall-time blocks over the Modbus server
(MicroPython-compatible).  Unix times are typed in as numbers checked
against a calendar, not computed from the firmware's epoch constant."""
from bms.core import CMD_CAL_ZERO, CMD_REASONS, CMD_SOC_SET, CMD_STATUS_NAMES
from bms.params import P_CUR_OFFSET
from bms.wallclock import WallClock
from comms.registers import A_CLOCK, A_CMD_RESULT, A_LOG_WALL, command_address
from modbus_rig import ModbusRig, exception_code

CS_DONE = CMD_STATUS_NAMES.index("done")
CS_REFUSED = CMD_STATUS_NAMES.index("refused")
CR_ZERO_LOAD = 1
assert CMD_REASONS[CR_ZERO_LOAD].startswith("current flowing")

# 2026-05-28T20:26:40Z
T_SET = 1780000000


def _result(rig):
    r = rig.read(A_CMD_RESULT, 6)
    v = (r[4] << 16) | r[5]
    if v & 0x80000000:
        v -= 1 << 32
    return r[0], r[1], r[2], r[3], v


def test_result_reports_done_with_value_and_refused_with_reason():
    rig = ModbusRig()
    rig.unlock()
    rig.run(1000)
    seq0 = _result(rig)[0]
    rig.write1(command_address("soc_set"), 420)
    rig.run(100)
    seq, cmd, st, why, val = _result(rig)
    assert (seq, cmd, st, why, val) == (seq0 + 1, CMD_SOC_SET, CS_DONE, 0, 420)
    # A zero calibration with 20 A flowing: accepted by the server, refused by the core.
    rig.board.current_ma = -20000
    rig.run(1500)
    resp = rig.write1(command_address("cal_zero"), 1)
    assert exception_code(resp, 6) is None
    rig.run(100)
    seq, cmd, st, why, val = _result(rig)
    assert (seq, cmd, st, why) == (seq0 + 2, CMD_CAL_ZERO, CS_REFUSED, CR_ZERO_LOAD)
    assert rig.params[P_CUR_OFFSET] == 0


def test_clock_round_trip_and_event_stamps():
    rig = ModbusRig()
    rig.run(200)
    assert rig.read(A_CLOCK, 4)[:3] == [0, 0, 0]
    assert exception_code(rig.write_n(A_CLOCK, [T_SET >> 16, T_SET & 0xFFFF]), 16) == 1  # locked
    rig.unlock()
    assert exception_code(rig.write_n(A_CLOCK, [T_SET >> 16, T_SET & 0xFFFF]), 16) is None
    r = rig.read(A_CLOCK, 4)
    assert ((r[0] << 16) | r[1]) == T_SET and r[2] == 1 and r[3] == 1
    rig.run(2500)
    r = rig.read(A_CLOCK, 2)
    assert ((r[0] << 16) | r[1]) == T_SET + 2
    # Events before the set carry no wall time; the next one carries the clock's.
    n0 = len(rig.log)
    rig.write1(command_address("soc_set"), 500)
    rig.run(100)
    n = len(rig.log)
    w = rig.read(A_LOG_WALL, 2 * n)
    assert w[0] == 0 and w[1] == 0
    last = (w[2 * (n - 1)] << 16) | w[2 * (n - 1) + 1]
    assert T_SET + 2 <= last <= T_SET + 3
    assert n > n0


def test_clock_refuses_times_before_2020_and_single_registers():
    rig = ModbusRig()
    rig.unlock()
    t = 1500000000   # 2017
    assert exception_code(rig.write_n(A_CLOCK, [t >> 16, t & 0xFFFF]), 16) == 3
    assert exception_code(rig.write1(A_CLOCK, 1), 6) == 2
    assert rig.read(A_CLOCK, 3)[2] == 0


def test_wall_clock_survives_tick_wraps():
    w = WallClock()
    period = 1 << 30
    now = period - 5000
    w.set(200000000, now)
    for _ in range(30):   # 30 days in hourly steps across two wraps
        for _h in range(24):
            now = (now + 3600000) % period
            w.tick(now)
    assert w.at(now) == 200000000 + 30 * 86400


def test_daily_clock_mark_in_the_event_log():
    from bms.eventlog import EV_CLOCK
    rig = ModbusRig()
    rig.run(200)
    day = 2339 * 86400                  # 2026-05-28T00:00:00Z since 2020
    rig.bms.set_time(day - 2)
    marks = rig.log.find(EV_CLOCK)
    assert len(marks) == 1 and marks[0][3] == day - 2 and marks[0][4] == 0
    rig.run(3500)                       # past midnight: one daily mark
    marks = rig.log.find(EV_CLOCK)
    assert len(marks) == 2 and marks[1][4] == 1 and day <= marks[1][3] <= day + 2
    rig.run(2000)
    assert len(rig.log.find(EV_CLOCK)) == 2
