"""Protection engine: evaluates the fault table against the snapshot.

Called every fast tick.  All state lives in preallocated arrays indexed by
fault id; thresholds are recomputed only when the parameter set's version
changes, so a steady-state ``step`` allocates nothing.

Debounce (after foxBMS's diagnosis module): while a fault is inactive its
counter counts up by the elapsed ms while the condition holds and down while
it does not; the fault sets when the counter reaches the set delay.  Once
active, the recovery condition must hold continuously for the clear delay.
Latched faults then wait for ``reset_latched`` instead of clearing.
"""
from array import array

from micropython import const

from bms import faults as F
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER
from bms.eventlog import EV_FAULT_CLEAR, EV_FAULT_SET
from bms.ticks import ticks_diff

# Fault states.
_S_IDLE = const(0)
_S_ACTIVE = const(1)
S_RECOVERED = const(2)  # latched fault whose condition has cleared; awaits reset


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
        self.clear_ms = array("i", [0] * n)
        self.count = array("i", [0] * n)
        self.state = bytearray(n)
        self.seen = bytearray(n)  # condition held at the previous tick
        self.ok_now = bytearray(n)  # recovery condition holds at this tick
        self.trip_value = array("i", [0] * n)
        self.trip_count = array("H", [0] * n)
        self.set_at = array("i", [0] * n)
        self.sig_valid = bytearray(F.N_SIGNALS)
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
        self.reaction = 0  # OR of the reactions of active faults
        self.level = 0     # highest level among active faults
        self.n_active = 0
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
            self.delay[i] = F.spec_value(row[F.F_DELAY], v)
            self.clear_ms[i] = F.spec_value(row[F.F_CLEAR], v)
        self._pver = self.params.version

    def set_flag(self, sig, on):
        self.flags[sig] = 1 if on else 0

    def active(self, fid):
        return self.state[fid] != _S_IDLE

    def _signals(self, m):
        s = self.sig
        ok = self.sig_valid
        cells = m.cells_seen and m.bad_cells < m.n_cells
        s[F.SIG_CELL_MAX] = m.max_mv
        s[F.SIG_CELL_MIN] = m.min_mv
        s[F.SIG_CELL_DIFF] = m.diff_mv
        ok[F.SIG_CELL_MAX] = cells
        ok[F.SIG_CELL_MIN] = cells
        ok[F.SIG_CELL_DIFF] = cells
        i = m.current_ma
        s[F.SIG_CHG_I] = i if i > 0 else 0
        s[F.SIG_DSG_I] = -i if i < 0 else 0
        ok[F.SIG_CHG_I] = m.current_seen
        ok[F.SIG_DSG_I] = m.current_seen
        t = m.tmax
        s[F.SIG_T_POWER] = t[ROLE_POWER]
        s[F.SIG_T_BAL] = t[ROLE_BALANCE]
        s[F.SIG_T_CELL_MAX] = t[ROLE_CELL]
        s[F.SIG_T_CELL_MIN] = m.tmin[ROLE_CELL]
        # Sentinel values (no valid sensor) can never trip: the sensor fault does.
        ok[F.SIG_T_POWER] = m.temps_seen
        ok[F.SIG_T_BAL] = m.temps_seen
        ok[F.SIG_T_CELL_MAX] = m.temps_seen
        ok[F.SIG_T_CELL_MIN] = m.temps_seen
        fl = self.flags
        for k in range(F.FIRST_FLAG, F.N_SIGNALS):
            s[k] = fl[k]
            ok[k] = 1

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
        self._last = now
        self._signals(m)
        s = self.sig
        ok = self.sig_valid
        reaction = 0
        level = 0
        active = 0
        for i in range(F.N_FAULTS):
            k = self.f_sig[i]
            kind = self.f_kind[i]
            v = s[k]
            valid = ok[k]
            if kind == F.K_LOW:
                cond = valid and v <= self.thr[i]
                recovered = (not valid) or v > self.rec[i]
            else:
                cond = valid and v >= self.thr[i]
                recovered = (not valid) or v < self.rec[i]
            self.ok_now[i] = 1 if (recovered and not cond) else 0
            st = self.state[i]
            if st == _S_IDLE:
                c = self.count[i]
                if cond:
                    # Count only time the condition was seen to hold: the
                    # interval before the first observation does not count,
                    # so no fault ever trips before its delay.
                    if self.seen[i]:
                        c += dt
                    self.seen[i] = 1
                    if c >= self.delay[i]:
                        self._set(i, v, now)
                        c = 0
                else:
                    self.seen[i] = 0
                    if c > 0:
                        c -= dt
                        if c < 0:
                            c = 0
                self.count[i] = c
            else:
                if recovered and not cond:
                    # As for setting: only time the recovery was seen counts.
                    c = self.count[i]
                    if self.seen[i]:
                        c += dt
                    self.seen[i] = 1
                    if c >= self.clear_ms[i]:
                        if self.f_policy[i] == F.P_LATCH:
                            self.state[i] = S_RECOVERED
                        else:
                            self._clear(i, v, now)
                        c = 0
                    self.count[i] = c
                else:
                    self.count[i] = 0
                    self.seen[i] = 0
                    if st == S_RECOVERED:
                        self.state[i] = _S_ACTIVE
            if self.state[i] != _S_IDLE:
                active += 1
                reaction |= self.f_reaction[i]
                if self.f_level[i] > level:
                    level = self.f_level[i]
        self.reaction = reaction
        self.level = level
        self.n_active = active
        return reaction

    def _set(self, i, v, now):
        self.state[i] = _S_ACTIVE
        self.seen[i] = 0
        self.trip_value[i] = v
        self.set_at[i] = now
        c = self.trip_count[i]
        if c < 65535:
            self.trip_count[i] = c + 1
        if self.log is not None:
            self.log.append(now, EV_FAULT_SET, i, v)

    def _clear(self, i, v, now):
        self.state[i] = _S_IDLE
        self.count[i] = 0
        self.seen[i] = 0
        if self.log is not None:
            self.log.append(now, EV_FAULT_CLEAR, i, v)

    def reset_latched(self, now):
        """Clear latched faults whose condition is gone; returns how many.

        A reset is a deliberate user action, so it does not wait out the
        clear delay, but a fault whose condition is still present stays.
        """
        n = 0
        for i in range(F.N_FAULTS):
            st = self.state[i]
            if st == S_RECOVERED or (st == _S_ACTIVE and self.ok_now[i]
                                     and self.f_policy[i] == F.P_LATCH):
                self._clear(i, self.sig[self.f_sig[i]], now)
                n += 1
        return n

    def force(self, fid, now):
        """Set a fault immediately (used on a firmware exception)."""
        if self.state[fid] == _S_IDLE:
            self._set(fid, 1, now)
        self.reaction |= self.f_reaction[fid]
        if self.f_level[fid] > self.level:
            self.level = self.f_level[fid]

    def active_word(self, first):
        """Active faults ``first``..``first+15`` as a 16-bit word (Modbus)."""
        w = 0
        for b in range(16):
            i = first + b
            if i < F.N_FAULTS and self.state[i] != _S_IDLE:
                w |= 1 << b
        return w
