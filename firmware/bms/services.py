"""Attaches the settings store, persistent log, lease, sleep and watchdog to a Bms.

Nothing here runs inside the control cycle: the board loop calls
``services.poll()`` after ``bms.step()``; all flash work happens there, at a
bounded rate.  Boot order (``boot`` does it for you):

    reason = watchdog.boot_reason(fs, machine.reset_cause, machine)
    store.load_params(params)      # before the Bms exists: no listener yet
    state = store.load_state()
    bms = Bms(board, params, clock, log, soc_pm=state.soc_pm,
              latched=store.load_latches())   # latches before anything closes
    svc = Services(bms, store, state, plog, ...)

Write policy (see docs/storage.md for the flash budget):
  params  2 s after the last accepted change (a burst of Modbus writes is one
          record), and never more than once per ``_PARAM_MIN_MS``.
  state   when SOC moved >= 10 per mille, cycles or the lease changed, at most
          every ``STATE_MIN_S``; otherwise every ``STATE_MAX_S`` while running
          (operating time); at once on a restart or sleep request, a lease
          change or a change of the learned capacity (a new capacity
          parameter drops it: restored after a power cut, the old one
          would override the user's).  Unclean
          boots add ``STATE_MAX_S`` to the operating time (the most that can
          have been lost), so a power cycle never extends a lease.
  log     urgent records (boot, fault set, exception, ours) at the next poll;
          others batched for ``_LOG_BATCH_MS`` or until the queue is half full;
          a burst of ``LOG_BURST`` flushes, then one per ``_LOG_BATCH_MS``
          (a storm of urgent records must not erase a block per record).
  latches at the next poll whenever the set of latched faults changed
          (bms.protection ``latch_ver``); a failed write is retried at every
          poll until it succeeds.

When: with ``flash_room`` set (a board: ``bms.fast_room_ms``), anything that
may write flash waits for a poll with at least ``FLASH_ROOM_MS`` before the
fast task's next deadline, that is the poll right after a fast tick (at most
one tick later).  A littlefs write that erases a sector stalls the CPU for
the erase (45 ms typical on the W25Q16JV, interrupts off, no code runs from
flash): the minute's log batch held the loop 54 ms and started a fast tick
13 ms late on the emulated RP2040, and started at the wrong moment it could
hold one for a whole tick.  With ``flash_busy`` set (a board: the PC
port's Modbus server has a request in flight), they also wait until the
request is answered, at most ``FLASH_BUSY_MAX_MS`` (a master polling back to
back never stops them): begun under a request, the erase held its reply
that long (interrupts off, the UART's 32-byte FIFO the only buffer: a
longer write request arriving in it lost bytes, CRC error, retry).
"""
from micropython import const

from bms import faults as F
from bms import lease as LS
from bms import persistlog as PL
from bms import sleep as SL
from bms import watchdog as W
from bms.params import P_BUZZER, P_SLEEP_CURRENT, P_SLEEP_IDLE
from bms.store import F_CLEAN, F_LEASE, F_WDT_MASK, F_WDT_SHIFT, State
from bms.ticks import cap_age, ticks_add, ticks_diff

_PARAM_DEBOUNCE_MS = const(2000)
_PARAM_MIN_MS = const(10000)
STATE_MIN_S = const(300)
# Learned OCV points: saved when the estimator learned one (at most once per
# 30 min rest), a failed write retried after this long.
OCV_RETRY_S = const(600)
STATE_MAX_S = const(900)
_SOC_STEP_PM = const(10)
_LOG_BATCH_MS = const(60000)
LOG_BURST = const(8)        # log flushes at once; then one per _LOG_BATCH_MS (a storm)
FLASH_ROOM_MS = const(40)   # the fast tick is 50 ms apart and takes about 4-5 ms
FLASH_BUSY_MAX_MS = const(1000)  # a request in flight delays flash writes at most this long
CONFIRM_MS = const(60000)   # armed and fault-free this long -> update confirmed
REJECT_MS = const(5000)     # a trial firmware missing parts restarts after this


class Services:
    def __init__(self, bms, store, state, plog=None, lease=None, sleep=None, watchdog=None,
                 updater=None, reset=None, unclean=None, reason=None, restored=None):
        self.bms = bms
        self.store = store
        self.state = state
        self.plog = plog
        self.lease = lease
        self.sleep = sleep
        self.wdt = watchdog
        self.updater = updater
        self.confirm_ms = CONFIRM_MS   # config.py UPDATE_CONFIRM_MS (bench and tests)
        self.flash_room = None         # () -> ms before the fast tick: see "When" above
        self.flash_busy = None         # () -> True while a request comes in: "When" above
        self.kv = None                 # bms.kvstore.KvStore held for these writes (app wiring)
        self._busy_at = None    # when the current wait for a reply began
        self.reset = reset      # machine.reset on a board
        self.errors = 0         # flash errors (OSError) seen while saving
        self.stopped = False
        clock = bms.clock
        now = clock.ticks_ms()
        self._t_op = now
        self._op_ms = 0
        self._pver = bms.params.version
        self._p_changed_at = None
        self._p_saved_at = ticks_add(now, -_PARAM_MIN_MS)
        self._s_saved_op = state.op_s
        self._s_saved = state.copy()
        self._s_failed = False   # the last state write failed
        self._ocv_failed_op = None   # op_s of the last failed OCV-points write
        self._log_at = now
        self._log_tokens = LOG_BURST   # flushes allowed now (see _log_step)
        self._log_refill = now
        self._armed_since = None
        self._degraded_since = None
        # Names of the app parts that failed to build (set by the app after
        # building): a trial firmware that is not whole is never confirmed.
        self.degraded = ()
        self._lease_evt = 0
        self._latch_ver = bms.prot.latch_ver
        self._slept = False   # this poller opened the relays for sleep
        self._was_blocked = False
        self._beeping = False
        if plog is not None:
            plog.attach(bms.meas, bms.soc)
            bms.log.sink = plog.sink
            if reason is not None:
                plog.append(now, PL.PK_RESET, reason[0], reason[1])
            for name, _old, new, why in store.report:
                if why != "no stored settings: defaults":
                    plog.append(now, PL.PK_MIGRATE, _pindex(name), new if new is not None else -1)
            if updater is not None and updater.event:
                plog.append(now, PL.PK_UPDATE, updater.event, updater.active)
        # A state read from flash (``restored``; by default: it has been
        # through a boot) is the SOC the BMS had: restore all of it with the
        # estimator's "restored" uncertainty, so a reboot does not let the
        # first voltage readings move SOC as if it were a guess.  A fresh
        # State keeps the constructor's default SOC and its wide uncertainty.
        if restored is None:
            restored = state.boots > 0
        if restored:
            bms.soc.load_from(state)
        # The pack's learned OCV points belong to its cells, not to the SOC:
        # restored after any boot.  Points that do not fit (another chemistry,
        # a folded table) leave the bare table.
        pts = store.load_ocv_points()
        if pts is not None:
            bms.soc.set_ocv_points(*pts)
        bms.soc.ocv_dirty = False
        if unclean:
            state.op_s += STATE_MAX_S
        if lease is not None and store.state_lost:
            # A state record there but unreadable: the lease it held is
            # unknown, which cannot be told from one that has ended (a lost
            # record must not unlock a rented pack).  Discharge stays
            # blocked until a code is entered; saved below.
            state.lease_flags |= F_LEASE
            state.lease_end_s = 0
        state.flags &= ~F_CLEAN
        # Watchdog boots in a row (bms.watchdog WDT_LOOP_BOOTS): the count
        # survives the reset in the state record and is cleared once this
        # boot has run WDT_CLEAR_S.
        n = (state.flags & F_WDT_MASK) >> F_WDT_SHIFT
        if reason is not None and reason[0] == W.R_WATCHDOG:
            n = n + 1 if n < W.WDT_LOOP_BOOTS else W.WDT_LOOP_BOOTS
        else:
            n = 0
        state.flags = (state.flags & ~F_WDT_MASK) | (n << F_WDT_SHIFT)
        self.wdt_boots = n
        self._op_s0 = state.op_s
        if n >= W.WDT_LOOP_BOOTS:
            bms.prot.force(F.INTERNAL, now)   # saved by the latch step, reset rule clears it
        state.boots += 1
        self._save_state()

    # ---- the poller ------------------------------------------------------
    def poll(self):
        """Call after every ``bms.step()``; returns quickly when nothing is due."""
        bms = self.bms
        now = bms.clock.ticks_ms()
        if self.wdt is not None:
            self.wdt.feed_if_alive()
        self._op_time(now)
        room = self.flash_room
        if room is not None and room() < FLASH_ROOM_MS:
            return      # see "When" above: after the next fast tick
        busy = self.flash_busy
        if busy is not None and busy():
            if self._busy_at is None:
                self._busy_at = now
            if ticks_diff(now, self._busy_at) < FLASH_BUSY_MAX_MS:
                return  # after the reply (see "When" above)
        else:
            self._busy_at = None
        self._latch_step()
        kv = self.kv
        if kv is not None and kv.dirty:
            kv.flush()
        if self.wdt_boots and self.state.op_s - self._op_s0 >= W.WDT_CLEAR_S:
            self.wdt_boots = 0
            self.state.flags &= ~F_WDT_MASK
            self._save_state()
        self._lease_step(now)
        self._sleep_step(now)
        self._params_step(now)
        self._state_step(now)
        self._ocv_step()
        self._update_step(now)
        self._log_step(now)
        if bms.clear_plog_requested:
            bms.clear_plog_requested = False
            self._clear_plog(now)
        if bms.restart_requested and not self.stopped:
            self.shutdown(W.R_COMMAND)

    def _op_time(self, now):
        dt = ticks_diff(now, self._t_op)
        self._t_op = now
        if dt <= 0:
            return
        if dt > 10000:
            dt = 10000   # a stalled loop (flash erase, debugger) counts, but bounded
        ms = self._op_ms + dt
        self.state.op_s += ms // 1000
        self._op_ms = ms % 1000

    def _latch_step(self):
        prot = self.bms.prot
        v = prot.latch_ver
        if v == self._latch_ver:
            return
        try:
            self.store.save_latches(prot.latched_ids())
            self._latch_ver = v
        except OSError:
            self.errors += 1   # retried at the next poll

    def _lease_step(self, now):
        ls = self.lease
        if ls is None:
            return
        ls.expire(now)
        blocked = ls.blocked
        self.bms.prot.set_flag(F.SIG_LEASE, blocked)
        if blocked and not self._was_blocked:
            self._event(now, PL.PK_LEASE, LS.LE_EXPIRED, ls.state.lease_counter)
        self._was_blocked = blocked
        if ls.last_event:
            self._event(now, PL.PK_LEASE, ls.last_event, ls.state.lease_counter)
            ls.last_event = 0
        if ls.changed:
            ls.changed = False
            self._save_state()
        # Warning chirps only while protection leaves the buzzer alone.
        if self.bms.prot.level == 0 and self.bms.params[P_BUZZER]:
            on = ls.beep(now)
            if on != self._beeping:
                self._beeping = on
                self.bms.board.set_buzzer(on)
        elif self._beeping:
            self._beeping = False

    def _sleep_step(self, now):
        sl = self.sleep
        if sl is None:
            return
        bms = self.bms
        p = bms.params
        # SmartSleep follows its parameters (0 minutes: off).
        idle = p[P_SLEEP_IDLE]
        sl.smart = idle > 0
        sl.idle_ms = idle * 60000
        sl.idle_ma = p[P_SLEEP_CURRENT]
        key_fn = getattr(bms.board, "sleep_key", None)
        key = key_fn() if key_fn is not None else False
        if bms.sleep_requested and sl.state == SL.AWAKE:
            sl.request()   # CMD_SLEEP over comms
        elif not bms.sleep_requested and sl.state == SL.ASLEEP and self._slept:
            sl.wake()      # CMD_WAKE over comms: a bus request
        if sl.step(now, bms.meas.current_ma, key, bms.charger_present(now)):
            asleep = sl.state == SL.ASLEEP
            # Sleep opens the relays only where something can wake it again.
            self._slept = asleep and sl.opens_relays
            bms.sleep_requested = self._slept
            self._event(now, PL.PK_SLEEP, 1 if asleep else 0, sl.cause)
            if asleep:
                # Not an orderly shutdown (F_CLEAN): the BMS runs on, asleep
                # and after a wake, so a cut before the next save must boot
                # unclean and be charged the unsaved operating time.
                self._save_state()
                self.flush_log()

    def _params_step(self, now):
        p = self.bms.params
        if p.version != self._pver:
            self._pver = p.version
            self._p_changed_at = now
        t = self._p_changed_at
        if t is None:
            # The last save's time within an hour of now: days later it
            # must not read as recent (tick differences wrap at 6.2 days).
            self._p_saved_at = cap_age(now, self._p_saved_at)
            return
        if ticks_diff(now, t) >= _PARAM_DEBOUNCE_MS and \
                ticks_diff(now, self._p_saved_at) >= _PARAM_MIN_MS:
            try:
                self.store.save_params(p)
                self._p_changed_at = None
                self._p_saved_at = now
            except OSError:
                self.errors += 1
                self._p_saved_at = now   # retry after _PARAM_MIN_MS

    def _snapshot_soc(self):
        self.bms.soc.save_to(self.state)

    def _state_step(self, now):
        st = self.state
        self._snapshot_soc()
        age = st.op_s - self._s_saved_op
        old = self._s_saved
        cap = st.capacity_mah != old.capacity_mah
        if cap and age > 0 and not self._s_failed:
            # The learned capacity changed (a measurement, or a new capacity
            # parameter that drops it): saved at once, as the lease.  On the
            # schedule below, a power cut before the next save restored the
            # value learned against the old parameter beside the new one.
            # After a failed write: on the schedule (a failing flash is not
            # tried every second).
            self._save_state()
            return
        if age < STATE_MIN_S:
            return
        d = st.soc_pm - old.soc_pm
        moved = d >= _SOC_STEP_PM or -d >= _SOC_STEP_PM or st.cycles != old.cycles \
            or st.lease_end_s != old.lease_end_s or st.lease_counter != old.lease_counter or cap
        if moved or age >= STATE_MAX_S:
            self._save_state()

    def _ocv_step(self):
        soc = self.bms.soc
        if not soc.ocv_dirty:
            return
        f = self._ocv_failed_op
        if f is not None and self.state.op_s - f < OCV_RETRY_S:
            return
        chem, offs, sds = soc.get_ocv_points()
        try:
            self.store.save_ocv_points(chem, offs, sds, soc.ocv_points_n())
            soc.ocv_dirty = False
            self._ocv_failed_op = None
        except OSError:
            self.errors += 1
            self._ocv_failed_op = self.state.op_s

    def _save_state(self, clean=False):
        st = self.state
        self._snapshot_soc()
        if clean:
            st.flags |= F_CLEAN
        try:
            self.store.save_state(st)
            self._s_saved = st.copy()
            self._s_saved_op = st.op_s
            self._s_failed = False
        except OSError:
            self.errors += 1
            self._s_saved_op = st.op_s   # retry after STATE_MIN_S, not every poll
            self._s_failed = True
        st.flags &= ~F_CLEAN

    def _update_step(self, now):
        up = self.updater
        if up is None:
            return
        if up.state != 2:   # ST_TRIAL
            return
        bms = self.bms
        if self.degraded:
            # Armed or not, a firmware that lost Modbus or the log to a
            # MemoryError must not become the one we keep: reject it and
            # restart into the previous one (relays open in shutdown()).
            if self._degraded_since is None:
                self._degraded_since = now
            elif ticks_diff(now, self._degraded_since) >= REJECT_MS and not self.stopped:
                try:
                    if up.reject():
                        self._event(now, PL.PK_UPDATE, up.event, up.active)
                except OSError:
                    self.errors += 1
                self.shutdown(W.R_UPDATE)
            return
        ok = bms.running and not bms.prot.active(F.INTERNAL) and bms.exceptions == 0
        if not ok:
            self._armed_since = None
            return
        if self._armed_since is None:
            self._armed_since = now
        elif ticks_diff(now, self._armed_since) >= self.confirm_ms:
            try:
                if up.confirm():
                    self._event(now, PL.PK_UPDATE, up.event, up.active)
            except OSError:
                self.errors += 1

    def _log_step(self, now):
        pl = self.plog
        if pl is None:
            return
        # Each flush appends to a segment file: littlefs copies its last block
        # into a freshly erased one (a block erase per flush, ~45 ms stalled).
        # A burst of LOG_BURST flushes, then one per _LOG_BATCH_MS: a storm
        # of urgent records (a fault that flaps, a driver raising every
        # second) writes flash once a minute; the queue's overflow is counted
        # (dropped) and logged.
        if self._log_tokens >= LOG_BURST:
            self._log_refill = now
        elif ticks_diff(now, self._log_refill) >= _LOG_BATCH_MS:
            self._log_tokens += 1
            self._log_refill = now
        if not pl.pending:
            # The last flush's time within an hour of now: days later it
            # must not read as recent (tick differences wrap at 6.2 days).
            self._log_at = cap_age(now, self._log_at)
            return
        if self._log_tokens <= 0:
            return
        if pl.urgent or pl.pending * 2 >= pl._qcap or ticks_diff(now, self._log_at) >= _LOG_BATCH_MS:
            self._log_tokens -= 1
            self.flush_log()

    def _clear_plog(self, now):
        """The flash log erased on request (factory role, checked by comms); the
        erase itself is its first record, so the clearing is never silent."""
        pl = self.plog
        if pl is None:
            return
        try:
            pl.clear()
        except OSError:
            self.errors += 1
        pl.append(now, PL.PK_CLEARED, 0, 0)
        self.flush_log()

    def _event(self, now, kind, a, b):
        if self.plog is not None:
            self.plog.append(now, kind, a, b)

    # ---- actions ---------------------------------------------------------
    def flush_log(self):
        if self.plog is None:
            return
        self._log_at = self.bms.clock.ticks_ms()
        try:
            self.plog.flush()
        except OSError:
            self.errors += 1

    def shutdown(self, reason=W.R_COMMAND):
        """Orderly stop: everything to flash, intent recorded, then reset."""
        self.stopped = True
        now = self.bms.clock.ticks_ms()
        self.bms.contactors.open_all(now)   # applies to the board at once
        if self.bms.params.version != self._pver or self._p_changed_at is not None:
            try:
                self.store.save_params(self.bms.params)
            except OSError:
                self.errors += 1
        self._save_state(clean=True)
        self.flush_log()
        if self.kv is not None:
            self.kv.flush()
        W.prepare_reset(self.store.fs, reason)
        if self.reset is not None:
            self.reset()

    def enter_lease_code(self, code):
        """For comms/display: (True, days) or (False, reason)."""
        if self.lease is None:
            return False, "no lease configured"
        # Not logged here: ``_lease_step`` logs the lease's ``last_event``,
        # set for a code that was checked; one refused unchecked by the
        # back-off is not logged, so a stream of codes (no password needed)
        # cannot flood the flash log.
        try:
            _c, days = self.lease.enter(code, self.bms.clock.ticks_ms())
        except LS.LeaseError as e:
            return False, str(e)
        return True, days


def _pindex(name):
    from bms.params import index
    return index(name)


def boot(board, params, clock, fs, machine=None, log=None, lease_secret=None, serial="",
         wdt=None, updater=None, sleep=None):
    """Build the Bms with its services from the flash contents; returns (bms, services)."""
    from bms.core import Bms
    from bms.store import SettingsStore

    reason = W.boot_reason(fs, getattr(machine, "reset_cause", None), machine)
    store = SettingsStore(fs)
    store.load_params(params)
    state = store.load_state()
    unclean = False
    restored = state is not None
    if state is None:
        state = State()
    else:
        unclean = not (state.flags & F_CLEAN)
    plog = PL.PersistLog(fs)
    bms = Bms(board, params, clock, log, soc_pm=state.soc_pm, latched=store.load_latches())
    lease = LS.Lease(lease_secret, serial, state) if lease_secret else None
    dog = W.Watchdog(wdt, bms.sched, clock, bms=bms) if wdt is not None else None
    svc = Services(bms, store, state, plog, lease, sleep, dog, updater,
                   getattr(machine, "reset", None), unclean, reason, restored)
    return bms, svc
