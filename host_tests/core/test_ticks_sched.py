# Tick arithmetic across the wrap and the fixed-period scheduler.
from bms.scheduler import Scheduler
from bms.ticks import TICKS_MAX, VirtualClock, ticks_add, ticks_diff


def test_ticks_wrap():
    a = TICKS_MAX - 5
    b = ticks_add(a, 10)
    assert b == 4
    assert ticks_diff(b, a) == 10
    assert ticks_diff(a, b) == -10
    assert ticks_diff(ticks_add(0, -1), 0) == -1


def test_periods_absolute_across_wrap():
    clk = VirtualClock(TICKS_MAX - 95)
    s = Scheduler(clk)
    log = []
    s.add(lambda now: log.append(("a", clk.elapsed_ms)), 50)
    s.add(lambda now: log.append(("b", clk.elapsed_ms)), 100, 10)
    for _ in range(300):
        s.run_due()
        clk.advance(1)
    a = [t for n, t in log if n == "a"]
    b = [t for n, t in log if n == "b"]
    assert a == [0, 50, 100, 150, 200, 250], a
    assert b == [10, 110, 210], b
    assert s.overruns[0] == 0


def test_late_task_counts_overrun_and_does_not_burst():
    clk = VirtualClock(0)
    s = Scheduler(clk)
    n = []
    s.add(lambda now: n.append(now), 50)
    s.run_due()
    clk.advance(500)  # the loop was stuck for ten periods
    assert s.run_due() == 1
    assert s.overruns[0] == 1
    assert s.run_due() == 0  # no catch-up burst
    assert s.ms_to_next() == 50


def test_task_gets_its_deadline_so_periods_count_exactly():
    # Passes start late by a varying few ms (whatever ran before): the task's
    # ``now`` is still its tick time, so 20 ticks of 50 ms are 1000 ms.
    clk = VirtualClock(TICKS_MAX - 500)
    s = Scheduler(clk)
    seen = []
    s.add(lambda now: seen.append((now, clk.ticks_ms())), 50, 25)
    jitter = (0, 3, 1, 2, 0, 4, 1)
    k = 0
    while len(seen) < 40:
        clk.advance(1)
        if s.ms_to_next() == 0:
            clk.advance(jitter[k % len(jitter)])   # the pass begins this late
            k += 1
            s.run_due()
    nows = [n for n, _ in seen]
    assert all(ticks_diff(b, a) == 50 for a, b in zip(nows, nows[1:])), nows
    assert any(ticks_diff(real, n) > 0 for n, real in seen)   # the passes were late
    assert all(0 <= ticks_diff(real, n) <= 4 for n, real in seen)
    # The worst lateness is kept (the loop held by something else) until reset.
    assert s.late_max[0] == max(ticks_diff(real, n) for n, real in seen) == 4
    s.reset_timing()
    assert s.late_max[0] == 0
    # A run more than a period late gets the real time.
    clk.advance(200)
    s.run_due()
    assert seen[-1][0] == seen[-1][1] and s.overruns[0] == 1


def test_tasks_keep_their_phases_after_a_long_stall():
    clk = VirtualClock(1000)
    s = Scheduler(clk)
    runs = {"cells": [], "fast": []}
    s.add(lambda now: runs["cells"].append(now), 250)
    s.add(lambda now: runs["fast"].append(now), 50, 25)
    clk.advance(1234)        # start-up, or a stop at the REPL
    for _ in range(1000):
        s.run_due()
        clk.advance(1)
    assert s.overruns[0] == 1 and s.overruns[1] == 1
    # After the one late run each, both are back on their grids: the cell
    # sweep on multiples of 250 from its start, the fast tick 25 ms off them.
    assert all((t - 1000) % 250 == 0 for t in runs["cells"][1:]), runs["cells"]
    assert all((t - 1000) % 50 == 25 for t in runs["fast"][1:]), runs["fast"]


def test_raising_task_cannot_spin():
    clk = VirtualClock(0)
    s = Scheduler(clk)

    def bad(now):
        raise RuntimeError("x")
    s.add(bad, 20)
    try:
        s.run_due()
    except RuntimeError:
        pass
    assert s.ms_to_next() == 20


def test_ms_to_next():
    clk = VirtualClock(100)
    s = Scheduler(clk)
    s.add(lambda now: None, 250)
    s.add(lambda now: None, 50, 7)
    assert s.ms_to_next() == 0
    s.run_due()
    assert s.ms_to_next() == 7


def test_run_at_is_one_extra_run_and_keeps_the_grid():
    clk = VirtualClock(TICKS_MAX - 20)   # across the wrap
    s = Scheduler(clk)
    got = []
    s.add(lambda now: got.append(ticks_diff(now, base)), 50, 25)
    base = clk.ticks_ms()
    s.run_at(0, ticks_add(base, 10))      # before the first deadline (25)
    assert s.ms_to_next() == 10
    for _ in range(130):
        s.run_due()
        clk.advance(1)
    # The extra run at 10, then the grid as it was: 25, 75, 125.
    assert got == [10, 25, 75, 125], got


def test_run_at_after_the_next_deadline_is_ignored():
    clk = VirtualClock(0)
    s = Scheduler(clk)
    got = []
    s.add(lambda now: got.append(now), 50)
    s.run_due()
    s.run_at(0, 60)                       # the regular run at 50 comes first
    assert not s.has_extra[0]
    s.run_at(0, 30)
    s.run_at(0, 40)                       # a later request does not delay an earlier one
    assert s.extra[0] == 30
    for _ in range(101):
        s.run_due()
        clk.advance(1)
    assert got == [0, 30, 50, 100], got


def test_run_at_is_dropped_when_the_regular_run_comes_first():
    clk = VirtualClock(0)
    s = Scheduler(clk)
    got = []
    s.add(lambda now: got.append(now), 50)
    s.run_due()
    s.run_at(0, 45)
    clk.advance(70)                       # the loop was held past both:
    s.run_due()                           # one run, the regular one
    s.run_due()
    assert got == [0, 50], got
    assert not s.has_extra[0]
    s.run_at(0, 90)
    clk.advance(35)                       # 105: the regular 100 is due too
    s.run_due()
    s.run_due()
    assert got == [0, 50, 100], got


def test_run_counts_stay_small_ints():
    # On the RP2040 small ints end at 2**30: a run count past it is a long
    # int, allocated at every run of the task (the 50 ms fast task gets there
    # after 621 days), and past 2**31 it no longer fits its array.  The
    # counts wrap at 2**30 (the watchdog only looks for a change).
    clk = VirtualClock(0)
    s = Scheduler(clk)
    s.add(lambda now: None, 50)
    s.runs[0] = TICKS_MAX - 1
    for _ in range(4):
        clk.advance(50)
        s.run_due()
    assert s.runs[0] == 2
