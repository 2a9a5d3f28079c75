"""Randomised episodes against the documented fault rules (docs/faults.md,
docs/safety.md), with an invariant checker that knows nothing of the
protection engine.  MicroPython-compatible (a small seeded PRNG of its own,
so CPython and the unix port draw the same episodes).

An episode is a Rig (ScriptedBoard, persisted latches) driven by random
events: cell voltages anywhere from below uv2 to above ov2, single cells and
whole packs, flicker, currents up to short circuit, temperatures from
frozen to over-temperature, invalid and out-of-range readings, dead buses,
a driver that raises, welded relays, reboots, K switch cycles, reset
commands and (valid) parameter writes.

The checker sees only what the board delivered to the BMS (each reading as
the driver stored it) and the relay commands, and checks:

  A  no relay stays closed longer than its fault's delay + 2 ticks while
     the fault's condition holds, in any state, boot included.  A tick is
     the period of the task that samples the condition: 250 ms for cell and
     temperature readings, 50 ms for current and the fast-task flags.  A
     condition is evaluated on the delivered readings, an invalid reading
     holding that sensor's last valid one (the documented rule); its time
     keeps running through a reboot.  Exemption, per the documented
     recovery path: after a reset command, if ov2 (uv2) has held at any
     time since the cells were last past the recovery voltage for its clear
     delay (it may have latched: a flickering reading trips it too), level 2
     may close until the cells are past the recovery voltage (ov_rec /
     uv_rec) for the clear delay; the charge (discharge) relay must stay
     open meanwhile.
  B  no exception escapes a cycle (``bms.step`` never raises), and the
     fail-safe boundary catches exceptions only while the test injects a
     driver that raises (an OverflowError from an out-of-range value would
     show up here on CPython).
  C  a latched fault survives a reboot: every fault latched before the
     reboot is active in the new Bms before its first cycle.

``run_episode(seed, ms)`` returns the list of violations (empty = pass).
"""
from bms import faults as F
from bms import params as P
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2, RELAY_PRE
from bms.core import CMD_RESET_FAULTS
from harness import Rig

STEP = 10
CELL_TICK = 250
FAST_TICK = 50
_CHG = 1
_DSG = 2
_L2 = 4


class Rng:
    """xorshift32: the same sequence under CPython and MicroPython."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 12345) & 0xFFFFFFFF or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x & 0xFFFFFFFF
        return self.s

    def below(self, n):
        return self.next() % n

    def between(self, lo, hi):
        return lo + self.next() % (hi - lo + 1)

    def chance(self, pct):
        return self.next() % 100 < pct


class Recorder:
    """Wraps a ScriptedBoard's reads: what the driver delivered to the BMS."""

    def __init__(self, board, n_temps):
        self.board = board
        self.cells = [None] * len(board.cells)   # last valid value delivered, None: none
        self.cell_invalid = [False] * len(board.cells)
        self.cells_at = None      # time of the last successful cell read
        self.temps = [None] * n_temps
        self.temp_invalid = [False] * n_temps
        self.current = 0
        self.current_at = None
        self.t = 0
        rc, rt, ri = board.read_cells, board.read_temps, board.read_current

        def read_cells(m, now):
            rc(m, now)   # raises OSError on a failing bus: nothing delivered
            for i in range(m.n_cells):
                if m.cell_ok[i]:
                    self.cells[i] = m.cell_mv[i]
                    self.cell_invalid[i] = False
                else:
                    self.cell_invalid[i] = True
            self.cells_at = self.t

        def read_temps(m, now):
            rt(m, now)
            for i in range(len(self.temps)):
                if m.temp_status[i] == 0:
                    self.temps[i] = m.temp_dc[i]
                    self.temp_invalid[i] = False
                else:
                    self.temp_invalid[i] = True

        def read_current(m, now):
            ri(m, now)
            v = m.current_ma
            if -10000000 <= v <= 10000000:
                self.current = v
                self.current_at = self.t

        board.read_cells = read_cells
        board.read_temps = read_temps
        board.read_current = read_current

    def reboot(self):
        # A hold is the last valid value *this* BMS has seen.
        for i in range(len(self.cells)):
            if self.cell_invalid[i]:
                self.cells[i] = None
        for i in range(len(self.temps)):
            if self.temp_invalid[i]:
                self.temps[i] = None


class Checker:
    def __init__(self, rig, rec):
        self.r = rig
        self.rec = rec
        self.since = {}
        self.exempt = {}
        self.touched = {}   # ov2 / uv2 held since the cells were last past recovery
        self.past = {}
        self.violations = []
        self.t = 0
        self.param_at = None   # time of the last parameter write

    def _pv(self, name):
        return self.r.params[P.index(name)]

    def conditions(self):
        """(name, holds, delay ms, tick ms, relay mask) per documented rule."""
        rec = self.rec
        b = self.r.board
        n = self.r.params[P.P_CELL_COUNT]
        vals = [v for v in rec.cells[:n] if v is not None]
        hi = max(vals) if vals else None
        lo = min(vals) if vals else None
        pv = self._pv
        out = []
        have = hi is not None
        out.append(("ov1", have and hi >= pv("ov1"), pv("ov_delay"), CELL_TICK, _CHG))
        out.append(("ov2", have and hi >= pv("ov2"), pv("ov2_delay"), CELL_TICK, _CHG | _L2))
        out.append(("uv1", have and lo <= pv("uv1"), pv("uv_delay"), CELL_TICK, _DSG))
        out.append(("uv2", have and lo <= pv("uv2"), pv("uv2_delay"), CELL_TICK, _DSG | _L2))
        out.append(("cell_diff", have and hi - lo >= pv("diff_prot"), 5000, CELL_TICK,
                    _CHG | _DSG))
        bad = False
        for i in range(n):
            if rec.cell_invalid[i]:
                bad = True
        out.append(("cell_invalid", bad, 0, CELL_TICK, _CHG | _DSG))
        out.append(("cells_unread", rec.cells_at is None or self.t - rec.cells_at > 1500, 0,
                    FAST_TICK, _CHG | _DSG))
        i = rec.current
        fresh = rec.current_at is not None and self.t - rec.current_at <= 500
        out.append(("current_unread", not fresh, 0, FAST_TICK, _CHG | _DSG))
        out.append(("chg_oc", i >= pv("chg_oc") * 100, pv("chg_oc_delay"), FAST_TICK, _CHG))
        out.append(("dsg_oc", -i >= pv("dsg_oc") * 100, pv("dsg_oc_delay"), FAST_TICK, _DSG))
        out.append(("peak", -i >= pv("peak") * 100, pv("peak_delay"), FAST_TICK, _DSG))
        out.append(("short", -i >= pv("short_circuit") * 100, 0, FAST_TICK, _DSG | _CHG))
        rel = b.relays
        # Only a current read now (not one held from before a bus failure)
        # shows a relay that did not open.
        now_read = rec.current_at is not None and self.t - rec.current_at < FAST_TICK
        weld = now_read and ((i >= 2000 and not rel[RELAY_CHG]) or
                             (-i >= 2000 and not rel[RELAY_DSG] and not rel[RELAY_PRE]))
        out.append(("relay_weld", weld, 500, FAST_TICK, _L2))
        t = rec.temps
        roles = b.temp_roles
        tp = [t[k] for k in range(len(t)) if roles[k] == 0 and t[k] is not None]
        tc = [t[k] for k in range(len(t)) if roles[k] == 2 and t[k] is not None]
        if tp:
            out.append(("t_power", max(tp) >= pv("t_power_ot") * 10, 2000, CELL_TICK,
                        _CHG | _DSG))
        if tc:
            out.append(("t_cell", max(tc) >= pv("t_cell_ot") * 10, 2000, CELL_TICK,
                        _CHG | _DSG))
            out.append(("t_chg", max(tc) >= pv("t_chg_ot") * 10, 2000, CELL_TICK, _CHG))
            out.append(("lt_chg", min(tc) <= pv("lt_chg") * 10, 2000, CELL_TICK, _CHG))
            out.append(("lt_dsg", min(tc) <= pv("lt_dsg") * 10, 2000, CELL_TICK, _DSG))
        ts = False
        for k in range(len(t)):
            if roles[k] in (0, 2) and rec.temp_invalid[k]:
                ts = True
        out.append(("temp_sensor", ts, 1000, CELL_TICK, _CHG | _DSG))
        out.append(("internal", b.crash, 0, FAST_TICK, _CHG | _DSG | _L2))
        return out

    def on_reset(self):
        """A reset command: a latched ov2 / uv2 may take the recovery path."""
        for name in self.touched:
            self.exempt[name] = True

    def _past_recovery(self, name):
        n = self.r.params[P.P_CELL_COUNT]
        vals = self.rec.cells[:n]
        if not vals or None in vals or True in self.rec.cell_invalid[:n]:
            return False    # recovery needs complete data (docs/safety.md)
        if name == "ov2":
            return max(vals) < self._pv("ov_rec")
        return min(vals) > self._pv("uv_rec")

    def check(self):
        rel = self.r.board.relays
        for name in ("ov2", "uv2"):
            # Past recovery for the clear delay (1 s) + 2 ticks, as the rule says.
            if not self._past_recovery(name):
                self.past[name] = None
                continue
            if self.past.get(name) is None:
                self.past[name] = self.t
            if self.t - self.past[name] >= 1000 + 2 * CELL_TICK:
                if name in self.exempt:
                    del self.exempt[name]
                if name in self.touched:
                    del self.touched[name]
        for name, holds, delay, tick, mask in self.conditions():
            if holds and name in ("ov2", "uv2"):
                self.touched[name] = True
            if not holds:
                if name in self.since:
                    del self.since[name]
                continue
            t0 = self.since.get(name)
            if t0 is None:
                self.since[name] = self.t
                continue
            if self.t - t0 <= delay + 2 * tick:
                continue
            # A delay written while the condition held: the new delay counts
            # from the start, but nothing can trip before the next tick.
            if self.param_at is not None and self.t - self.param_at <= 2 * tick:
                continue
            if self.exempt.get(name):
                mask = _CHG if name == "ov2" else _DSG
            closed = []
            if mask & _CHG and rel[RELAY_CHG]:
                closed.append("charge")
            if mask & _DSG and (rel[RELAY_DSG] or rel[RELAY_PRE]):
                closed.append("discharge")
            if mask & _L2 and rel[RELAY_L2]:
                closed.append("level2")
            if closed:
                self.violations.append("A: %s held %d ms (delay %d) at t=%d with %s closed"
                                       % (name, self.t - t0, delay, self.t, "+".join(closed)))


def _event(rng, r, ck):
    """One random event; returns a description (for a failing episode's trace)."""
    b = r.board
    pv = ck._pv
    n = r.params[P.P_CELL_COUNT]
    k = rng.below(100)
    if k < 22:
        i = rng.below(n)
        b.cells[i] = rng.between(pv("uv2") - 150, pv("ov2") + 150)
        return "cell %d = %d" % (i, b.cells[i])
    if k < 30:
        v = rng.between(pv("uv1") + 50, pv("ov1") - 50)
        for i in range(len(b.cells)):
            b.cells[i] = v
        b.flicker = None
        return "all cells %d" % v
    if k < 34:
        i = rng.below(n)
        hi = pv("ov2") + 30 if rng.chance(50) else pv("uv2") - 30
        seq = [hi if rng.chance(50) else 3300 for _ in range(rng.between(2, 4))]
        seq[0] = hi
        b.flicker = (i, seq)
        return "flicker cell %d %s" % (i, seq)
    if k < 48:
        choices = (0, 0, 3000, -3000, pv("chg_oc") * 100 + 2000, -(pv("dsg_oc") * 100 + 2000),
                   -(pv("peak") * 100 + 2000), -(pv("short_circuit") * 100 + 5000))
        b.current_ma = choices[rng.below(len(choices))]
        return "current %d" % b.current_ma
    if k < 58:
        j = rng.below(len(b.temps))
        b.temps[j] = rng.between(-350, 950) if rng.chance(60) else 250
        return "temp %d = %d" % (j, b.temps[j])
    if k < 62:
        for j in range(len(b.temps)):
            b.temps[j] = 250
        b.temp_status = [0] * len(b.temps)
        return "temps normal"
    if k < 66:
        i = rng.below(n)
        b.cell_bad = [i] if rng.chance(70) else []
        return "cell_bad %s" % b.cell_bad
    if k < 69:
        i = rng.below(n)
        b.cells[i] = (68836, -1, 1 << 40, 65536 + 3300)[rng.below(4)]
        return "cell %d out of range %d" % (i, b.cells[i])
    if k < 71:
        b.current_ma = (1 << 40) if rng.chance(50) else -(1 << 33)
        return "current out of range"
    if k < 74:
        j = rng.below(len(b.temps))
        b.temp_status[j] = 1 if rng.chance(60) else 0
        return "ntc %d status %d" % (j, b.temp_status[j])
    if k < 77:
        what = rng.below(3)
        cnt = rng.between(1, 40)
        if what == 0:
            b.fail_cells = cnt
        elif what == 1:
            b.fail_current = cnt * 5
        else:
            b.fail_temps = cnt
        return "bus fails %d x%d" % (what, cnt)
    if k < 79:
        b.crash = not b.crash
        return "crash %s" % b.crash
    if k < 82:
        b.weld = (1 << RELAY_CHG, (1 << RELAY_DSG) | (1 << RELAY_PRE), 0, 0)[rng.below(4)]
        return "weld %d" % b.weld
    if k < 88:
        return "reboot"
    if k < 92:
        b.key_on = not b.key_on
        return "key %s" % b.key_on
    if k < 97:
        ck.on_reset()
        r.bms.request(CMD_RESET_FAULTS)
        return "reset"
    # A valid parameter write (the user may change delays and thresholds).
    name = ("ov_delay", "uv_delay", "ov2_delay", "chg_oc_delay", "oc_release")[rng.below(5)]
    lo, hi = {"ov_delay": (4000, 10000), "uv_delay": (4000, 10000), "ov2_delay": (500, 3900),
              "chg_oc_delay": (100, 5000), "oc_release": (1, 60)}[name]
    try:
        r.params.set(P.index(name), rng.between(lo, hi))
        ck.param_at = ck.t
    except P.ParamError:
        pass
    return "param %s" % name


def run_episode(seed, ms=30000, rig_hook=None):
    """One seeded episode of ``ms`` simulated ms; returns (violations, trace)."""
    rng = Rng(seed)
    r = Rig(persist=True, key_enable=rng.below(2))
    if rig_hook is not None:
        rig_hook(r)
    rec = Recorder(r.board, len(r.board.temps))
    b = r.bms   # the Bms took the board's read methods at construction
    b._rd_current, b._rd_cells, b._rd_temps = r.board.read_current, r.board.read_cells, \
        r.board.read_temps
    ck = Checker(r, rec)
    trace = []
    t = 0
    next_ev = rng.between(200, 2000)
    while t < ms and len(ck.violations) < 5:
        if t >= next_ev:
            ev = _event(rng, r, ck)
            trace.append((t, ev))
            next_ev = t + rng.between(100, 3000)
            if ev == "reboot":
                before = r.bms.prot.latched_ids()
                r.reboot()
                rec.reboot()
                for fid in before:
                    if not r.bms.prot.active(fid):
                        ck.violations.append("C: %s latched before the reboot at t=%d, not after"
                                             % (F.TABLE[fid][F.F_NAME], t))
        r.clock.advance(STEP)
        t += STEP
        ck.t = t
        rec.t = t
        exc0 = r.bms.exceptions
        crash = r.board.crash
        try:
            r.step()
        except Exception as e:  # noqa: BLE001 - invariant B
            ck.violations.append("B: %r escaped a cycle at t=%d" % (e, t))
            break
        if r.bms.exceptions != exc0 and not crash:
            ck.violations.append("B: exception %r inside a cycle at t=%d with no injected crash"
                                 % (r.bms.last_exception, t))
        ck.check()
    return ck.violations, trace


def episodes_from_env(default):
    try:
        import os
        v = os.getenv("SAFETY_EPISODES")
    except (ImportError, AttributeError):
        v = None
    return int(v) if v else default
