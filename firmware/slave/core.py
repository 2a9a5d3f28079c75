"""Slave module logic: measure, guard locally, report over CAN, bleed on command.

Pure logic, stepped from outside with ``step(now)``; the board entry
(``slave_main.py``) supplies the CAN controller and the AFE:

  afe.read_cells(cell_mv, n)   fills ``n`` mV values (array('H')); OSError on
                               bus failure; 0xFFFF for a cell it could not read
  afe.read_temps(temp_dc, n)   fills ``n`` 0.1 degC values (array('h')) or the
                               TEMP_OPEN / TEMP_SHORT sentinels of comms.can_ids
  afe.balance(mask)            bleeders on (bit 0 = cell 1)
  afe.sleep(on)                optional (NotImplementedError is fine)
  afe.read_stack_mv()          optional: the chip's own stack voltage (mV; 0
                               or less: no reading), for the wiring check below

Protocol (``comms.can_ids``, ``docs/bms_internal.dbc``): the master's SYNC
starts a sweep; the slave samples its AFE at once and sends STATUS, its
CELLS frames and TEMPS in slot ``addr``, one frame every ``gap`` ms.  It
never transmits without a SYNC it heard, so a slave that lost the master
goes quiet instead of sending stale data on its own timer.

Second line of defence, independent of the master: local hard limits (OV,
UV, OT; built-in wide defaults until the master's CONFIG arrives) debounced
over ``LIMIT_SAMPLES`` consecutive samples with hysteresis.  An active limit
stops balancing and is reported in every STATUS (the master latches it as
an AFE fault).  Sampling continues on the slave's own timer when the master
is silent.  Balancing needs a fresh BAL command: it stops by itself when the
command's timeout passes or no SYNC came for ``_MASTER_LOST_SWEEPS`` periods.
After ``_SLEEP_AFTER_MS`` without a master (or on the SYNC sleep flag) the
slave sleeps: no balancing, no transmissions, a sample every
``_SLEEP_SAMPLE_MS``; the next SYNC without the sleep flag wakes it.

Addressing: ``addr`` 1..16 from DIP switches / stored setting, or 0 for
auto-assignment along the chain: an unaddressed slave whose chain input is
active announces its uid; the master's ASSIGN gives it the next address and
the slave raises its chain output so the next module announces.

Wiring check (docs/safety.md, cells connected beyond the count): when the
chip's stack voltage exceeds the sum of the ``cells`` it reads by more than
_UNMON_MV + _UNMON_PER_CELL_MV per cell on _UNMON_SAMPLES samples in a row,
cells are wired beyond the module's count (a CONFIG or setting below its
wiring; TI's wiring for fewer cells leaves such a cell unread) and nobody
watches them: ``LF_WIRING`` is reported, and the master takes none of the
module's cells (cell_stale: charge and discharge open).  Both voltages come
from the same chip and the same taps, so a steady current's drops are in
both; a reading that is missing or invalid gives no verdict.
"""
from array import array

from micropython import const

from bms.ticks import ticks_add, ticks_diff
from comms import can_ids as C
from comms.can_guard import BusGuard

LIMIT_SAMPLES = const(3)
_OV_HYST_MV = const(50)
_UV_HYST_MV = const(100)
_OT_HYST_DC = const(50)
# Built-in limits before the master's CONFIG: a cell outside them is wrong for
# every chemistry the master allows by default (NMC's ov2 ceiling is 4300 mV:
# stricter here until CONFIG, never looser).
_DEF_OV_MV = const(4250)
_DEF_UV_MV = const(1500)
_DEF_OT_DC = const(650)
_LOCAL_SAMPLE_MS = const(1000)
_SLEEP_SAMPLE_MS = const(5000)
_MASTER_LOST_SWEEPS = const(3)
_SYNC_MARGIN_MS = const(20)   # see quiet_ms
_SLEEP_AFTER_MS = const(30000)
_ANNOUNCE_MS = const(250)
_MAX_RX_PER_STEP = const(8)
_TEMP_BAD_MIN = const(32766)  # TEMP_SHORT and TEMP_OPEN
_UNMON_MV = const(800)        # stack above the cell sum: a cell nobody reads ...
_UNMON_PER_CELL_MV = const(5)  # ... beyond this margin plus this per cell read
_UNMON_SAMPLES = const(5)     # ... on this many samples in a row (5 s)


class Slave:
    def __init__(self, ctrl, afe, addr=0, cells=16, temps=3, uid=1, locked=False,
                 chain_in=None, chain_out=None, now=0):
        if addr < 0 or addr > C.MAX_MODULES:
            raise ValueError("addr")
        if cells < 1 or cells > C.MAX_MODULE_CELLS or temps < 0 or temps > C.MAX_MODULE_TEMPS:
            raise ValueError("cells/temps")
        self.ctrl = ctrl
        self.afe = afe
        self.guard = BusGuard(ctrl)
        self.auto = addr == 0
        self.addr = addr
        self.cells = cells
        self.temps = temps
        self.uid = uid
        self.locked = locked
        self.chain_in = chain_in
        self.chain_out = chain_out
        self.cell_mv = array("H", [C.CELL_INVALID] * C.MAX_MODULE_CELLS)
        self.temp_dc = array("h", [C.TEMP_ABSENT] * C.MAX_MODULE_TEMPS)
        self.ov_mv = _DEF_OV_MV
        self.uv_mv = _DEF_UV_MV
        self.ot_dc = _DEF_OT_DC
        self.configured = False
        self.afe_ok = False
        self.sampled = False
        self.sample_ts = now
        self.faults = 0            # LF_* bits
        self._cnt = bytearray(3)   # debounce counters: ov, uv, ot
        self._unmon = 0            # samples in a row with the stack above the cells
        self._rd_stack = getattr(afe, "read_stack_mv", None)
        self.state = C.ST_BOOT
        self.sleeping = False
        self.bal_mask = 0
        # The AFE's bleed mask and mode are not known until a write goes
        # through: after an MCU reset (watchdog, firmware update) the chip may
        # still bleed or sleep.  Written at the first sample, and again at
        # each sample while a write keeps failing.
        self._bal_unsure = True
        self._mode_unsure = True
        self._bal_deadline = now
        self._bal_allowed = False
        self.sweep = 0
        self.period = C.SWEEP_MS
        self.slot = C.SLOT_MS
        self.gap = C.GAP_MS
        self.sync_seen = False
        self.last_sync = now
        self._last_sample = now
        self._last_announce = now
        self._ver_pending = True
        # Transmit plan for the current slot.
        self._plan_n = 0
        self._plan_i = 0
        self._next_tx = now
        self._slot_end = now
        self._rx = bytearray(8)
        self._tx = bytearray(8)
        # Counters for diagnostics.
        self.syncs = 0
        self.tx_frames = 0
        self.tx_dropped = 0
        self.bal_timeouts = 0
        # Firmware update over CAN (slave.fw.SlaveFw), attached by the board entry.
        self.fw = None
        self.fw_version = C.FW_VERSION
        self._set_filters()
        if chain_out is not None:
            chain_out(not self.auto)

    def _set_filters(self):
        f = [(C.ID_SYNC, 0x7FC, False)]  # SYNC, ASSIGN, REQUEST
        if self.addr:
            f.append((C.ID_BAL + self.addr - 1, 0x7FF, False))
            f.append((C.ID_CONFIG + self.addr - 1, 0x7FF, False))
            f.append((C.ID_FWCTL + self.addr - 1, 0x7FF, False))
            f.append((C.ID_FWDATA + self.addr - 1, 0x7FF, False))
        try:
            self.ctrl.set_filters(f)
        except NotImplementedError:
            pass
        except OSError:
            pass    # kept by the controller for its next init (BusGuard restarts it)

    # ---- public -------------------------------------------------------
    def step(self, now):
        """One pass of the slave loop; never raises on bus or AFE errors.

        While the CAN controller is bus-off or not answering only the bus
        waits: to the module the master is silent, so the balancing timeout,
        master-lost, sleep, sampling with the hard limits and the firmware
        trial's time-out run on."""
        bus = self.guard.step(now)
        if bus:
            self._receive(now)
        if self.fw is not None:
            self.fw.step(now)
        if not self.sleeping and ticks_diff(now, self.last_sync) > self.period * _MASTER_LOST_SWEEPS:
            if self.bal_mask:
                self._set_balance(0)
            if self.sync_seen:
                self.faults |= C.LF_MASTER_LOST
            if ticks_diff(now, self.last_sync) > _SLEEP_AFTER_MS:
                self._sleep(True)
        if self.bal_mask and ticks_diff(now, self._bal_deadline) >= 0:
            self.bal_timeouts += 1
            self.faults |= C.LF_MASTER_LOST
            self._set_balance(0)
        every = _SLEEP_SAMPLE_MS if self.sleeping else _LOCAL_SAMPLE_MS
        if ticks_diff(now, self._last_sample) >= every:
            self._sample(now)
        if not bus:
            return
        if self.addr == 0:
            if not self.sleeping:   # asleep: no transmissions
                self._announce(now)
        elif self._plan_i < self._plan_n:
            self._transmit(now)

    def ms_to_next(self, now):
        """Time until the slave has something to do (for a sleeping board loop)."""
        every = _SLEEP_SAMPLE_MS if self.sleeping else _LOCAL_SAMPLE_MS
        d = every - ticks_diff(now, self._last_sample)
        if self._plan_i < self._plan_n:
            t = ticks_diff(self._next_tx, now)
            if t < d:
                d = t
        return d if d > 0 else 0

    def quiet_ms(self, now):
        """Time the slave can be away (a garbage collection between steps,
        slave_main) without a frame or a sample coming late: ``ms_to_next``,
        and never across the master's next SYNC.  The SYNC's arrival times
        the sweep's slot: read late, the module's frames would go out late,
        into the next module's slot.  A SYNC is due from _SYNC_MARGIN_MS
        before a period after the last one (the master's own loop moves it
        a little) until the master counts as lost; asleep, the loop's own
        SLEEP_LOOP_MS wait is longer than a collection anyway."""
        d = self.ms_to_next(now)
        if self.sync_seen and not self.sleeping:
            since = ticks_diff(now, self.last_sync)
            if since < self.period * _MASTER_LOST_SWEEPS:
                t = self.period - _SYNC_MARGIN_MS - since
                if t < d:
                    d = t if t > 0 else 0
        return d

    # ---- receiving ----------------------------------------------------
    def _receive(self, now):
        ctrl = self.ctrl
        b = self._rx
        for _ in range(_MAX_RX_PER_STEP):
            n = ctrl.recv(b)
            if n < 0:
                return
            if ctrl.rx_ext:
                continue
            cid = ctrl.rx_id
            a = self.addr
            if cid == C.ID_SYNC:
                if n >= 8:
                    self._on_sync(b, now)
            elif a and cid == C.ID_BAL + a - 1:
                if n >= 4:
                    self._on_bal(b, now)
            elif a and cid == C.ID_CONFIG + a - 1:
                if n >= 8:
                    self._on_config(b)
            elif a and cid == C.ID_FWDATA + a - 1:
                if self.fw is not None:
                    self.fw.on_data(b, n, now)
            elif a and cid == C.ID_FWCTL + a - 1:
                if self.fw is not None:
                    self.fw.on_ctl(b, n, now)
            elif cid == C.ID_REQUEST:
                if n >= 2 and (b[0] == 0 or b[0] == a):
                    if b[1] == C.REQ_VERSION:
                        self._ver_pending = True
                    elif b[1] == C.REQ_ANNOUNCE and a == 0:
                        self._last_announce = ticks_add(now, -_ANNOUNCE_MS)
            elif cid == C.ID_ASSIGN:
                if n >= 7 and a == 0 and self.auto and C.uid48(b, 0) == self.uid:
                    na = b[6]
                    if 1 <= na <= C.MAX_MODULES:
                        self.addr = na
                        self._ver_pending = True
                        self._set_filters()
                        if self.chain_out is not None:
                            self.chain_out(True)

    def _on_sync(self, b, now):
        period = C.u16(b, 4)
        slot = b[6]
        gap = b[7]
        if period < 100 or slot < 1 or gap < 1 or slot < gap:
            return  # a corrupt schedule must not make us talk over others
        self.syncs += 1
        self.sync_seen = True
        self.last_sync = now
        self.sweep = C.u16(b, 0)
        self.period = period
        self.slot = slot
        self.gap = gap
        flags = b[2]
        self.faults &= ~C.LF_MASTER_LOST
        self._bal_allowed = bool(flags & C.SYNC_BAL_OK)
        if not self._bal_allowed and self.bal_mask:
            self._set_balance(0)
        if flags & C.SYNC_REASSIGN and self.auto and self.addr:
            self.addr = 0
            self._set_filters()
            if self.chain_out is not None:
                self.chain_out(False)
        if flags & C.SYNC_SLEEP:
            self._sleep(True)
            self._plan_n = 0
            return
        self._sleep(False)
        self._sample(now)
        if self.addr:
            nf = (self.cells + C.CELLS_PER_FRAME - 1) // C.CELLS_PER_FRAME
            self._plan_n = 2 + nf + (1 if self._ver_pending else 0)
            self._plan_i = 0
            start = ticks_add(now, self.addr * slot)
            self._next_tx = start
            self._slot_end = ticks_add(start, slot)

    def _on_bal(self, b, now):
        mask = C.u16(b, 0) & ((1 << self.cells) - 1)
        timeout = b[2] * C.BAL_TIMEOUT_UNIT_MS
        if (not self._bal_allowed or self.sleeping or timeout == 0
                or self.faults & (C.LF_HARD | C.LF_AFE | C.LF_TSENSOR)):
            mask = 0
        self._bal_deadline = ticks_add(now, timeout)
        if mask:
            self.faults &= ~C.LF_MASTER_LOST
        self._set_balance(mask)

    def _on_config(self, b):
        cells = b[0]
        temps = b[1]
        ov = C.u16(b, 2)
        uv = C.u16(b, 4)
        ot = b[6] - 256 if b[6] & 0x80 else b[6]
        # No temperature sensor would leave the module without its own
        # over-temperature limit: refused like any other bad CONFIG.
        if (not 1 <= temps <= C.MAX_MODULE_TEMPS or not (1000 <= ov <= 5000)
                or not (500 <= uv < ov) or not (-40 <= ot <= 120)):
            return
        if b[7] & C.CFG_SET_CELLS and not self.locked and cells != self.cells and \
                C.MIN_MODULE_CELLS <= cells <= C.MAX_MODULE_CELLS:
            self.cells = cells
            # This sweep's sample and frame plan are of the old count: send
            # nothing more this sweep, the next SYNC samples the new count.
            self._plan_n = 0
            self._plan_i = 0
        self.temps = temps
        self.ov_mv = ov
        self.uv_mv = uv
        self.ot_dc = ot * 10
        self.configured = True
        self.faults &= ~C.LF_DEFAULTS

    # ---- measuring and local limits -----------------------------------
    def _sample(self, now):
        self._last_sample = now
        if self._mode_unsure:
            try:
                self.afe.sleep(self.sleeping)
                self._mode_unsure = False
            except (AttributeError, NotImplementedError):
                self._mode_unsure = False   # an AFE without modes
            except OSError:
                pass
        if self._bal_unsure:
            self._set_balance(0)   # off until a BAL asks again
        n = self.cells
        try:
            self.afe.read_cells(self.cell_mv, n)
            if self.temps:
                self.afe.read_temps(self.temp_dc, self.temps)
            self.afe_ok = True
            self.sampled = True
            self.sample_ts = now
            self.faults &= ~C.LF_AFE
        except OSError:
            self.afe_ok = False
            self.faults |= C.LF_AFE
            if self.bal_mask:
                self._set_balance(0)
            return
        mv = self.cell_mv
        hi = 0
        lo = 65535
        for i in range(n):
            v = mv[i]
            if v == C.CELL_INVALID:
                continue
            if v > hi:
                hi = v
            if v < lo:
                lo = v
        t = self.temp_dc
        thi = -32768
        bad_t = False
        for i in range(self.temps):
            v = t[i]
            if v >= _TEMP_BAD_MIN or v == C.TEMP_ABSENT:
                bad_t = True
                continue
            if v > thi:
                thi = v
        self._limit(0, C.LF_OV, hi >= self.ov_mv, hi < self.ov_mv - _OV_HYST_MV)
        self._limit(1, C.LF_UV, lo <= self.uv_mv, lo > self.uv_mv + _UV_HYST_MV)
        self._limit(2, C.LF_OT, thi >= self.ot_dc, thi < self.ot_dc - _OT_HYST_DC)
        if bad_t:
            self.faults |= C.LF_TSENSOR
        else:
            self.faults &= ~C.LF_TSENSOR
        if not self.configured:
            self.faults |= C.LF_DEFAULTS
        self._wiring(n)
        if self.faults & (C.LF_HARD | C.LF_TSENSOR) and self.bal_mask:
            self._set_balance(0)

    def _wiring(self, n):
        """Cells wired beyond the module's count (module docstring)."""
        f = self._rd_stack
        if f is None:
            return
        try:
            st = f()
        except (OSError, NotImplementedError):
            return   # no verdict: the last one holds
        if st <= 0:
            return   # no reading
        mv = self.cell_mv
        total = 0
        for i in range(n):
            v = mv[i]
            if v == C.CELL_INVALID or v == 0:
                return
            total += v
        if st - total > _UNMON_MV + _UNMON_PER_CELL_MV * n:
            if self._unmon < _UNMON_SAMPLES:
                self._unmon += 1
            if self._unmon >= _UNMON_SAMPLES:
                self.faults |= C.LF_WIRING
        else:
            self._unmon = 0
            self.faults &= ~C.LF_WIRING

    def _limit(self, k, bit, trip, clear):
        c = self._cnt[k]
        if trip:
            if c < LIMIT_SAMPLES:
                c += 1
            if c >= LIMIT_SAMPLES:
                self.faults |= bit
        elif clear:
            if c > 0:
                c -= 1
            if c == 0:
                self.faults &= ~bit
        self._cnt[k] = c

    def _set_balance(self, mask):
        if mask == self.bal_mask and not self._bal_unsure:
            return
        try:
            self.afe.balance(mask)
            self.bal_mask = mask
            self._bal_unsure = False
        except OSError:
            self.faults |= C.LF_AFE
            self.bal_mask = 0
            try:
                self.afe.balance(0)
                self._bal_unsure = False
            except OSError:
                # The bleeders may still be on: off is written again at
                # every sample until it goes through.
                self._bal_unsure = True

    def _sleep(self, on):
        if on == self.sleeping:
            return
        self.sleeping = on
        if on:
            self._set_balance(0)
        try:
            self.afe.sleep(on)
        except (AttributeError, NotImplementedError):
            pass
        except OSError:
            self._mode_unsure = True    # written again at the next sample

    # ---- transmitting -------------------------------------------------
    def state_byte(self):
        if self.sleeping:
            st = C.ST_SLEEP
        elif self.faults & C.LF_HARD:
            st = C.ST_FAULT
        elif not self.sync_seen:
            st = C.ST_BOOT
        else:
            st = C.ST_RUN
        if self.locked:
            st |= C.STATE_LOCKED
        if self.auto:
            st |= C.STATE_AUTO
        return st

    def _frame(self, i, now):
        """Fill the TX buffer (all frames are 8 bytes) with plan entry ``i``; returns the id."""
        b = self._tx
        a = self.addr
        nf = (self.cells + C.CELLS_PER_FRAME - 1) // C.CELLS_PER_FRAME
        if i == 0:
            age = ticks_diff(now, self.sample_ts) if self.sampled else 2550
            C.status_pack(b, self.state_byte(), self.cells, self.sweep, self.faults,
                          self.bal_mask, self.temps, age)
            return C.ID_STATUS + a - 1
        if i <= nf:
            f = i - 1
            base = f * C.CELLS_PER_FRAME
            mv = self.cell_mv
            for j in range(C.CELLS_PER_FRAME):
                c = base + j
                v = mv[c] if (c < self.cells and self.afe_ok) else C.CELL_INVALID
                b[2 * j] = v & 0xFF
                b[2 * j + 1] = v >> 8
            return C.cells_id(a, f)
        if i == nf + 1:
            t = self.temp_dc
            for j in range(C.MAX_MODULE_TEMPS):
                v = t[j] if (j < self.temps and self.afe_ok) else C.TEMP_ABSENT
                C.put16(b, 2 * j, v & 0xFFFF)
            return C.ID_TEMPS + a - 1
        C.version_pack(b, self.uid, self.fw_version)
        return C.ID_VERSION + a - 1

    def _transmit(self, now):
        if ticks_diff(now, self._next_tx) < 0:
            return
        if ticks_diff(now, self._slot_end) >= 0:
            # Late (bus busy, TX buffers full): never spill into the next slot.
            self.tx_dropped += self._plan_n - self._plan_i
            self._plan_i = self._plan_n
            return
        i = self._plan_i
        cid = self._frame(i, now)
        if self.ctrl.send(cid, self._tx, False):
            self.tx_frames += 1
            self._plan_i = i + 1
            if cid == C.ID_VERSION + self.addr - 1:
                self._ver_pending = False
            self._next_tx = ticks_add(self._next_tx, self.gap)

    def _announce(self, now):
        if not self.auto:
            return
        if self.chain_in is not None and not self.chain_in():
            return
        d = ticks_diff(now, self._last_announce)
        if 0 <= d < _ANNOUNCE_MS:
            # (Never ahead of now: a negative age is a stamp days old whose
            # tick difference wrapped, 6.2 days, not a recent announce.)
            return
        self._last_announce = now
        C.announce_pack(self._tx, self.uid, self.cells)
        self.ctrl.send(C.ID_ANNOUNCE, self._tx, False)
