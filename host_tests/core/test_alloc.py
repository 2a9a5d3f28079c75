# The protection path allocates nothing: fast and cell tasks under heap_lock.
# Only meaningful on MicroPython (CPython has no heap lock); under pytest the
# same code runs as a functional smoke test.
import sys

import micropython
from harness import Rig

UPY = sys.implementation.name == "micropython"


def _locked(fn, now):
    micropython.heap_lock()
    try:
        fn(now)
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()


def test_fast_and_cell_tasks_do_not_allocate():
    r = Rig()
    r.board.current_ma = -15000
    r.run(5000)
    r.board.cells[3] = 3700   # a fault in progress: debounce counting, then trip
    for k in range(130):  # 6.5 s: through the 5 s OV1 delay and the trip
        r.clock.advance(50)
        now = r.clock.ticks_ms()
        assert _locked(r.bms._cells, now), k
        assert _locked(r.bms._fast, now), k
    assert r.bms.prot.active(0)  # the trip, its log entry and relay change were locked too
    assert r.bms.exceptions == 0


def test_slow_task_and_soc_estimator_do_not_allocate():
    # The estimator is fixed point (bms.fixmath): with floats it allocated
    # ~4.5 KB a second on the board.  Steady state on the LFP plateau,
    # then a current step (R0 learning), a cold spell and a fresh boot.
    r = Rig()
    r.board.current_ma = -15000
    r.run(5000)
    soc = r.bms.soc
    n0 = soc.est_updates
    for k in range(40):
        if k == 10:
            r.board.current_ma = -45000     # a 30 A step teaches R0
        if k == 20:
            for i in range(len(r.board.temps)):
                r.board.temps[i] = -50      # -5 degC: cold R0 and table error
        if k == 30:
            r.board.current_ma = 20000      # charging
        drop = 24 if 10 <= k < 30 else 0    # ~0.8 mOhm * 30 A
        for i in range(16):
            r.board.cells[i] = 3290 - drop + (k * 7 + i) % 3
        for _ in range(20):             # one second of fast and cell tasks
            r.clock.advance(50)
            now = r.clock.ticks_ms()
            assert _locked(r.bms._cells, now), k
            assert _locked(r.bms._fast, now), k
        assert _locked(r.bms._slow, r.clock.ticks_ms()), k
    assert soc.est_updates - n0 == 40    # the filter really ran, every second
    assert soc.r0_learned > 0
    assert r.bms.exceptions == 0
    # Fresh boot (flat-prior first update) and a calibration, locked too.
    from bms.soc import Soc
    r.bms.soc = fresh = Soc(r.params, 800)
    for k in range(3):
        for _ in range(20):             # fresh readings: the estimator skips stale ones
            r.clock.advance(50)
            now = r.clock.ticks_ms()
            assert _locked(r.bms._cells, now), k
            assert _locked(r.bms._fast, now), k
        assert _locked(r.bms._slow, r.clock.ticks_ms()), k
    assert fresh.est_updates == 2
    micropython.heap_lock()
    try:
        fresh.calibrate_full()
        fresh.calibrate_empty()
    finally:
        micropython.heap_unlock()
    assert fresh.soc_pm == 0


def test_the_estimator_calls_the_service_between_its_stages_and_is_unchanged_by_it():
    # The ports' service runs inside the SOC step (8-9 ms on an RP2040):
    # several times a step, allocation-free, and the estimate is the same.
    plain = Rig()
    served = Rig()
    calls = [0]
    in_slow = [False]

    def svc():
        if in_slow[0]:
            calls[0] += 1
    served.bms.service = svc
    slow = served.bms._slow

    def timed_slow(now):
        in_slow[0] = True
        try:
            slow(now)
        finally:
            in_slow[0] = False
    served.bms.sched._fn[served.bms.sched._fn.index(slow)] = timed_slow
    for r in (plain, served):
        r.board.current_ma = -15000
        r.run(20000)
    n = served.bms.soc.est_updates
    assert n > 10 and plain.bms.soc.est_updates == n
    assert calls[0] >= 4 * n        # two around the step, at least two inside it
    assert served.bms.soc.soc_pm == plain.bms.soc.soc_pm
    assert served.bms.soc.sd0 == plain.bms.soc.sd0
    assert _locked(served.bms._slow, served.clock.ticks_ms())
