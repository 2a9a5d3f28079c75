# Relays (precharge sequence, manual switches, K switch), buzzer, event log,
# fail-safe on exceptions, current calibration, command handling.
from bms import faults as F
from bms import params as P
from bms.buzzer import Buzzer
from bms.contactors import D_CLOSED, D_OPEN, D_PRECHARGE, RELAY_CHG, RELAY_DSG, RELAY_L2, RELAY_PRE
from bms.core import (ACCEPTED, CMD_CAL_CURRENT, CMD_CAL_ZERO, CMD_CLEAR_LOG, CMD_RESET_FAULTS,
                      CMD_SOC_SET, ILLEGAL, MODE_CHARGING, MODE_DISCHARGING, MODE_PROTECT,
                      PENDING)
from bms.eventlog import EV_EXCEPTION, EV_RELAY, EventLog
from bms.watchdog import EXC_QUIET_MS
from harness import Rig


def test_nothing_closes_before_first_data():
    r = Rig()
    r.board.fail_cells = 1000
    r.run(1000)
    s = r.bms.contactors.state
    assert not s[RELAY_CHG] and not s[RELAY_DSG] and not s[RELAY_PRE]
    assert not r.bms.running


def test_precharge_sequence_order_and_overlap():
    r = Rig()
    r.board.load_mv = 0
    r.run(600)
    c = r.bms.contactors
    assert c.dsg_state == D_PRECHARGE
    assert c.state[RELAY_PRE] and not c.state[RELAY_DSG] and c.state[RELAY_L2]
    r.board.load_mv = 16 * 3300 * 91 // 100  # above 90 % of the pack
    r.run(60)
    assert c.dsg_state == D_CLOSED
    assert c.state[RELAY_DSG] and c.state[RELAY_PRE]  # short overlap
    r.run(300)
    assert c.state[RELAY_DSG] and not c.state[RELAY_PRE]
    # The log shows precharge closing before discharge.
    ev = [(e[3], e[4]) for e in r.log.find(EV_RELAY)]
    assert ev.index((RELAY_PRE, 1)) < ev.index((RELAY_DSG, 1))


def test_precharge_timeout_latches_and_never_hot_closes():
    r = Rig()
    r.board.load_mv = 100  # a shorted or huge load never charges
    r.run(3000 + 600)
    c = r.bms.contactors
    assert r.bms.prot.active(F.PRECHARGE)
    assert not c.state[RELAY_DSG] and not c.state[RELAY_PRE]
    r.run(10000)
    assert not c.state[RELAY_DSG]  # no retry loop cooking the resistor
    assert c.state[RELAY_CHG]      # charging is still allowed


def _interrupted_precharges(r, n, on_ms, off_ms):
    """n precharge attempts into a load that never charges, each cut short
    by the discharge switch after on_ms; True once the fault has latched."""
    for _ in range(n):
        r.params.set(P.P_DSG_SWITCH, 1)
        r.run(on_ms)
        r.params.set(P.P_DSG_SWITCH, 0)
        r.run(off_ms)
        if r.bms.prot.active(F.PRECHARGE):
            return True
    return False


def _idle_into_a_load_that_never_charges():
    r = Rig()
    r.run(1000)
    r.params.set(P.P_DSG_SWITCH, 0)
    r.run(100)
    r.board.load_mv = 100
    return r


def test_interrupted_precharges_add_up_to_the_timeout():
    # docs/safety.md: precharge must reach precharge_pct within
    # precharge_timeout; attempts cut short add up until one completes or
    # the resistor has cooled for 60 s.  A discharge block flickering every
    # second must not restart the 3 s budget for ever.
    r = _idle_into_a_load_that_never_charges()
    assert _interrupted_precharges(r, 10, 1000, 1000)
    c = r.bms.contactors
    assert not c.state[RELAY_PRE] and not c.state[RELAY_DSG]
    r.params.set(P.P_DSG_SWITCH, 1)
    r.run(5000)
    assert not c.state[RELAY_PRE] and not c.state[RELAY_DSG]  # latched: no more attempts


def test_interrupted_precharges_after_cool_down_start_afresh():
    r = _idle_into_a_load_that_never_charges()
    assert not _interrupted_precharges(r, 6, 2000, 61000)
    # A completed precharge forgets the earlier interrupted ones too.
    assert not _interrupted_precharges(r, 1, 2000, 1000)
    r.board.load_mv = None
    r.params.set(P.P_DSG_SWITCH, 1)
    r.run(1000)
    assert r.bms.contactors.dsg_state == D_CLOSED
    r.params.set(P.P_DSG_SWITCH, 0)
    r.run(100)
    r.board.load_mv = 100
    assert not _interrupted_precharges(r, 1, 2000, 1000)
    assert not r.bms.prot.active(F.PRECHARGE)


def test_manual_switches_from_normal_page():
    r = Rig()
    r.run(1000)
    r.params.set(P.P_CHG_SWITCH, 0)
    r.run(100)
    assert not r.bms.contactors.state[RELAY_CHG]
    assert r.bms.contactors.state[RELAY_DSG]
    r.params.set(P.P_DSG_SWITCH, 0)
    r.run(100)
    assert not r.bms.contactors.state[RELAY_DSG]
    r.params.set_many([(P.P_CHG_SWITCH, 1), (P.P_DSG_SWITCH, 1)])
    r.run(600)
    assert r.bms.contactors.state[RELAY_CHG] and r.bms.contactors.state[RELAY_DSG]


def test_key_switch_controls_discharge_and_resets_latched():
    r = Rig(key_enable=1)
    r.run(1000)
    assert r.bms.contactors.state[RELAY_DSG]
    r.board.key_on = False
    r.run(100)
    assert not r.bms.contactors.state[RELAY_DSG]
    assert r.bms.contactors.state[RELAY_CHG]
    # A latched protection-level fault (precharge) is reset by cycling K off -> on.
    r.board.load_mv = 100
    r.board.key_on = True
    r.run(3600)
    assert r.bms.prot.active(F.PRECHARGE)
    r.board.load_mv = None
    r.board.key_on = False
    r.run(100)
    r.board.key_on = True
    r.run(100)
    assert not r.bms.prot.active(F.PRECHARGE)
    r.run(600)
    assert r.bms.contactors.state[RELAY_DSG]
    # A critical latch (short circuit) is not: it needs the authenticated reset.
    r.board.current_ma = -700000
    r.run(100)
    assert r.bms.prot.active(F.SHORT)
    r.board.current_ma = 0
    r.run(3000)
    r.board.key_on = False
    r.run(100)
    r.board.key_on = True
    r.run(600)
    assert r.bms.prot.active(F.SHORT)
    assert not r.bms.contactors.state[RELAY_DSG]
    assert r.bms.request(CMD_RESET_FAULTS) == ACCEPTED
    r.run(100)
    assert not r.bms.prot.active(F.SHORT)
    r.run(600)
    assert r.bms.contactors.state[RELAY_DSG]


def test_exception_in_cycle_opens_everything_and_loop_survives():
    r = Rig()
    r.run(1000)
    r.board.crash = True
    r.run(100)
    s = r.bms.contactors.state
    assert not (s[RELAY_CHG] or s[RELAY_DSG] or s[RELAY_L2] or s[RELAY_PRE])
    assert r.bms.exceptions > 0
    assert r.log.find(EV_EXCEPTION)
    r.board.crash = False
    r.run(EXC_QUIET_MS)   # a reset does not clear it while exceptions still come
    assert r.bms.prot.active(F.INTERNAL)  # latched until someone looks
    assert r.bms.sched.runs[0] > 0
    assert r.bms.request(CMD_RESET_FAULTS) == ACCEPTED
    r.run(1000)
    assert not r.bms.prot.active(F.INTERNAL)
    assert r.bms.contactors.state[RELAY_DSG]


def test_bus_errors_retry_once_then_stale():
    r = Rig()
    r.run(1000)
    r.board.fail_cells = 1  # one NACK: retried inside the same sweep
    r.run(500)
    assert r.bms.bus_errors == 1
    assert not r.bms.prot.active(F.CELL_STALE)


def test_requests_accept_pending_illegal():
    r = Rig()
    assert r.bms.request(99) == ILLEGAL
    assert r.bms.request(CMD_SOC_SET, 1001) == ILLEGAL
    assert r.bms.request(CMD_SOC_SET, 800) == ACCEPTED
    assert r.bms.request(CMD_CLEAR_LOG) == PENDING
    r.run(100)
    assert r.bms.soc.soc_pm == 800


def test_current_gain_calibration_from_true_value():
    r = Rig()
    r.run(500)
    r.board.current_ma = 2040  # the shunt reads 2 % high
    r.run(2000)
    assert r.bms.request(CMD_CAL_CURRENT, 2000) == ACCEPTED
    r.run(100)
    assert abs(r.bms.meas.current_ma - 2000) <= 2
    assert 9795 <= r.params[P.P_CUR_GAIN] <= 9810


def test_zero_offset_calibration():
    r = Rig()
    r.board.current_ma = 180
    r.run(2000)
    r.bms.request(CMD_CAL_ZERO)
    r.run(100)
    assert abs(r.bms.meas.current_ma) <= 1
    r.board.current_ma = 10180
    r.run(100)
    assert abs(r.bms.meas.current_ma - 10000) <= 2


def test_modes():
    r = Rig()
    r.run(1000)
    r.board.current_ma = 5000
    r.run(100)
    assert r.bms.mode == MODE_CHARGING
    r.board.current_ma = -5000
    r.run(100)
    assert r.bms.mode == MODE_DISCHARGING
    r.board.cells[0] = 3800
    r.run(6000)
    assert r.bms.mode == MODE_PROTECT


def test_buzzer_patterns_by_level():
    b = Buzzer()
    ons = []
    for t in range(0, 10000, 10):
        b.step(t, F.L_WARN, True)
        ons.append(b.on)
    assert 15 <= sum(ons) <= 25  # 100 ms every 5 s
    b2 = Buzzer()
    ons = []
    for t in range(0, 10000, 10):
        b2.step(t, F.L_CRIT, True)
        ons.append(b2.on)
    assert 450 <= sum(ons) <= 550  # half the time
    b3 = Buzzer()
    b3.step(0, F.L_CRIT, False)
    assert not b3.on


def test_event_log_ring_keeps_newest():
    log = EventLog(4)
    for i in range(10):
        log.append(i, 5, i, 0)
    assert len(log) == 4
    assert [log.get(i)[3] for i in range(4)] == [6, 7, 8, 9]
    assert log.get(0)[0] == 7  # sequence numbers keep counting
    assert [log.get(i)[0] for i in range(4)] == [7, 8, 9, 10]
    log.clear(20)              # the "cleared" record keeps the numbering going
    assert len(log) == 1 and log.get(0)[:3] == (11, 20, 9)
    log.append(21, 5, 0, 0)
    assert [log.get(i)[0] for i in range(2)] == [11, 12]
    got = []
    log2 = EventLog(4, sink=lambda *rec: got.append(rec))
    log2.append(1, 2, 3, 4)
    assert got == [(1, 1, 2, 3, 4)]


def test_sleep_and_wake_commands():
    from bms.core import CMD_SLEEP, CMD_WAKE
    r = Rig()
    r.run(1000)
    assert r.bms.request(CMD_SLEEP) == ACCEPTED
    r.run(100)
    s = r.bms.contactors.state
    assert not s[RELAY_CHG] and not s[RELAY_DSG]  # asleep: nothing flows
    assert r.bms.request(CMD_WAKE) == ACCEPTED
    r.run(700)
    assert s[RELAY_CHG] and s[RELAY_DSG]


def _relay_writes(r):
    """Every relay write from now on, with the fault records logged before it."""
    from bms.eventlog import EV_FAULT_SET
    seen = []
    real = r.board.set_relays

    def spy(states):
        seen.append((bytes(states), len(r.log.find(EV_FAULT_SET))))
        real(states)
    r.board.set_relays = spy
    r.bms.contactors.board = r.board
    return seen


def test_relays_switch_before_the_fault_is_logged():
    # The tick that sets a fault opens the relays first and writes the log
    # records after (each costs about 0.5 ms on an RP2040); the fault's
    # record keeps the tick's time and its trip value.
    from bms.eventlog import EV_FAULT_SET
    r = Rig()
    r.run(2000)
    assert r.relays[RELAY_DSG]
    seen = _relay_writes(r)
    r.board.current_ma = -(P.ParamSet(P.CHEM_LFP)[P.index("peak")] * 100 + 20000)
    assert r.run_until(lambda: not r.relays[RELAY_DSG], 3000) >= 0
    opened = [n for s, n in seen if not s[RELAY_DSG]]
    assert opened and opened[0] == 0          # the relay write came before any fault record
    rec = r.log.find(EV_FAULT_SET)
    assert rec and rec[0][1] == r.bms.prot.set_at[rec[0][3]]
    assert rec[0][4] == r.bms.prot.trip_value[rec[0][3]]


def test_relays_switch_before_a_recovery_path_retrip_is_logged():
    # docs/safety.md: the relays switch before the log records are written.
    # uv2's recovery path re-tripping (discharge current, the wrong way)
    # opens level 2 again: the write comes before the fault's record.
    from bms.eventlog import EV_FAULT_SET
    r = Rig()
    r.run(1000)
    for i in range(16):
        r.board.cells[i] = r.params[P.index("uv_rec")] + 100
    r.board.cells[7] = r.params[P.index("uv2")] - 20
    r.run(3000)
    assert r.bms.prot.active(F.UV2)
    r.bms.request(CMD_RESET_FAULTS)
    r.run(600)
    assert r.bms.prot.recovering(F.UV2) and r.relays[RELAY_L2]
    r.board.weld = 1 << RELAY_DSG          # so that discharge current can flow
    seen = _relay_writes(r)
    n0 = len(r.log.find(EV_FAULT_SET))
    r.board.current_ma = -2000
    assert r.run_until(lambda: not r.relays[RELAY_L2], 500) >= 0
    assert not r.bms.prot.recovering(F.UV2)
    opened = [n for s, n in seen if not s[RELAY_L2]]
    assert opened and opened[0] == n0, "the re-trip was logged before level 2 opened"
    rec = r.log.find(EV_FAULT_SET)
    assert rec[-1][3] == F.UV2 and rec[-1][1] == r.bms.prot.set_at[F.UV2]


def test_restart_command_keeps_every_relay_open_until_the_reset():
    # The restart command opens every relay, then the services poller saves
    # and resets the MCU; that poll may wait (flash writes wait for a quiet
    # PC port, up to 1 s).  Meanwhile no relay may close again: the core must
    # not switch the load back on for the moments before the reset (and the
    # precharge sequence must not start over under load).
    from bms.core import CMD_RESTART
    r = Rig()
    r.run(1000)
    assert r.relays[RELAY_DSG] and r.relays[RELAY_CHG]
    r.board.current_ma = -20000
    assert r.bms.request(CMD_RESTART) == ACCEPTED
    r.run(60)
    assert r.bms.restart_requested
    closed = []
    for _ in range(100):            # 1 s with the reset not yet done
        r.run(10)
        closed.append(r.relays[RELAY_DSG] or r.relays[RELAY_PRE] or r.relays[RELAY_CHG]
                      or r.relays[RELAY_L2])
    assert not any(closed)


def test_current_calibration_takes_the_sign_from_the_calibrated_reading():
    # docs/modbus.md, cal_current: "true current now flowing, mA (the sign is
    # taken from the measurement)".  A shunt whose raw zero sits at +1.5 A
    # (zero-calibrated: cur_offset -1500) reads a raw +500 mA while 1 A
    # discharges; the BMS shows -1 A.  Entering the multimeter's 1 A must
    # leave a correct gain where it is, not move it the wrong way.
    r = Rig()
    r.board.zero_error_ma = 1500
    r.run(2000)
    assert r.bms.request(CMD_CAL_ZERO) == ACCEPTED
    r.run(100)
    assert r.params[P.P_CUR_OFFSET] == -1500 and abs(r.bms.meas.current_ma) <= 1
    r.board.current_ma = -1000
    r.run(2000)
    assert abs(r.bms.meas.current_ma + 1000) <= 2
    for _ in range(3):          # the user repeats it: nothing should walk
        assert r.bms.request(CMD_CAL_CURRENT, 1000) == ACCEPTED
        r.run(1100)
        assert r.bms.cmd_status == 2, r.bms.cmd_reason   # done
        assert 9990 <= r.params[P.P_CUR_GAIN] <= 10010, r.params[P.P_CUR_GAIN]
        assert abs(r.bms.meas.current_ma + 1000) <= 2


def test_calibration_needs_a_current_reading_of_now():
    # A calibration uses the current reading of the moment it runs (docs/
    # modbus.md: cal_zero "no current must flow", cal_current "true current
    # now flowing").  With the shunt silent (current_stale, relays open) the
    # last average is from before: 3 A that flowed then.  A zero calibration
    # now must be refused ("no current reading"), not store -3 A as the zero.
    r = Rig()
    r.run(1000)
    r.board.current_ma = -3000
    r.run(2000)
    r.board.fail_current = 10 ** 6     # the shunt stops answering
    r.run(1500)
    assert r.bms.prot.active(F.CUR_STALE)
    r.board.current_ma = 0             # the load is off now
    for cmd in (CMD_CAL_ZERO, CMD_CAL_CURRENT):
        assert r.bms.request(cmd, 3000) == ACCEPTED
        r.run(100)
        assert r.bms.cmd_status == 3 and r.bms.cmd_reason == 4, (cmd, r.bms.cmd_status)
    assert r.params[P.P_CUR_OFFSET] == 0 and r.params[P.P_CUR_GAIN] == 10000
    # Back: a zero calibration on readings taken after the gap only.
    r.board.fail_current = 0
    r.run(30)
    assert r.bms.request(CMD_CAL_ZERO) == ACCEPTED
    r.run(100)
    assert r.bms.cmd_status == 3 and r.bms.cmd_reason == 4   # no full window yet
    r.run(1000)
    assert r.bms.request(CMD_CAL_ZERO) == ACCEPTED
    r.run(100)
    assert r.bms.cmd_status == 2 and r.params[P.P_CUR_OFFSET] == 0


def test_current_calibration_refuses_a_true_current_it_cannot_be():
    # docs/modbus.md, cal_current: the true current now flowing; the gain's
    # range is +-10 % (docs/parameters.md cur_gain).  A 0 (a form's default
    # field) or a value no gain in range can give (mA typed as A, a meter on
    # the wrong range) is refused with its reason and changes nothing: before,
    # each such command moved the gain 5 % toward its floor, every current
    # (over-current included) then read up to 10 % low.
    r = Rig()
    r.run(500)
    r.board.current_ma = -20000
    r.run(2000)
    for arg, reason in ((0, 2), (100, 2), (20, 2), (30000, 3), (2000, 3), (-14000, 3)):
        assert r.bms.request(CMD_CAL_CURRENT, arg) == ACCEPTED
        r.run(100)
        assert r.bms.cmd_status == 3 and r.bms.cmd_reason == reason, (arg, r.bms.cmd_reason)
        assert r.params[P.P_CUR_GAIN] == 10000 and r.params[P.P_CUR_OFFSET] == 0, arg
    assert r.bms.request(CMD_CAL_CURRENT, 20500) == ACCEPTED   # 2.5 %: in range
    r.run(100)
    assert r.bms.cmd_status == 2 and 10240 <= r.params[P.P_CUR_GAIN] <= 10260


def test_error_counts_stay_small_ints_and_exceptions_never_wrap_to_none():
    # README: never a big int on an RP2040.  A bus dead for months passes
    # 2**30 failed reads: the count wraps there.  The exception count also
    # says whether there were any (a reset is refused while they still
    # come): it stops at its top instead of wrapping to 0.
    r = Rig()
    r.run(1000)
    r.bms.bus_errors = 0x3FFFFFFF
    r.board.fail_current = 10 ** 9
    r.run(200)
    assert 0 < r.bms.bus_errors < 1000, r.bms.bus_errors
    r.board.fail_current = 0
    r.bms.exceptions = 0x3FFFFFFF
    r.board.crash = True
    r.run(200)
    assert r.bms.exceptions == 0x3FFFFFFF
