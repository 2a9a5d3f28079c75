# Runs under the MicroPython unix port: heap and time of the control cycle.
# Usage: micropython core_cycle.py CELLS [ROMFS_IMAGE]
import gc
import sys
import time

import micropython
from refloop import us_per_iter  # tools/bench/upy

cells = int(sys.argv[1]) if len(sys.argv) > 1 else 16
if len(sys.argv) > 2:  # a ROMFS image of the firmware: bytecode runs in place, off the heap
    import vfs
    f = open(sys.argv[2], "rb")
    img = f.read()  # stands for the flash holding the image
    f.close()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
gc.collect()
m_start = gc.mem_alloc()

from bms import params as P  # noqa: E402
from bms.core import Bms  # noqa: E402
from bms.eventlog import EventLog  # noqa: E402
from bms.params import CHEM_LFP, ParamSet  # noqa: E402
from bms.ticks import VirtualClock  # noqa: E402
from scripted_board import ScriptedBoard  # noqa: E402

clock = VirtualClock(0x3FFFFFFF - 5000)
board = ScriptedBoard(max_cells=cells, cells=cells, mv=3300)
params = ParamSet(CHEM_LFP, max_cells=cells)
params.set(P.P_CELL_COUNT, cells)
bms = Bms(board, params, clock, EventLog(128))
gc.collect()
print("heap_after_boot", gc.mem_alloc() - m_start)

board.current_ma = -12000
for i in range(cells):
    board.cells[i] = 3300 + (i % 7)
for _ in range(1000):  # 10 s to steady state (balancing decided, SOC running)
    clock.advance(10)
    bms.step()
gc.collect()
print("heap_steady", gc.mem_alloc() - m_start)


def task_bytes(fn, reps):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(reps):
        clock.advance(1)
        fn(clock.ticks_ms())
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) // reps


def task_locked(fn, reps):
    ok = 1
    for _ in range(reps):
        clock.advance(1)
        now = clock.ticks_ms()
        micropython.heap_lock()
        try:
            fn(now)
        except MemoryError:
            ok = 0
        finally:
            micropython.heap_unlock()
    return ok


for name, fn in (("fast", bms._fast), ("cells", bms._cells), ("slow", bms._slow)):
    print("bytes_" + name, task_bytes(fn, 50))
    print("locked_" + name, task_locked(fn, 20))

# Whole cycles through the scheduler, heap locked, slow task (fixed-point
# SOC estimator) included: the fail-safe boundary in Bms.step would count a
# MemoryError as an exception.  300 cycles of 10 ms span 3 s of slow ticks.
exc0 = bms.exceptions
upd0 = bms.soc.est_updates
for _ in range(300):
    clock.advance(10)
    micropython.heap_lock()
    try:
        bms.step()
    finally:
        micropython.heap_unlock()
print("locked_cycle_exceptions", bms.exceptions - exc0)
print("locked_cycle_soc_updates", bms.soc.est_updates - upd0)

# Time: fast task and one full second of tasks, against a reference loop.
N = 200
t0 = time.ticks_us()
for _ in range(N):
    clock.advance(1)
    bms._fast(clock.ticks_ms())
t_fast = time.ticks_diff(time.ticks_us(), t0) / N
t0 = time.ticks_us()
for _ in range(N // 4):
    clock.advance(1)
    bms._cells(clock.ticks_ms())
t_cells = time.ticks_diff(time.ticks_us(), t0) / (N // 4)
t0 = time.ticks_us()
for _ in range(20):
    clock.advance(1)
    bms._slow(clock.ticks_ms())
t_slow = time.ticks_diff(time.ticks_us(), t0) / 20


t_ref = us_per_iter()
print("us_fast", t_fast)
print("us_cells", t_cells)
print("us_slow", t_slow)
print("us_ref_iter", t_ref)
