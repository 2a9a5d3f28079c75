"""Relay/contactor state machine: discharge with precharge, charge, level-2, heater.

The discharge path has explicit states; every transition goes through
``_enter`` which sets the relay pattern and logs the change.  Closing order
on the discharge side: level-2 closed -> precharge relay closed -> wait until
the load-side voltage reaches ``precharge_pct`` of the pack voltage (or
time out: latched precharge fault, protecting the resistor and preventing
a hot close that welds contacts; attempts cut short by a discharge block add
their time up until one completes or the resistor has cooled for
_PRE_COOL_MS, so a flickering block cannot cook it in short bursts) -> discharge relay closed -> precharge relay
opened after a short overlap.  Opening is immediate and unconditional.

Relays are only ever commanded through ``board.set_relays(states)`` and only
when the pattern changes.
"""
from micropython import const

from bms.eventlog import EV_DSG_STATE, EV_RELAY
from bms.faults import R_CHG, R_DSG, R_HEAT, R_L2
from bms.ticks import ticks_diff

RELAY_DSG = const(0)
RELAY_PRE = const(1)
RELAY_CHG = const(2)
RELAY_L2 = const(3)
RELAY_HEAT = const(4)
_N_RELAYS = const(5)
RELAY_NAMES = ("discharge", "precharge", "charge", "level2", "heater")

D_OPEN = const(0)
D_PRECHARGE = const(1)
D_CLOSED = const(2)
D_NAMES = ("open", "precharge", "closed")

_PRE_OVERLAP_MS = const(200)
# A precharge resistor sized for one precharge_timeout at a time cools in
# tens of seconds; until then an interrupted attempt's heat still counts.
_PRE_COOL_MS = const(60000)


class Contactors:
    def __init__(self, board, log=None):
        self.board = board
        self.log = log
        self.state = bytearray(_N_RELAYS)
        self._want = bytearray(_N_RELAYS)
        self.dsg_state = D_OPEN
        self._t0 = 0
        self.precharge_failed = False
        self.precharge_ms = 0  # duration of the last successful precharge
        self.precharge_spent = 0  # ms of interrupted attempts since the last success
        self._pre_end = 0
        self._unsure = True    # the outputs may not hold ``state`` (a write raised)
        try:
            self.board.set_relays(self.state)
            self._unsure = False
        except OSError:
            pass               # everything open: repeated at the first step

    def _enter(self, st, now):
        if self.dsg_state == D_PRECHARGE and st == D_OPEN:
            self.precharge_spent += ticks_diff(now, self._t0)
            self._pre_end = now
        self.dsg_state = st
        self._t0 = now
        if self.log is not None:
            self.log.append(now, EV_DSG_STATE, st, 0)

    def open_all(self, now):
        """Fail-safe: everything open at once, no sequencing."""
        w = self._want
        for i in range(_N_RELAYS):
            w[i] = 0
        if self.dsg_state != D_OPEN:
            self._enter(D_OPEN, now)
        self._apply(now)

    def step(self, now, block, chg_req, dsg_req, heat_req, pack_mv, load_mv, load_ok,
             pre_pct, pre_timeout):
        """One decision; ``block`` is the protection reaction mask."""
        w = self._want
        l2 = not (block & R_L2)
        w[RELAY_L2] = 1 if l2 else 0
        w[RELAY_CHG] = 1 if (l2 and chg_req and not (block & R_CHG)) else 0
        w[RELAY_HEAT] = 1 if (l2 and heat_req and not (block & R_HEAT)) else 0
        dsg_ok = l2 and dsg_req and not (block & R_DSG)

        st = self.dsg_state
        if self.precharge_spent and st == D_OPEN:
            # Called every cycle, so the cool-down is seen long before the
            # stamp's difference wraps (6.2 days; negative after it).
            d = ticks_diff(now, self._pre_end)
            if d >= _PRE_COOL_MS or d < 0:
                self.precharge_spent = 0
        if not dsg_ok:
            if st != D_OPEN:
                self._enter(D_OPEN, now)
        elif st == D_OPEN:
            if not self.precharge_failed:
                self._enter(D_PRECHARGE, now)
        elif st == D_PRECHARGE:
            elapsed = ticks_diff(now, self._t0)
            # Integer compare: load/pack >= pct/100 without division.
            if load_ok and pack_mv > 0 and load_mv * 100 >= pack_mv * pre_pct:
                self.precharge_ms = elapsed
                self.precharge_spent = 0
                self._enter(D_CLOSED, now)
            elif elapsed + self.precharge_spent >= pre_timeout:
                self.precharge_failed = True
                self._enter(D_OPEN, now)

        st = self.dsg_state
        if st == D_OPEN:
            w[RELAY_DSG] = 0
            w[RELAY_PRE] = 0
        elif st == D_PRECHARGE:
            w[RELAY_DSG] = 0
            w[RELAY_PRE] = 1
        else:
            w[RELAY_DSG] = 1
            # Once open it stays open: days later the close's tick stamp
            # would read as recent again (tick differences wrap at 6.2 days).
            w[RELAY_PRE] = 1 if (w[RELAY_PRE] and ticks_diff(now, self._t0) < _PRE_OVERLAP_MS) else 0
        self._apply(now)

    def _apply(self, now):
        w = self._want
        s = self.state
        changed = 0
        for i in range(_N_RELAYS):
            if s[i] != w[i]:
                changed |= 1 << i
                s[i] = w[i]
        if changed or self._unsure:
            # The coils first, the log after: each record costs about 0.5 ms
            # on an RP2040, and a relay that must open should not wait for it.
            # A write that raised is repeated at every step until one goes
            # through: the outputs may still hold the old pattern.
            self._unsure = True
            try:
                self.board.set_relays(s)
                self._unsure = False
            finally:
                if self.log is not None:
                    for i in range(_N_RELAYS):
                        if changed & (1 << i):
                            self.log.append(now, EV_RELAY, i, s[i])

    def clear_precharge_fault(self):
        self.precharge_failed = False
        self.precharge_spent = 0
