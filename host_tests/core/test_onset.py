# The over-current onset rule of docs/faults.md ("Onset") and docs/safety.md
# (timing model): with the shunt monitor's ALERT comparator wired, chg_oc /
# dsg_oc set when their condition has held for their delay since the
# comparator's edge, not up to a tick later; never before that delay; never
# back-dated further than the previous current sample; rows above the
# comparator's threshold (peak) do not back-date.  The last test shows the
# suite catches a protection that back-dates without those bounds.
# MicroPython-compatible: runs under pytest and the unix port.
from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG
from bms.core import Bms
from bms.protection import Protection
from bms.ticks import ticks_diff
from harness import Rig
from scripted_board import ScriptedBoard

DELAY = 1000


class _Alert:
    """What drivers.gpio.Alert keeps: asserted, and since when."""

    def __init__(self):
        self.on = False
        self.at = 0
        self.refreshes = 0

    def use_clock(self, ticks_ms):
        pass            # the test stamps edges on the rig's clock itself

    def refresh(self):
        self.refreshes += 1


class AlertBoard(ScriptedBoard):
    """A ScriptedBoard with an INA228-like comparator on the flowing current:
    ``comparator()`` (called every ms by the test) asserts it while the
    current is beyond the limits the core programmed and stamps the edge."""

    def __init__(self, clock, **kw):
        ScriptedBoard.__init__(self, **kw)
        self.clock = clock
        self.alert_in = _Alert()
        self.limits = None
        self.stuck = False

    def set_current_alert(self, over_ma, under_ma):
        self.limits = (over_ma, under_ma)
        return True

    def comparator(self):
        a = self.alert_in
        if self.stuck:
            a.on = True
            return
        i = self.flowing()
        on = self.limits is not None and (i > self.limits[0] or i < self.limits[1])
        if on and not a.on:
            a.at = self.clock.ticks_ms()
        a.on = on


def _rig(with_alert=True, **over):
    p = {"dsg_oc_delay": DELAY, "chg_oc_delay": DELAY}
    p.update(over)
    r = Rig(**p)
    if with_alert:
        r.params.listener = None
        r.board = AlertBoard(r.clock, max_cells=16, cells=16, mv=3300)
        r.bms = Bms(r.board, r.params, r.clock, r.log)
    return r


def _ms(r, n=1):
    for _ in range(n):
        r.clock.advance(1)
        if isinstance(r.board, AlertBoard):
            r.board.comparator()
        r.step()


def _thr(r, fid):
    return F.spec_value(F.TABLE[fid][F.F_THR], r.params.values)


def _until_open(r, relay, limit=4000):
    t = 0
    while r.board.relays[relay] and t < limit:
        _ms(r)
        t += 1
    return t if not r.board.relays[relay] else -1


def _fast_ticks(r):
    return r.bms.sched.runs[r.bms._fast_i]


def test_dsg_oc_with_the_comparator_sets_at_its_delay_from_the_edge():
    for phase in range(0, 50, 7):
        r = _rig()
        _ms(r, 2000 + phase)
        assert r.board.relays[RELAY_DSG]
        assert r.board.limits is not None
        r.board.current_ma = -(_thr(r, F.DSG_OC) + 20000)
        t = _until_open(r, RELAY_DSG)
        # The comparator stamps the step's ms; the extra tick lands on the delay.
        assert DELAY <= t <= DELAY + 1, (phase, t)
        assert r.bms.prot.active(F.DSG_OC)


def test_chg_oc_with_the_comparator_sets_at_its_delay_from_the_edge():
    for phase in (3, 26, 49):
        r = _rig()
        _ms(r, 2000 + phase)
        assert r.board.relays[RELAY_CHG]
        r.board.current_ma = _thr(r, F.CHG_OC) + 20000
        t = _until_open(r, RELAY_CHG)
        assert DELAY <= t <= DELAY + 1, (phase, t)


def test_without_a_comparator_the_delay_ends_at_a_tick():
    worst = 0
    for phase in range(0, 50, 7):
        r = _rig(with_alert=False)
        _ms(r, 2000 + phase)
        r.board.current_ma = -(_thr(r, F.DSG_OC) + 20000)
        t = _until_open(r, RELAY_DSG)
        assert DELAY <= t <= DELAY + 50, (phase, t)
        worst = max(worst, t)
    assert worst > DELAY + 25    # the sampled worst case the comparator removes


def test_a_stuck_comparator_back_dates_no_further_than_the_previous_sample():
    for phase in range(1, 50, 8):
        r = _rig()
        r.board.stuck = True         # asserted since boot: a broken ALERT line
        _ms(r, 2000 + phase)
        before = _fast_ticks(r)
        t0 = r.clock.ticks_ms()
        last_sample = r.bms._last_fast
        r.board.current_ma = -(_thr(r, F.DSG_OC) + 20000)
        t = _until_open(r, RELAY_DSG)
        assert _fast_ticks(r) > before
        # Pending from the previous sample at the earliest: never sooner.
        assert ticks_diff(t0, last_sample) + t >= DELAY, (phase, t)
        assert t <= DELAY + 50


def test_peak_above_the_comparator_threshold_does_not_back_date():
    peak_delay = F.spec_value(F.TABLE[F.PEAK][F.F_DELAY], _rig().params.values)
    for phase in (5, 20, 40):
        r = _rig()
        _ms(r, 2000 + phase)
        # The comparator fires at the dsg_oc level; 30 ms later the current
        # reaches the peak level: the peak condition began then.
        r.board.current_ma = -(_thr(r, F.DSG_OC) + 1000)
        _ms(r, 30)
        r.board.current_ma = -(_thr(r, F.PEAK) + 20000)
        t = _until_open(r, RELAY_DSG)
        assert r.bms.prot.active(F.PEAK)
        assert peak_delay <= t <= peak_delay + 50, (phase, t)


def test_flash_writes_wait_for_the_extra_tick_too():
    # bms.services writes flash only with room before the next fast run: the
    # extra tick that sets the fault at its delay counts as one.
    r = _rig()
    _ms(r, 2017)
    r.board.current_ma = -(_thr(r, F.DSG_OC) + 20000)
    s = r.bms.sched
    i = r.bms._fast_i
    for _ in range(DELAY):
        _ms(r)
        if s.has_extra[i]:
            break
    assert s.has_extra[i]
    now = r.clock.ticks_ms()
    assert ticks_diff(s.extra[i], now) < ticks_diff(s.next[i], now)
    assert r.bms.fast_room_ms() == ticks_diff(s.extra[i], now)


def test_the_suite_catches_a_protection_that_back_dates_without_bounds():
    orig = Protection.step

    def unbounded(self, m, now):
        # Deliberately broken: every row on a comparator's signal counts
        # its delay from the edge, however long ago and whatever its threshold.
        for k in (F.SIG_CHG_I, F.SIG_DSG_I):
            if self.on_ok[k]:
                for i in range(F.N_FAULTS):
                    if self.f_sig[i] == k and self.state[i] == 0 and not self.seen[i]:
                        self.seen[i] = 1
                        self.count[i] = ticks_diff(now, self.on_at[k])
        return orig(self, m, now)

    caught = []
    Protection.step = unbounded
    try:
        for test in (test_a_stuck_comparator_back_dates_no_further_than_the_previous_sample,
                     test_peak_above_the_comparator_threshold_does_not_back_date):
            try:
                test()
            except AssertionError:
                caught.append(test.__name__)
    finally:
        Protection.step = orig
    assert len(caught) == 2, caught
