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
