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
