"""The Bms object: wires one control cycle together.

    drivers read buses -> Measurements -> protection / SOC / balancing / heater
    -> contactors, balance flags, buzzer -> comms read the snapshot

Three scheduler tasks on the injected clock:
  fast  (50 ms)  current, protection, contactors, buzzer, coulomb counting
  cells (250 ms) cell voltages and temperatures, balancing (duty-cycled per sweep)
  slow  (1 s)    heater, SOC calibration and estimator, derating (limits)

The board object is the only way out to hardware (duck-typed, see
``boards/`` and ``tools/sim``):
  max_cells, temp_roles           sizes of the snapshot
  read_current(meas, now)         fills current_ma (raw, uncalibrated), and
                                  current2_ma/current2_ok if it has a second current
                                  reading; boards without read_volts fill pack_mv and
                                  load_mv/load_ok here too; raises OSError on bus failure;
                                  current_sat True for a reading clipped at the sensor's
                                  full scale (the calibration never shrinks it)
  read_volts(meas, now) optional  fills pack_mv and load_mv/load_ok: called at every
                                  cell sweep, and at every fast tick while precharging
  read_cells(meas, now)           fills cell_mv/cell_ok/cell_ts for n_cells
  read_temps(meas, now)           fills temp_dc/temp_status
                                  (readings that may not fit the arrays go through
                                  meas.put_cell / meas.put_temp: out of range is
                                  invalid, never truncated)
  set_relays(states)              bytearray indexed by contactors.RELAY_*
  set_balance(flags)              bytearray, one 0/1 per cell
  set_buzzer(on)
  key()                           ON/OFF switch input (True = on)
  afe_fault()                     non-zero if the AFE tripped in hardware
  balance_no_adjacent             True if the AFE forbids adjacent bleeders
  relay_faults()        optional  bit mask (1 << RELAY_*) of relays whose readback
                                  disagrees with their command
  charger_present()     optional  a charger is connected (charge-port sense)
  voltage_response      optional  False on a scripted test board whose cell
                                  voltages do not respond to the current
                                  (disables the voltage-response check)

Safety rules applied here (docs/safety.md):
* Nothing closes before the first complete measurement: level 2 included.
  Any fault whose reaction includes level 2 opens it in every state.
* A relay that fails to open escalates: a relay commanded open while current
  of WELD_MA or more still flows in its direction (charge current with the
  charge relay open; discharge current with discharge and precharge open),
  or a relay whose readback disagrees, raises ``relay_weld``, which opens
  level 2 after its 500 ms delay.
* Latched faults come back from the settings store (``latched``) before
  the first cycle.  Cycling the K switch resets only latches below
  L_CRIT; ov2, uv2, short, internal, afe and relay_weld need the
  authenticated reset command.
* Currents outside +-CURRENT_MA_MAX are invalid readings (current_stale),
  the current is checked against a second source and against the cell
  voltages' response (bms.plausible: current_sensor), and voltage on cells
  beyond ``cell_count`` (pack voltage above the cell sum by more than
  UNMON_MV + UNMON_PER_CELL_MV per cell, on sweeps with a steady current,
  for UNMON_MS) counts as missing cell data (cell_stale).

Comms never touch the board: they change parameters (validated) or call
``request(cmd, arg)``, which the fast task applies at its next run.  Any
exception inside a cycle opens every relay, latches the INTERNAL fault and is
logged; the loop keeps running so the state stays observable.
"""
from micropython import const

from bms import faults as F
from bms.balancing import Balancer
from bms.buzzer import Buzzer
from bms.contactors import D_PRECHARGE, RELAY_CHG, RELAY_DSG, RELAY_PRE, Contactors
from bms.derating import Derating
from bms.eventlog import (EV_BOOT, EV_CAL, EV_CLOCK, EV_COMMAND, EV_EXCEPTION, EV_PARAM,
                          EV_SOC_CAL, EventLog)
from bms.heater import Heater
from bms.measurements import (CURRENT_MA_MAX, ROLE_BALANCE, ROLE_CELL, ROLE_POWER,
                              Measurements)
from bms.params import (CUR_GAIN_STEP, P_BUZZER, P_CELL_COUNT, P_CHEMISTRY, P_CHG_SWITCH,
                        P_CUR_GAIN, P_CUR_OFFSET, P_DSG_SWITCH, P_FULL_CHG_DAYS,
                        P_KEY_ENABLE, P_PRECHARGE_PCT, P_PRECHARGE_TIMEOUT, TABLE,
                        ParamError)
from bms.plausible import CurrentCheck
from bms.protection import NO_ONSET, Protection
from bms.scheduler import Scheduler
from bms.soc import Soc
from bms.ticks import AGE_CAP_MS, cap_age, ticks_add, ticks_diff
from bms.wallclock import WallClock
from bms.watchdog import EXC_QUIET_MS

FAST_MS = const(50)
# port_service's levels (see Core.__init__)
LOOK_READ = const(0)
LOOK_SMALL = const(1)
LOOK_BUILD = const(2)
CELL_MS = const(250)
_SLOW_MS = const(1000)
_FAST_PHASE_MS = const(25)   # FAST_MS / 2: between two cell sweeps (CELL_MS is 5 ticks)
_SLOW_PHASE_MS = const(30)   # right after a fast tick
WELD_MA = const(2000)        # current through a relay commanded open: it did not open
UNMON_MV = const(800)        # pack voltage above the cell sum: an unmonitored cell ...
UNMON_PER_CELL_MV = const(5)  # ... beyond this margin plus this per monitored cell
UNMON_MS = const(5000)       # ... held this long, at rest
_UNMON_REST_MA = const(2000)
CHARGER_MA = const(500)      # charge current this high: a charger is there
CHARGER_HOLD_MS = const(10000)
_CHARGER_MV = const(200)     # load side this far above the pack (at least 1 %): a charger

# Command ids (Modbus / BLE / display all end here).
CMD_RESET_FAULTS = const(1)
CMD_SOC_SET = const(2)        # arg: per mille
CMD_CAL_CURRENT = const(3)    # arg: true current in mA (sign ignored)
CMD_CAL_ZERO = const(4)
CMD_RESTART = const(5)
_CMD_DEFAULTS = const(6)       # arg: chemistry
CMD_CLEAR_LOG = const(7)
CMD_SLEEP = const(8)
CMD_WAKE = const(9)
CMD_OCV_FORGET = const(10)     # forget the learned OCV points (new or rebuilt cells)
CMD_NAMES = ("", "reset_faults", "soc_set", "cal_current", "cal_zero", "restart",
             "defaults", "clear_log", "sleep", "wake", "ocv_forget")

ACCEPTED = const(0)
PENDING = const(1)
ILLEGAL = const(2)

# What became of the last command (``cmd_status``): a client that queued one
# reads this back, so a command the core refused is never reported as done.
_CS_NONE = const(0)
_CS_PENDING = const(1)
_CS_DONE = const(2)
_CS_REFUSED = const(3)
CMD_STATUS_NAMES = ("none", "pending", "done", "refused")
# Refusal reasons (``cmd_reason``); 0 = none.
_CR_ZERO_LOAD = const(1)
_CR_CAL_SMALL = const(2)
_CR_CAL_RANGE = const(3)
_CR_NO_DATA = const(4)
_CR_CHARGER = const(5)
CMD_REASONS = ("", "current flowing: a zero calibration needs no current (|I| < 5 A raw "
               "and within the offset range)",
               "current too small to calibrate (at least 0.5 A away from zero)",
               "calibration result outside the parameter range",
               "no current reading (a whole second of readings up to now)",
               "a charger is connected: it would wake the BMS at once (the charge relay "
               "would open under its current and close again)")

# Operating modes shown on the monitor page.
_MODE_STANDBY = const(0)
MODE_CHARGING = const(1)
MODE_DISCHARGING = const(2)
MODE_PROTECT = const(3)
MODE_BOOT = const(4)
MODE_NAMES = ("standby", "charging", "discharging", "protect", "boot")

_MODE_CURRENT_MA = const(300)
_COUNT_MAX_MS = const(2500)  # a longer gap between current samples counts this long
_COUNT_PIECE_MS = const(250)  # see the coulomb count in step()
_SINCE_FULL_MAX_S = const(400 * 86400)  # past every full_chg_days
_AVG_SAMPLES = const(20)  # fast ticks per calibration-average window (1 s)
_CAL_MIN_MA = const(500)
_ZERO_MAX_MA = const(5000)


class Bms:
    def __init__(self, board, params, clock, log=None, soc_pm=500, latched=None):
        self.board = board
        self.params = params
        self.clock = clock
        self.log = log if log is not None else EventLog()
        self.wall = WallClock()
        self.log.wall = self.wall
        self._clock_day = -1    # day of the last EV_CLOCK mark
        # Full-charge request (P_FULL_CHG_DAYS): operating time since the last
        # full anchor, counted since boot.
        self.since_full_s = 0
        self.full_charge_request = False
        self._full_n = 0
        self._full_ms = 0
        self._full_t = None
        self.meas = Measurements(board.max_cells, board.temp_roles)
        self.meas.set_cell_count(params[P_CELL_COUNT])
        self.prot = Protection(params, self.log)
        self.prot.defer_log = True   # relays first (see _fast)
        self.contactors = Contactors(board, self.log)
        self.ccheck = CurrentCheck(params)
        self.buzzer = Buzzer()
        self.soc = Soc(params, soc_pm)
        # The cell sweep's period: CELL_MS, or the board's own (a CAN master
        # whose modules report once a second sweeps every 500 ms).
        self.cell_ms = getattr(board, "cell_ms", CELL_MS)
        self.balancer = Balancer(params, board.max_cells,
                                 getattr(board, "balance_no_adjacent", True), self.cell_ms)
        self.heater = Heater(params)
        self.derating = Derating(params, self)
        self.limits = self.derating  # CCL/DCL/CVL/DVL for the inverter and charger
        self.sched = Scheduler(clock)
        # Phases: the cell sweep at 0 (so the first fast tick has data), the
        # fast ticks half a period later, the slow task just after one.  The
        # scheduler is cooperative, so a task due together with another waits
        # for it: apart, a fast tick never queues behind the cell sweep
        # (8 ms on an RP2040) or the slow task (12 ms), and the protection's
        # reaction time keeps to delay + one tick (docs/safety.md).
        self.sched.add(self._cells, self.cell_ms)
        self._fast_i = self.sched.add(self._fast, FAST_MS, _FAST_PHASE_MS)
        self.sched.add(self._slow, _SLOW_MS, _SLOW_PHASE_MS)
        # Bound methods made once: `board.read_x` in the loop allocates one
        # method object per call on MicroPython.
        self._rd_current = board.read_current
        # Boards that read the pack/load voltages apart from the current: at
        # the cell sweep, and at every fast tick only while precharging.
        self._rd_volts = getattr(board, "read_volts", None)
        # Buses that must be served often (a CAN master's two RX buffers, a
        # Modbus reply due at the end of its t3.5) get a call between the
        # steps of the cell sweep and around the SOC estimator: ``service``,
        # the board's own (MasterBoard) unless the app sets one.
        self.service = getattr(board, "service", None)
        # The PC port alone, between the steps of the fast task (set by the
        # app): a request that ends while the fast task runs is read there,
        # so its t3.5 counts from within ~1 ms of its end, not from the end
        # of the task.  A few tens of us; never the CAN protocol's work.
        # ``port_service(build)``: LOOK_READ (0) reads and sends only,
        # LOOK_SMALL (1, the fast task's looks but its last) may also build
        # the reply of a small read, LOOK_BUILD (2, the fast task's last look
        # and the long tasks' looks) that of any read.
        self.port_service = None
        # Inside one board read too, between two of its bus transactions
        # (the AFE's cell block and its fault status, the NTCs and the AFE's
        # temperatures): each read is 2-4 ms on an RP2040 (emulated).
        if hasattr(board, "between"):
            board.between = self._between
        self._rd_cells = board.read_cells
        self._rd_temps = board.read_temps
        self._rd_relays = getattr(board, "relay_faults", None)
        self._rd_charger = getattr(board, "charger_present", None)
        # A master's modules stop sending while it sleeps (SYNC sleep flag):
        # ms it gives them to answer after the wake, or None.
        self._wake_ms = getattr(board, "wake_ms", None)
        self._v_response = getattr(board, "voltage_response", True)
        self._exc_at = 0
        self._cur_good = 0       # last in-range calibrated current
        self._weld_i = False     # the current's weld verdict, from the last good reading
        # The shunt monitor's over-current comparator (bms.protection "Onset"):
        # boards that have one give it as alert_in (on / at, gpio.Alert) and
        # program its limits (set_current_alert).
        self._alert = getattr(board, "alert_in", None)
        if self._alert is not None:
            self._alert.use_clock(clock.ticks_ms)
        self._alert_pver = -1
        self.bad_readings = 0    # out-of-range readings refused
        self._unmon_ms = 0
        self._unmon_ma = 0          # the current at the previous sweep
        self.unmonitored = False
        self._chg_at = 0
        self._chg_seen = False
        self.charger_hint_at = None  # comms (special charger, inverter) saw a charger
        self.current_raw_ma = 0
        self.current_avg_raw = 0
        self._avg_sum = 0
        self._avg_n = 0
        self._avg_ok = False     # current_avg_raw is a window of readings up to now
        self.bus_errors = 0
        self.exceptions = 0
        self.last_exception = None
        self.mode = MODE_BOOT
        self.running = False  # False until the first complete measurement
        self._cmd = 0
        self._cmd_arg = 0
        self.cmd_seq = 0        # commands finished (done or refused), wraps at 16 bits
        self.cmd_last = 0       # id of the last command queued
        self.cmd_status = _CS_NONE
        self.cmd_reason = 0
        self.cmd_value = 0      # its result: new gain, offset, SOC ...
        self.clear_plog_requested = False
        self._key_prev = True
        self._last_fast = 0
        self._fast_seen = False
        self._ov1_prev = False
        self._uv1_prev = False
        self.restart_requested = False
        self.sleep_requested = False
        self.waking = False   # asleep or just woken, the modules' data not back yet
        self._woke_at = 0
        self.inhibit = 0      # reaction bits held by a maintenance task (slave firmware update)
        params.listener = self._param_changed
        now = clock.ticks_ms()
        self.log.append(now, EV_BOOT, 0, 0)
        if latched:
            self.prot.restore(latched, now)

    # ---- public -------------------------------------------------------
    def step(self):
        """Run whatever tasks are due; never raises."""
        try:
            return self.sched.run_due()
        except Exception as e:  # noqa: BLE001 - fail-safe boundary
            self._fail(e)
            return 0

    def request(self, cmd, arg=0):
        """Queue a command for the next fast tick: ACCEPTED, PENDING or ILLEGAL."""
        if cmd < CMD_RESET_FAULTS or cmd > CMD_OCV_FORGET:
            return ILLEGAL
        if cmd == CMD_SOC_SET and (arg < 0 or arg > 1000):
            return ILLEGAL
        if cmd == _CMD_DEFAULTS and (arg < 0 or arg > 3):
            return ILLEGAL
        if self._cmd:
            return PENDING
        self._cmd = cmd
        self._cmd_arg = arg
        self.cmd_last = cmd
        self.cmd_status = _CS_PENDING
        self.cmd_reason = 0
        self.cmd_value = 0
        return ACCEPTED

    @property
    def cmd_pending(self):
        return self._cmd != 0

    def fast_room_ms(self):
        """ms until the fast task's next run, an extra one included (bms.services
        starts flash writes only with room before it: a write must not hold
        the tick that sets an over-current at its delay)."""
        return self.sched.ms_to(self._fast_i)

    # ---- tasks --------------------------------------------------------
    def _fast(self, now):
        m = self.meas
        b = self.board
        dt = ticks_diff(now, self._last_fast) if self._fast_seen else 0
        self._last_fast = now
        self._fast_seen = True
        cur_ok = self._read(self._rd_current, now)
        if self._rd_volts is not None and self.contactors.dsg_state == D_PRECHARGE:
            self._read(self._rd_volts, now)
        ps = self.port_service
        if ps is not None:
            # A small read's reply (10 registers: 0.4-1 ms on an RP2040,
            # emulated) may be built at any look of this task, so that its
            # timed poll sends it at its t3.5 inside the task: built at the
            # task's last look it went out 1-2 ms late.  The task's time is
            # the same (the build is done once either way); the relays
            # switch that much later in the rare tick that has a request
            # (the reaction goals leave 40 ms).
            ps(LOOK_SMALL)
        if cur_ok and not -CURRENT_MA_MAX <= m.current_ma <= CURRENT_MA_MAX:
            # An impossible reading is no reading: the last good value holds,
            # current_stale follows if it goes on.
            m.current_ma = self._cur_good
            self.bad_readings += 1
            cur_ok = False
        if m.current2_ok and not -CURRENT_MA_MAX <= m.current2_ma <= CURRENT_MA_MAX:
            m.current2_ok = False
        if cur_ok:
            raw = m.current_ma
            self.current_raw_ma = raw
            # Exact mean over 1 s windows for calibration (an integer IIR
            # would keep a bias of up to its shift factor in mA).
            self._avg_sum += raw
            self._avg_n += 1
            if self._avg_n >= _AVG_SAMPLES:
                self.current_avg_raw = self._avg_sum // self._avg_n
                self._avg_sum = 0
                self._avg_n = 0
                self._avg_ok = True
            i = self._calibrate(raw)
            if m.current_sat and (i < raw if raw > 0 else i > raw):
                # A clipped reading is a lower bound on the magnitude: a gain
                # below 1 must not pull it under a limit it may be beyond
                # (params.current_rule keeps every limit within full scale).
                i = raw
            m.current_ma = i
            self._cur_good = i
            m.current_ts = now
            m.current_seen = True
            self.ccheck.fast(m)
            if i >= CHARGER_MA:
                self._chg_at = now
                self._chg_seen = True
        else:
            # No reading: the average is of the past.  A calibration waits
            # for a whole window of readings taken after the gap.
            self._avg_sum = 0
            self._avg_n = 0
            self._avg_ok = False
        prot = self.prot
        cur_fresh = m.current_fresh(now)   # this tick's reading: the counter below asks too
        prot.set_flag(F.SIG_CUR_STALE, not cur_fresh)
        if self._wake_ms is not None:
            self._waking(m, now)
        if not self.waking:
            # (a sleeping master's silent modules: the flag holds, see _waking)
            prot.set_flag(F.SIG_CELL_STALE, not m.cells_fresh(now) or m.bad_cells > 0
                          or self.unmonitored)
        t_stale = not m.temps_fresh(now)
        prot.set_flag(F.SIG_T_SENSOR, t_stale
                      or m.bad_temps[ROLE_POWER] > 0 or m.bad_temps[ROLE_CELL] > 0)
        prot.set_flag(F.SIG_CUR_PLAUS, self.ccheck.second_bad or self.ccheck.response_bad)
        # A relay commanded open (at the previous tick, before this reading)
        # that still carries current in its direction did not open.
        # No current reading is no verdict: the last one holds (a pending
        # weld must not be forgotten because the shunt stopped answering).
        cs = self.contactors.state
        if cur_ok:
            i = m.current_ma
            self._weld_i = (i >= WELD_MA and not cs[RELAY_CHG]) or \
                (i <= -WELD_MA and not cs[RELAY_DSG] and not cs[RELAY_PRE])
        weld = self._weld_i
        rf = self._rd_relays
        if rf is not None and rf():
            weld = True
        prot.set_flag(F.SIG_RELAY, weld)
        # Stale temperatures are no balance temperature either: bleeding heats
        # the balance resistors, it must not go on while they are not read.
        prot.set_flag(F.SIG_BAL_SENSOR, t_stale or m.bad_temps[ROLE_BALANCE] > 0)
        prot.set_flag(F.SIG_PRECHARGE, self.contactors.precharge_failed)
        # The chip latches its own trip until cleared; the fault follows it.
        prot.set_flag(F.SIG_AFE, b.afe_fault() != 0)
        if ps is not None:
            ps(LOOK_SMALL)

        p = self.params
        key = b.key()
        if p[P_KEY_ENABLE] and key and not self._key_prev:
            self._reset_faults(now, F.L_PROT)  # K switch cycled off -> on: not the critical latches
        self._key_prev = key

        if self._cmd:
            self._run_command(now)

        if self._alert is not None:
            self._alert_onset(prot, m, cur_ok)
        block = prot.step(m, now) | self.inhibit
        if self.waking:
            block |= F.R_CHG | F.R_DSG | F.R_BAL | F.R_HEAT   # no data since the sleep
        if ps is not None:
            ps(LOOK_SMALL)
        if prot.due_ms < FAST_MS:
            # A pending fault's delay ends before the next tick: a tick then.
            self.sched.run_at(self._fast_i, ticks_add(now, prot.due_ms))
        if not self.running and m.cells_seen and m.current_seen and m.temps_seen:
            self.running = True
        if not self.running:
            block |= F.R_CHG | F.R_DSG | F.R_L2 | F.R_BAL | F.R_HEAT  # nothing closes before data
        if self.restart_requested:
            block |= F.R_CHG | F.R_DSG | F.R_L2 | F.R_HEAT  # restarting: open until the reset
        if self.heater.cold_check(m, now):
            block |= F.R_CHG  # cold: no charging until the pack is warm enough
        dsg_req = p[P_DSG_SWITCH] and (key or not p[P_KEY_ENABLE]) and not self.sleep_requested
        chg_req = p[P_CHG_SWITCH] and not self.sleep_requested
        self.contactors.step(now, block, chg_req, dsg_req, self.heater.on,
                             m.pack_mv if m.pack_mv else m.sum_mv, m.load_mv, m.load_ok,
                             p[P_PRECHARGE_PCT], p[P_PRECHARGE_TIMEOUT])
        if prot._nlogq:
            prot.flush_log(now)   # the fault-set records, now that the relays have switched
        if self.buzzer.step(now, prot.level, p[P_BUZZER]):
            b.set_buzzer(self.buzzer.on)
        if dt > 0 and cur_fresh:
            # The whole time since the last sample: asleep a pass is 1 s of
            # lightsleep plus the pass (docs/power_lease_clock.md); only a
            # stalled loop's gap is bounded.  A reading held while the sensor
            # does not answer counts for the stale time at most (the relays
            # carry it until current_stale opens them), never the frozen
            # value for as long as it is dead.  In pieces of at most 250 ms,
            # so current x time stays a small int up to 4 kA (the shunt's
            # full scale may exceed 1 kA).
            if dt > _COUNT_MAX_MS:
                dt = _COUNT_MAX_MS
            soc = self.soc
            i = m.current_ma
            while dt > _COUNT_PIECE_MS:
                soc.integrate(i, _COUNT_PIECE_MS)
                dt -= _COUNT_PIECE_MS
            soc.integrate(i, dt)
        self._update_mode()
        if ps is not None:
            # Last, with the protection's work done (relays switched, faults
            # logged): a request that ended since the look above is read
            # here, and any read's reply is built (the looks above build a
            # small read's only).  Built after the task instead, it went out 0.5-1.5 ms
            # after its t3.5 on an RP2040 (emulated); here it costs the task
            # the build, 0.1-1 ms, once per request.
            ps(LOOK_BUILD)

    def _cells(self, now):
        m = self.meas
        svc = self.service
        if svc is not None:
            # First: the sweep often runs right after the fast task; a
            # request read at its last look is built here, not after the
            # AFE's first transaction (2.7 ms on an RP2040).
            svc()
        n = self.params[P_CELL_COUNT]
        if n != m.n_cells:
            m.set_cell_count(n)
        if self._rd_volts is not None:
            self._read(self._rd_volts, now)
        if self._read(self._rd_cells, now):
            if svc is not None:
                svc()
            m.update_cell_stats()
            m.cells_ts = now
            m.cells_seen = True
            if self._v_response:
                self.ccheck.cells(m, now, not self.balancer._on)
            self._unmonitored(m)
        if svc is not None:
            svc()
        if self._read(self._rd_temps, now):
            m.update_temp_stats()
            m.temps_ts = now
            m.temps_seen = True
        if svc is not None:
            svc()
        bal = self.balancer
        # A cell-difference fault holds the charge relay open, so balancing
        # that waits for charge current could never clear it: let it run at rest.
        if bal.step(m, self.prot.reaction if self.running else F.R_BAL | F.R_HEAT,
                    self.prot.active(F.DIFF)):
            self.board.set_balance(bal.flags)

    def _between(self):
        svc = self.service
        if svc is not None:
            svc()

    def _unmonitored(self, m):
        """Voltage on inputs beyond ``cell_count``: the pack voltage exceeds the
        sum of the monitored cells.  Checked on every sweep whose current is
        steady (within _UNMON_REST_MA of the previous sweep's: at rest, or a
        steady charge or discharge), where both agree: the stack and the cells
        measure the same taps, so a steady current's drops are in both; a
        sweep inside a current step (the two read at different instants) gives
        no verdict.  At rest only, a charger pushing from boot left it without
        a verdict for the whole charge."""
        n = m.n_cells
        i = m.current_ma
        di = i - self._unmon_ma
        self._unmon_ma = i
        if m.bad_cells or m.pack_mv <= 0 or di > _UNMON_REST_MA or di < -_UNMON_REST_MA:
            return  # no verdict: the last one holds
        if m.pack_mv - m.sum_mv > UNMON_MV + UNMON_PER_CELL_MV * n:
            self._unmon_ms += self.cell_ms
            if self._unmon_ms >= UNMON_MS:
                self._unmon_ms = UNMON_MS
                self.unmonitored = True
        else:
            self._unmon_ms = 0
            self.unmonitored = False

    def _waking(self, m, now):
        """A master's sleep (docs/can_internal.md, "The master's sleep"): its
        modules are silent on request, so the missing cell data is no fault
        (the cell_stale flag holds its state), but nothing closes, bleeds or
        heats on it: asleep, and after the wake until every cell is valid
        again or the modules' time to answer (``wake_ms``) has passed, when
        the usual rules take over (a silent module is lost: comm)."""
        if self.sleep_requested:
            self.waking = True
            self._woke_at = now
        elif self.waking and ((m.cells_seen and m.bad_cells == 0
                               and ticks_diff(m.cells_ts, self._woke_at) > 0)
                              or ticks_diff(now, self._woke_at) > self._wake_ms()):
            self.waking = False

    def charger_present(self, now):
        """A charger is connected: board sense, load side above the pack with the
        discharge path open, charge current within CHARGER_HOLD_MS, or a comms hint."""
        f = self._rd_charger
        if f is not None and f():
            return True
        m = self.meas
        pk = m.pack_mv
        if m.load_ok and pk > 0 and not self.contactors.state[RELAY_DSG]:
            margin = pk // 100
            if margin < _CHARGER_MV:
                margin = _CHARGER_MV
            if m.load_mv >= pk + margin:
                return True
        if self._chg_seen and ticks_diff(now, self._chg_at) < CHARGER_HOLD_MS:
            return True
        t = self.charger_hint_at
        return t is not None and ticks_diff(now, t) < CHARGER_HOLD_MS

    def _slow(self, now):
        m = self.meas
        prot = self.prot
        # Tick differences wrap after 6.2 days: a sensor dead that long must
        # stay stale, and a charge current or charger hint that old must not
        # read as recent again.
        m.cap_ages(now)
        prot.expire_retries(now)
        if self.exceptions:
            # the last exception's time too: a reset a week later must not
            # read it as recent and be refused (bms.watchdog's rule)
            self._exc_at = cap_age(now, self._exc_at)
        if self._chg_seen and ticks_diff(now, self._chg_at) >= CHARGER_HOLD_MS:
            self._chg_seen = False
        t = self.charger_hint_at
        if t is not None and ticks_diff(now, t) >= CHARGER_HOLD_MS:
            self.charger_hint_at = None
        block = prot.reaction if self.running else F.R_BAL | F.R_HEAT
        h = self.heater
        # "Heat during charging" only while a charger is there (never from the
        # pack just because the charge relay is closed).
        # Readings that stopped are none: the heater never heats blind.
        h.step(m, bool(self.params[P_CHG_SWITCH]) and self.charger_present(now),
               m.current_ma < -_MODE_CURRENT_MA, now, block,
               m.temps_fresh(now), m.cells_fresh(now))
        ov1 = prot.active(F.OV1)
        uv1 = prot.active(F.UV1)
        if ov1 and not self._ov1_prev:
            self.soc.calibrate_full()
            self.log.append(now, EV_SOC_CAL, 1000, 0)
        if uv1 and not self._uv1_prev:
            self.soc.calibrate_empty()
            self.log.append(now, EV_SOC_CAL, 0, 0)
        self._ov1_prev = ov1
        self._uv1_prev = uv1
        svc = self.service
        if svc is not None:
            svc()
        if self.running:
            if m.cells_fresh(now) and m.current_fresh(now):
                self.soc.service = svc
                self.soc.estimate(m, now)
            else:
                # A sensor that stopped answering leaves its last reading
                # in the snapshot: no update on it (a frozen loaded voltage
                # at rest, a frozen current beside rested cells).
                self.soc.pause()
        if svc is not None:
            svc()
        self._full_step(now)
        self.derating.update(now)
        w = self.wall
        w.tick(now)
        if w.base_s > 0:
            s = w.at(now)
            if s // 86400 != self._clock_day:
                self._clock_day = s // 86400
                self.log.append(now, EV_CLOCK, s, 1)

    def _full_step(self, now):
        """Operating time since the last full anchor (OV1 or a CV-tail end of
        charge); past ``full_chg_days`` the inverter is asked for a full charge
        (comms.inverter_can: 0x35C bit 3) until one anchors SOC again."""
        n = self.soc.full_anchors
        if n != self._full_n:
            self._full_n = n
            self.since_full_s = 0
            self._full_ms = 0
        t = self._full_t
        self._full_t = now
        if t is not None and self.since_full_s < _SINCE_FULL_MAX_S:
            d = ticks_diff(now, t)
            if d > 0:
                if d > AGE_CAP_MS:
                    d = AGE_CAP_MS      # a stalled loop, not operation
                ms = self._full_ms + d
                self.since_full_s += ms // 1000
                self._full_ms = ms % 1000
        days = self.params[P_FULL_CHG_DAYS]
        self.full_charge_request = days > 0 and self.since_full_s >= days * 86400

    def set_time(self, s2020):
        """Set the wall clock (seconds since 2020-01-01 UTC) and the board's RTC if it has one."""
        now = self.clock.ticks_ms()
        self.wall.set(s2020, now)
        self._clock_day = s2020 // 86400
        self.log.append(now, EV_CLOCK, s2020, 0)
        rtc = getattr(self.board, "set_rtc", None)
        if rtc is not None:
            try:
                rtc(s2020)
            except OSError:
                self.bus_errors = (self.bus_errors + 1) & 0x3FFFFFFF

    # ---- helpers ------------------------------------------------------
    def _read(self, fn, now):
        """One bus transaction with one retry; False if both failed.

        A driver that raises anything else has a bug: the fail-safe acts
        (every relay open, ``internal`` latched) and the read counts as
        failed, but the cycle goes on, so the protection keeps evaluating
        the other readings (a broken current driver must not blind the
        cell protections)."""
        for _ in range(2):
            try:
                fn(self.meas, now)
                return True
            except OSError:
                self.bus_errors = (self.bus_errors + 1) & 0x3FFFFFFF
            except Exception as e:  # noqa: BLE001 - fail-safe boundary
                self._fail(e)
                return False
        return False

    def _alert_onset(self, prot, m, cur_ok):
        """The comparator's state for this step; its limits after a parameter
        change: the raw shunt currents at which the calibrated reading
        reaches the charge / discharge over-current thresholds (magnitudes
        rounded up: the alert asserts only at or above a threshold)."""
        p = self.params
        if self._alert_pver != p.version:
            # Until the chip has the new limits no edge counts.
            prot.on_thr[F.SIG_CHG_I] = NO_ONSET
            prot.on_thr[F.SIG_DSG_I] = NO_ONSET
            chg = F.spec_value(F.TABLE[F.CHG_OC][F.F_THR], p.values)
            dsg = F.spec_value(F.TABLE[F.DSG_OC][F.F_THR], p.values)
            try:
                if not self.board.set_current_alert(self._uncalibrate(chg),
                                                    self._uncalibrate(-dsg)):
                    self._alert = None
                    return
                self._alert_pver = p.version
                prot.on_thr[F.SIG_CHG_I] = chg
                prot.on_thr[F.SIG_DSG_I] = dsg
            except OSError:
                # tried again at the next tick
                self.bus_errors = (self.bus_errors + 1) & 0x3FFFFFFF
        a = self._alert
        a.refresh()
        on = cur_ok and a.on
        i = m.current_ma
        prot.on_ok[F.SIG_CHG_I] = 1 if (on and i > 0) else 0
        prot.on_ok[F.SIG_DSG_I] = 1 if (on and i < 0) else 0
        prot.on_at[F.SIG_CHG_I] = a.at
        prot.on_at[F.SIG_DSG_I] = a.at

    def _uncalibrate(self, ma):
        """The raw reading that ``_calibrate`` turns into ``ma``, its
        magnitude rounded up (not on the hot path: parameter changes only)."""
        p = self.params
        g = p[P_CUR_GAIN]
        x = ma - p[P_CUR_OFFSET]
        neg = x < 0
        if neg:
            x = -x
        # x * 10000 / g rounded up, in parts that stay small ints.
        q = x // g
        v = q * 10000 + ((x - q * g) * 10000 + g - 1) // g
        return -v if neg else v

    def _calibrate(self, raw):
        p = self.params
        d = p[P_CUR_GAIN] - 10000
        # Keep every product below 2**30 so the board never allocates a big int.
        if -200000 < raw < 200000:
            corr = raw * d // 10000
        else:
            corr = (raw // 100) * d // 100
        return raw + corr + p[P_CUR_OFFSET]

    def _update_mode(self):
        i = self.meas.current_ma
        if not self.running:
            self.mode = MODE_BOOT
        elif self.prot.level >= F.L_PROT:
            self.mode = MODE_PROTECT
        elif i > _MODE_CURRENT_MA:
            self.mode = MODE_CHARGING
        elif i < -_MODE_CURRENT_MA:
            self.mode = MODE_DISCHARGING
        else:
            self.mode = _MODE_STANDBY

    def _reset_faults(self, now, max_level=F.L_CRIT):
        """The reset rule: latched faults up to ``max_level`` whose condition
        is gone clear (ov2 / uv2 still present enter their recovery path).
        The command resets everything; the K switch only below L_CRIT."""
        prot = self.prot
        if max_level >= F.L_CRIT:
            reset_afe = getattr(self.board, "clear_afe_fault", None)
            if reset_afe is not None:
                try:
                    reset_afe()
                except OSError:
                    self.bus_errors = (self.bus_errors + 1) & 0x3FFFFFFF
            # Not while exceptions are still coming: a reset during a crash
            # loop would let the relays close between two exceptions.
            if not self.exceptions or ticks_diff(now, self._exc_at) >= EXC_QUIET_MS:
                prot.set_flag(F.SIG_INTERNAL, False)
            prot.set_flag(F.SIG_AFE, self.board.afe_fault() != 0)
        prot.set_flag(F.SIG_PRECHARGE, False)
        self.contactors.clear_precharge_fault()
        self.ccheck.reset()
        prot.set_flag(F.SIG_CUR_PLAUS, self.ccheck.second_bad)
        prot.step(self.meas, now)  # let cleared flags reach S_RECOVERED
        return prot.reset_latched(now, max_level)

    def _run_command(self, now):
        cmd = self._cmd
        arg = self._cmd_arg
        self._cmd = 0
        self.log.append(now, EV_COMMAND, cmd, arg)
        reason = self._exec(cmd, arg, now)
        self.cmd_reason = reason
        self.cmd_status = _CS_REFUSED if reason else _CS_DONE
        self.cmd_seq = (self.cmd_seq + 1) & 0xFFFF

    def _exec(self, cmd, arg, now):
        """Run one command; 0 when done, else the refusal reason (CR_*)."""
        p = self.params
        if cmd == CMD_RESET_FAULTS:
            self._reset_faults(now)
        elif cmd == CMD_SOC_SET:
            self.soc.set_pm(arg)
            self.cmd_value = self.soc.soc_pm
        elif cmd == CMD_CAL_CURRENT:
            return self._cal_current(arg, now)
        elif cmd == CMD_CAL_ZERO:
            if not self._avg_seen():
                return _CR_NO_DATA
            raw = self.current_avg_raw
            off = -(raw * p[P_CUR_GAIN] // 10000)
            try:
                if not -_ZERO_MAX_MA < raw < _ZERO_MAX_MA:
                    raise ParamError(P_CUR_OFFSET, "zero reading too large")
                p.set(P_CUR_OFFSET, off)
            except ParamError:
                self.log.append(now, EV_CAL, CMD_CAL_ZERO, -1)
                return _CR_ZERO_LOAD
            self.log.append(now, EV_CAL, CMD_CAL_ZERO, off)
            self.cmd_value = off
        elif cmd == _CMD_DEFAULTS:
            p.load_defaults(arg)
            self.cmd_value = arg
        elif cmd == CMD_CLEAR_LOG:
            self.log.clear(now)
            # arg 2: the flash log too (the services poller erases it; the
            # register block asked for the factory role).
            self.clear_plog_requested = arg == 2
        elif cmd == CMD_RESTART:
            self.contactors.open_all(now)
            self.restart_requested = True
        elif cmd == CMD_SLEEP:
            if self.charger_present(now):
                return _CR_CHARGER
            self.sleep_requested = True
        elif cmd == CMD_WAKE:
            self.sleep_requested = False
        elif cmd == CMD_OCV_FORGET:
            self.soc.reset_ocv_points()
        return 0

    def _avg_seen(self):
        return self._avg_ok

    def _cal_current(self, arg, now):
        p = self.params
        if not self._avg_seen():
            return _CR_NO_DATA
        raw = self.current_avg_raw
        # I = raw * gain + offset is a line through the zero point raw0
        # (found by CMD_CAL_ZERO); keep raw0 and rescale both so that a
        # large gain correction does not shift the zero reading.
        raw0 = -(p[P_CUR_OFFSET] * 10000 // p[P_CUR_GAIN])
        d = raw - raw0
        # The sign is the measurement's: the calibrated reading's, d's (a
        # raw reading on the other side of zero than raw0 is not the direction).
        target = arg if arg >= 0 else -arg
        if d < 0:
            target = -target
        big_raw = raw <= -_CAL_MIN_MA or raw >= _CAL_MIN_MA
        big_d = d <= -_CAL_MIN_MA or d >= _CAL_MIN_MA
        # The true current too (a 0 from a form's default field would walk
        # the gain to its floor, 5 % per command, every current read low).
        big_t = arg <= -_CAL_MIN_MA or arg >= _CAL_MIN_MA
        if not (big_raw and big_d and big_t):
            self.log.append(now, EV_CAL, CMD_CAL_CURRENT, -1)
            return _CR_CAL_SMALL
        gain = target * 10000 // d if -100000 < target < 100000 \
            else target * 100 // (d // 100)
        row = TABLE[P_CUR_GAIN]
        if not row[2] <= gain <= row[3]:
            # No number of 5 % steps reaches it: a typo (mA for A, a wrong
            # meter), not a shunt error.  Refused, nothing changes.
            self.log.append(now, EV_CAL, CMD_CAL_CURRENT, -1)
            return _CR_CAL_RANGE
        # One calibration moves the gain by at most CUR_GAIN_STEP (5 %):
        # a larger error takes several, each logged; the range is the
        # parameter's (+-10 %).
        g0 = p[P_CUR_GAIN]
        if gain > g0 + CUR_GAIN_STEP:
            gain = g0 + CUR_GAIN_STEP
        elif gain < g0 - CUR_GAIN_STEP:
            gain = g0 - CUR_GAIN_STEP
        try:
            p.set_many(((P_CUR_GAIN, gain), (P_CUR_OFFSET, -(raw0 * gain // 10000))))
        except ParamError:
            self.log.append(now, EV_CAL, CMD_CAL_CURRENT, -1)
            return _CR_CAL_RANGE
        self.log.append(now, EV_CAL, CMD_CAL_CURRENT, gain)
        self.cmd_value = gain
        return 0

    def _param_changed(self, i, old, new):
        self.log.append(self.clock.ticks_ms(), EV_PARAM, i, new)

    def _fail(self, exc):
        now = self.clock.ticks_ms()
        self._exc_at = now
        # Saturates (a small int; "any exceptions" must never wrap to none).
        if self.exceptions < 0x3FFFFFFF:
            self.exceptions += 1
        self.last_exception = exc
        try:
            self.contactors.open_all(now)
        except Exception:  # noqa: BLE001 - nothing more to do; the WDT will act
            pass
        self.prot.set_flag(F.SIG_INTERNAL, True)
        self.prot.force(F.INTERNAL, now)
        self.log.append(now, EV_EXCEPTION, self.exceptions, 0)

    def chemistry(self):
        return self.params[P_CHEMISTRY]
