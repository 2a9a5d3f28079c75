# Runs under the MicroPython unix port: cost of the incremental update finish.
# Usage: micropython update_finish.py KB STEP_BYTES
# A package of about KB kilobytes on the fake flash (RAM: no flash timing),
# finished step by step; prints the worst step, the steps and the I/O per step,
# and the blocking finish for comparison.
import gc
import sys
import time

from fakeflash import FakeFlash
from refloop import us_per_iter  # tools/bench/upy
from update_rig import package

from bms import update as U

kb = int(sys.argv[1]) if len(sys.argv) > 1 else 64
step = int(sys.argv[2]) if len(sys.argv) > 2 else U.STEP_BYTES
files = [("bms/", b"")]
for i in range(kb // 8):
    files.append(("bms/m%02d.py" % i, bytes((i * 7 + j) & 0x7F for j in range(8000))))
pkg, digest, _ = package(files)


def transfer(up):
    up.begin(len(pkg), digest)
    off = 0
    while off < len(pkg):
        off = up.chunk(off, pkg[off:off + 240])


def timed_finish():
    fs = FakeFlash()
    up = U.Updater(fs, step_bytes=step)
    transfer(up)
    up.finish_start()
    times = []
    r = U.FS_BUSY
    while r == U.FS_BUSY:
        gc.collect()   # the app collects in idle time: no collection inside a step
        t0 = time.ticks_us()
        r = up.finish_step()
        times.append(time.ticks_diff(time.ticks_us(), t0))
    assert r == U.FS_DONE
    return up, times


# Each step's cost is the least of three runs (the host is shared: noise only adds).
up, best = timed_finish()
for _ in range(2):
    _up, t = timed_finish()
    best = [min(a, b) for a, b in zip(best, t)]
worst = max(best)
total = sum(best)
print("pkg_bytes", len(pkg))
print("steps", up.steps)
print("worst_step_us", worst)
print("total_us", total)
print("max_step_io", up.max_step_io)

fs = FakeFlash()
up = U.Updater(fs, step_bytes=step)
transfer(up)
t0 = time.ticks_us()
up.finish()
print("blocking_us", time.ticks_diff(time.ticks_us(), t0))


print("us_ref_iter", us_per_iter())
