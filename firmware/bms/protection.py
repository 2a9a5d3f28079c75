"""Protection engine: evaluates the fault table against the snapshot.

Called every fast tick.  All state lives in preallocated arrays indexed by
fault id; thresholds are recomputed only when the parameter set's version
changes, so a steady-state ``step`` allocates nothing.

Data quality.  Each signal has a quality: 0 no data yet, 1 usable to trip
only (a reading is invalid or stale and its last valid value holds, or some
of the sensors behind it are invalid), 2 complete and fresh.  A fault can
trip on quality 1 or 2 but recover only on quality 2: missing or invalid
data holds a fault's state, it never counts as recovered.  Sustained invalid
data trips its own sensor fault (cell_stale, current_stale, temp_sensor).

Debounce.  A fault starts pending at the first observation of its
condition and sets once it has been pending for its set delay, at an
observation of the condition.  A pending fault is forgotten only after the
condition has been absent (on valid data) for its gap window
``min(delay, GAP_MS)``: a reading that flickers over the threshold trips as
long as it comes back within the window, at any duty cycle, no later than
delay + one sample after its first observation.  One isolated spike never
trips (it would have to recur within every window for the whole delay).
Once active, the recovery condition must hold continuously for the clear
delay.  Latched faults then wait for ``reset_latched`` instead of clearing.

Onset.  Sampling alone sees a condition up to one tick after it began,
so its delay ends up to a tick late.  A hardware comparator on a signal
(the shunt monitor's ALERT on the current: ``on_ok`` / ``on_at`` /
``on_thr`` per signal, set by the core before each step) tells when it
began: a K_HIGH row whose threshold is at or below the comparator's
(``on_thr``), first observed while the comparator has been asserted since
``on_at``, counts its delay from ``on_at``, never from further back than
the previous observation (``dt``).  ``due_ms`` after a step is the least
time a pending row still needs; the core runs the next tick then if that is
before the regular one, so the fault sets at its delay, not at the tick
after it.  A row above the comparator's threshold does not back-date: the
comparator's edge is not when its own condition began.

Boot.  A fault whose condition holds at its first observation after boot
applies its reaction at once, until it sets (after its delay) or the
condition goes away: a reboot loop faster than a fault's delay cannot close
a relay on a condition that was already there.

Retry limit (P_RETRY rows: the over-current faults): a fault that trips
more than ``oc_retries`` times within ``oc_window`` seconds of the first trip
of the series latches like a P_LATCH row.

Recovery path (faults.RECOVERY: ov2, uv2).  A reset while the fault's
condition still holds cannot clear it (the cells cannot get back while
level 2 is open); it starts the recovery path instead: the reaction drops
R_L2 and keeps blocking the wrong direction, the recovering direction may
flow up to ``recovery_ma`` (capacity / 20).  The fault re-trips at once
(level 2 opens) when current flows the wrong way (>= WRONG_MA), when the
cell moves REC_WORSE_MV further the wrong way than at the reset, when the
allowed direction exceeds ``recovery_ma`` for REC_OVER_MS, or after
RECOVERY_MAX_MS; it clears once the recovery voltage has held for its clear
delay.

Latches survive reboots: ``latched_ids`` / ``latch_ver`` for the settings
store, ``restore`` before the first step.

Quiet rows.  A row that is idle, not pending, not held and already observed
since boot, on a signal that is out of reach of every threshold on it (below
the lowest K_HIGH threshold and above the highest K_LOW one, or with no
data), would come out of its evaluation unchanged: such rows are skipped.
The skip is exact (``skip_quiet = False`` evaluates every row, and the tests
compare both); in normal operation it leaves only the rows that have
something to do, which on an RP2040 is most of the fast task's time.
"""
from array import array

from micropython import const

from bms import faults as F
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER, T_NONE_MAX, T_NONE_MIN
from bms.eventlog import EV_FAULT_CLEAR, EV_FAULT_RECOVERY, EV_FAULT_SET
from bms.params import P_CAPACITY, P_OC_RETRIES, P_OC_WINDOW
from bms.ticks import ticks_diff

# Fault states.
_S_IDLE = const(0)
_S_ACTIVE = const(1)
S_RECOVERED = const(2)  # latched fault whose condition has cleared; awaits reset
S_RECOVERING = const(3)  # ov2 / uv2 after a reset: recovering direction only

GAP_MS = const(1000)          # longest gap a flickering condition may have
WRONG_MA = const(500)         # recovery path: current the wrong way that re-trips
REC_WORSE_MV = const(50)      # recovery path: cell this much worse than at the reset
REC_OVER_MS = const(1000)     # recovery path: over the current limit this long
RECOVERY_MAX_MS = const(7200000)  # recovery path: at most 2 h, then latched again
_FAR_HIGH = const(0x3FFFFFFF)  # small-int bounds: no signal reaches them
_FAR_LOW = const(-0x40000000)
NO_ONSET = const(-0x40000000)   # on_thr: no row on the signal back-dates


def _tq(m, have, complete):
    if not m.temps_seen or not have:
        return 0
    return 2 if complete else 1


class Protection:
    def __init__(self, params, log=None):
        n = F.N_FAULTS
        self.params = params
        self.log = log
        self.sig = array("i", [0] * F.N_SIGNALS)
        self.flags = bytearray(F.N_SIGNALS)  # diagnostic flag inputs
        self.thr = array("i", [0] * n)
        self.rec = array("i", [0] * n)
        self.delay = array("i", [0] * n)
        self.win = array("i", [0] * n)
        self.clear_ms = array("i", [0] * n)
        self.count = array("i", [0] * n)
        self.gap = array("i", [0] * n)
        self.state = bytearray(n)
        self.seen = bytearray(n)  # pending (idle) / recovery observed (active)
        self.ok_now = bytearray(n)  # recovery condition holds at this tick
        self.first = bytearray([1] * n)  # not observed since boot
        self.hold = bytearray(n)  # condition present at boot, not yet set
        self.rlatch = bytearray(n)  # P_RETRY row latched by its retry limit
        self.retry_n = bytearray(n)
        self.retry_t0 = array("i", [0] * n)
        self.trip_value = array("i", [0] * n)
        self.trip_count = array("H", [0] * n)
        self.set_at = array("i", [0] * n)
        self.sig_valid = bytearray(F.N_SIGNALS)  # quality 0 / 1 / 2, see above
        self.sig_lo = array("i", [0] * F.N_SIGNALS)  # lowest K_HIGH threshold
        self.sig_hi = array("i", [0] * F.N_SIGNALS)  # highest K_LOW threshold
        self.quiet = bytearray(F.N_SIGNALS)  # no row on it can trip at this tick
        self.busy = bytearray([1] * n)  # row must be evaluated (see "Quiet rows")
        self.skip_quiet = True
        # Onset (see above): the comparator per signal, from the core.
        self.on_ok = bytearray(F.N_SIGNALS)
        self.on_at = array("i", [0] * F.N_SIGNALS)
        self.on_thr = array("i", [NO_ONSET] * F.N_SIGNALS)
        self.due_ms = _FAR_HIGH
        # Fault-set records wait for flush_log when defer_log is on (the core:
        # the relays switch first, then the log; about 0.5 ms a record on an
        # RP2040).  step() flushes what a caller left, so nothing is lost.
        self.defer_log = False
        self._logq = bytearray(n)
        self._nlogq = 0
        # Row fields copied into flat arrays: no tuple indexing in the loop.
        self.f_sig = bytearray(n)
        self.f_kind = bytearray(n)
        self.f_policy = bytearray(n)
        self.f_reaction = bytearray(n)
        self.f_level = bytearray(n)
        for i in range(n):
            row = F.TABLE[i]
            self.f_sig[i] = row[F.F_SIGNAL]
            self.f_kind[i] = row[F.F_KIND]
            self.f_policy[i] = row[F.F_POLICY]
            self.f_reaction[i] = row[F.F_REACTION]
            self.f_level[i] = row[F.F_LEVEL]
        # Recovery path state (one slot per RECOVERY fault).
        self.rec_t0 = array("i", [0] * n)
        self.rec_ref = array("i", [0] * n)
        self.rec_over = array("i", [0] * n)
        self.recovery_ma = 0
        self.reaction = 0  # OR of the reactions of active faults
        self.level = 0     # highest level among active faults
        self.n_active = 0
        self.latch_ver = 0  # changes whenever the set of latched faults changes
        self._retries = 0
        self._window_ms = 0
        self._pver = -1
        self._last = 0
        self._started = False
        self.reload()

    def reload(self):
        """Recompute thresholds from the parameters (after a change)."""
        v = self.params.values
        for i in range(F.N_FAULTS):
            row = F.TABLE[i]
            self.thr[i] = F.spec_value(row[F.F_THR], v)
            self.rec[i] = F.spec_value(row[F.F_REC], v)
            d = F.spec_value(row[F.F_DELAY], v)
            self.delay[i] = d
            self.win[i] = d if d < GAP_MS else GAP_MS
            self.clear_ms[i] = F.spec_value(row[F.F_CLEAR], v)
        lo = self.sig_lo
        hi = self.sig_hi
        for k in range(F.N_SIGNALS):
            lo[k] = _FAR_HIGH
            hi[k] = _FAR_LOW
        for i in range(F.N_FAULTS):
            k = self.f_sig[i]
            t = self.thr[i]
            if self.f_kind[i] == F.K_LOW:
                if t > hi[k]:
                    hi[k] = t
            elif t < lo[k]:
                lo[k] = t
        self._retries = v[P_OC_RETRIES]
        self._window_ms = v[P_OC_WINDOW] * 1000
        self.recovery_ma = v[P_CAPACITY] * 100 // F.RECOVERY_C_DIV
        self._pver = self.params.version

    def set_flag(self, sig, on):
        self.flags[sig] = 1 if on else 0

    def active(self, fid):
        return self.state[fid] != _S_IDLE

    def recovering(self, fid):
        return self.state[fid] == S_RECOVERING

    def latched(self, fid):
        """Active and waiting for a reset (P_LATCH, or P_RETRY over its limit)."""
        return self.state[fid] != _S_IDLE and (self.f_policy[fid] == F.P_LATCH or self.rlatch[fid])

    def _signals(self, m, now):
        s = self.sig
        ok = self.sig_valid
        q = 0
        if m.cells_seen and m.max_mv > 0:
            q = 2 if (m.bad_cells == 0 and m.cells_fresh(now)) else 1
        s[F.SIG_CELL_MAX] = m.max_mv
        s[F.SIG_CELL_MIN] = m.min_mv
        s[F.SIG_CELL_DIFF] = m.diff_mv
        ok[F.SIG_CELL_MAX] = q
        ok[F.SIG_CELL_MIN] = q
        ok[F.SIG_CELL_DIFF] = q
        i = m.current_ma
        s[F.SIG_CHG_I] = i if i > 0 else 0
        s[F.SIG_DSG_I] = -i if i < 0 else 0
        q = 0
        if m.current_seen:
            q = 2 if m.current_fresh(now) else 1
        ok[F.SIG_CHG_I] = q
        ok[F.SIG_DSG_I] = q
        t = m.tmax
        s[F.SIG_T_POWER] = t[ROLE_POWER]
        s[F.SIG_T_BAL] = t[ROLE_BALANCE]
        s[F.SIG_T_CELL_MAX] = t[ROLE_CELL]
        s[F.SIG_T_CELL_MIN] = m.tmin[ROLE_CELL]
        # Sentinel values (no valid sensor) can never trip: the sensor fault does.
        fresh = m.temps_fresh(now)
        bad = m.bad_temps
        ok[F.SIG_T_POWER] = _tq(m, t[ROLE_POWER] != T_NONE_MAX, fresh and not bad[ROLE_POWER])
        ok[F.SIG_T_BAL] = _tq(m, t[ROLE_BALANCE] != T_NONE_MAX, fresh and not bad[ROLE_BALANCE])
        q = fresh and not bad[ROLE_CELL]
        ok[F.SIG_T_CELL_MAX] = _tq(m, t[ROLE_CELL] != T_NONE_MAX, q)
        ok[F.SIG_T_CELL_MIN] = _tq(m, m.tmin[ROLE_CELL] != T_NONE_MIN, q)
        fl = self.flags
        for k in range(F.FIRST_FLAG, F.N_SIGNALS):
            s[k] = fl[k]
            ok[k] = 2

    def step(self, m, now):
        """Evaluate every fault; returns the reaction mask."""
        if self._pver != self.params.version:
            self.reload()
        if self._started:
            dt = ticks_diff(now, self._last)
            if dt < 0:
                dt = 0
            elif dt > 10000:
                dt = 10000
        else:
            dt = 0
            self._started = True
        if self._nlogq:
            self.flush_log(self._last)
        self._last = now
        self._signals(m, now)
        s = self.sig
        ok = self.sig_valid
        quiet = self.quiet
        busy = self.busy
        if self.skip_quiet:
            lo = self.sig_lo
            hi = self.sig_hi
            for k in range(F.N_SIGNALS):
                v = s[k]
                quiet[k] = 1 if (ok[k] == 0 or hi[k] < v < lo[k]) else 0
        # Every array in a local: an attribute lookup costs about as much as
        # the comparison it feeds on the RP2040, and this loop runs 32 rows
        # every 50 ms.
        f_sig = self.f_sig
        f_kind = self.f_kind
        f_reaction = self.f_reaction
        f_level = self.f_level
        thr = self.thr
        rec = self.rec
        state = self.state
        seen = self.seen
        count = self.count
        first = self.first
        hold = self.hold
        ok_now = self.ok_now
        k_low = F.K_LOW
        r_l2 = F.R_L2
        on_ok = self.on_ok
        due = _FAR_HIGH
        reaction = 0
        level = 0
        active = 0
        for i in range(F.N_FAULTS):
            k = f_sig[i]
            if quiet[k] and not busy[i]:
                continue
            v = s[k]
            q = ok[k]
            if q == 0:
                cond = False
                recovered = False
            elif f_kind[i] == k_low:
                cond = v <= thr[i]
                recovered = q == 2 and v > rec[i]
            else:
                cond = v >= thr[i]
                recovered = q == 2 and v < rec[i]
            ok_now[i] = 1 if (recovered and not cond) else 0
            st = state[i]
            if st == _S_IDLE:
                if q:
                    if cond:
                        if seen[i]:
                            c = count[i] + dt
                        else:
                            seen[i] = 1
                            c = 0
                            if on_ok[k] and thr[i] <= self.on_thr[k] and f_kind[i] != k_low:
                                a = ticks_diff(now, self.on_at[k])
                                if a > 0:
                                    c = a if a < dt else dt
                        self.gap[i] = 0
                        if first[i]:
                            hold[i] = 1
                        d = self.delay[i]
                        if c >= d:
                            self._set(i, v, now)
                            c = 0
                        elif d - c < due:
                            due = d - c
                        count[i] = c
                    elif seen[i]:
                        c = count[i] + dt
                        d = self.delay[i]
                        if c > d:
                            c = d  # enough: it sets at its next observation
                        if q == 2:
                            # Only valid data is an absence: an invalid
                            # reading holds its last value, not a gap.
                            g = self.gap[i] + dt
                            if g >= self.win[i]:
                                seen[i] = 0
                                c = 0
                                g = 0
                            self.gap[i] = g
                        count[i] = c
                    first[i] = 0
                if hold[i] and (state[i] != _S_IDLE or not seen[i]):
                    hold[i] = 0
                if state[i] == _S_IDLE:
                    if hold[i]:
                        reaction |= f_reaction[i]
                    busy[i] = 1 if (seen[i] or hold[i] or first[i]) else 0
                    continue
            elif st == S_RECOVERING:
                self._recovering(i, v, q, cond, recovered, dt, now)
            else:
                if recovered and not cond:
                    # As for setting: only time the recovery was seen counts.
                    c = count[i]
                    if seen[i]:
                        c += dt
                    seen[i] = 1
                    if c >= self.clear_ms[i]:
                        if self.f_policy[i] == F.P_LATCH or self.rlatch[i]:
                            state[i] = S_RECOVERED
                        else:
                            self._clear(i, v, now)
                        c = 0
                    count[i] = c
                else:
                    count[i] = 0
                    seen[i] = 0
                    if st == S_RECOVERED:
                        state[i] = _S_ACTIVE
            if q:
                first[i] = 0
            st = state[i]
            busy[i] = 1 if (st != _S_IDLE or seen[i] or hold[i] or first[i]) else 0
            if st != _S_IDLE:
                active += 1
                r = f_reaction[i]
                reaction |= (r & ~r_l2) if st == S_RECOVERING else r
                if f_level[i] > level:
                    level = f_level[i]
            elif hold[i]:
                reaction |= f_reaction[i]
        self.reaction = reaction
        self.level = level
        self.n_active = active
        self.due_ms = due
        return reaction

    def _recovering(self, i, v, q, cond, recovered, dt, now):
        s = self.sig
        uv = self.f_kind[i] == F.K_LOW
        wrong = s[F.SIG_DSG_I] if uv else s[F.SIG_CHG_I]
        right = s[F.SIG_CHG_I] if uv else s[F.SIG_DSG_I]
        iq = self.sig_valid[F.SIG_CHG_I]
        worse = q and ((v < self.rec_ref[i] - REC_WORSE_MV) if uv
                       else (v > self.rec_ref[i] + REC_WORSE_MV))
        over = self.rec_over[i]
        if iq and right > self.recovery_ma:
            over += dt
        else:
            over = 0
        self.rec_over[i] = over
        if (iq and wrong >= WRONG_MA) or worse or over >= REC_OVER_MS \
                or ticks_diff(now, self.rec_t0[i]) >= RECOVERY_MAX_MS:
            self.state[i] = _S_ACTIVE  # re-trip: level 2 opens again
            self.count[i] = 0
            self.seen[i] = 0
            self.trip_value[i] = v
            self.set_at[i] = now
            self.latch_ver += 1
            self._log_set(i, v, now)
            return
        if recovered and not cond:
            c = self.count[i]
            if self.seen[i]:
                c += dt
            self.seen[i] = 1
            self.count[i] = c
            if c >= self.clear_ms[i]:
                self._clear(i, v, now)
        else:
            self.count[i] = 0
            self.seen[i] = 0

    def _set(self, i, v, now):
        self.state[i] = _S_ACTIVE
        self.busy[i] = 1
        self.seen[i] = 0
        self.trip_value[i] = v
        self.set_at[i] = now
        c = self.trip_count[i]
        if c < 65535:
            self.trip_count[i] = c + 1
        pol = self.f_policy[i]
        if pol == F.P_RETRY:
            n = self.retry_n[i]
            if n == 0 or ticks_diff(now, self.retry_t0[i]) > self._window_ms:
                self.retry_t0[i] = now
                n = 0
            if n < 255:
                n += 1
            self.retry_n[i] = n
            if n > self._retries:
                self.rlatch[i] = 1
                self.latch_ver += 1
        elif pol == F.P_LATCH:
            self.latch_ver += 1
        self._log_set(i, v, now)

    def _log_set(self, i, v, now):
        if self.log is not None:
            if self.defer_log:
                if not self._logq[i]:
                    self._logq[i] = 1
                    self._nlogq += 1
            else:
                self.log.append(now, EV_FAULT_SET, i, v)

    def flush_log(self, now):
        """Log the fault sets deferred by ``defer_log``, with their own times and
        trip values (``now``: unused, the records keep ``set_at``)."""
        q = self._logq
        for i in range(F.N_FAULTS):
            if q[i]:
                q[i] = 0
                self.log.append(self.set_at[i], EV_FAULT_SET, i, self.trip_value[i])
        self._nlogq = 0

    def _clear(self, i, v, now):
        if self.f_policy[i] == F.P_LATCH or self.rlatch[i]:
            self.latch_ver += 1
        self.state[i] = _S_IDLE
        self.busy[i] = 1
        self.count[i] = 0
        self.seen[i] = 0
        self.rlatch[i] = 0
        if self.log is not None:
            self.log.append(now, EV_FAULT_CLEAR, i, v)

    def reset_latched(self, now, max_level=F.L_CRIT):
        """The reset rule, for latched faults up to ``max_level``; returns how many
        cleared or entered their recovery path.

        A reset is a deliberate user action, so it does not wait out the
        clear delay, but a fault whose condition is still present stays -
        except ov2 / uv2, which enter their recovery path (see above).  The
        retry counter of every over-current fault starts afresh.
        """
        n = 0
        for i in range(F.N_FAULTS):
            if self.f_policy[i] == F.P_RETRY and self.state[i] == _S_IDLE:
                self.retry_n[i] = 0
            st = self.state[i]
            if st == _S_IDLE or st == S_RECOVERING or not self.latched(i) \
                    or self.f_level[i] > max_level:
                continue
            if st == S_RECOVERED or self.ok_now[i]:
                self._clear(i, self.sig[self.f_sig[i]], now)
                self.retry_n[i] = 0
                n += 1
            elif i in F.RECOVERY:
                v = self.sig[self.f_sig[i]]
                self.state[i] = S_RECOVERING
                self.busy[i] = 1
                self.rec_t0[i] = now
                self.rec_ref[i] = v
                self.rec_over[i] = 0
                self.count[i] = 0
                self.seen[i] = 0
                if self.log is not None:
                    self.log.append(now, EV_FAULT_RECOVERY, i, v)
                n += 1
        return n

    def expire_retries(self, now):
        """End every retry series whose window is over (call at least once a
        day): its first trip's tick stamp would read as recent once the tick
        difference wraps (6.2 days), and count a trip days later into it."""
        rn = self.retry_n
        for i in range(F.N_FAULTS):
            if rn[i] and ticks_diff(now, self.retry_t0[i]) > self._window_ms:
                rn[i] = 0

    def force(self, fid, now):
        """Set a fault immediately (used on a firmware exception)."""
        if self.state[fid] == _S_IDLE:
            self._set(fid, 1, now)
        elif self.state[fid] == S_RECOVERING:
            self.state[fid] = _S_ACTIVE
        self.reaction |= self.f_reaction[fid]
        if self.f_level[fid] > self.level:
            self.level = self.f_level[fid]

    # ---- persistence of latches ------------------------------------------
    def latched_ids(self):
        """Ids of the latched faults (allocates; call only when latch_ver moved)."""
        return [i for i in range(F.N_FAULTS) if self.latched(i)]

    def restore(self, ids, now):
        """Latches from the settings store, before the first step: active,
        waiting for the reset rule, their reactions in force at once."""
        for i in ids:
            if not 0 <= i < F.N_FAULTS:
                continue
            pol = self.f_policy[i]
            if pol == F.P_AUTO:
                continue
            if pol == F.P_RETRY:
                self.rlatch[i] = 1
            self.state[i] = _S_ACTIVE
            self.busy[i] = 1
            self.count[i] = 0
            self.seen[i] = 0
            self.reaction |= self.f_reaction[i]
            if self.f_level[i] > self.level:
                self.level = self.f_level[i]
            if self.log is not None:
                self.log.append(now, EV_FAULT_SET, i, -1)  # -1: restored from flash

    def active_word(self, first):
        """Active faults ``first``..``first+15`` as a 16-bit word (Modbus)."""
        w = 0
        for b in range(16):
            i = first + b
            if i < F.N_FAULTS and self.state[i] != _S_IDLE:
                w |= 1 << b
        return w
