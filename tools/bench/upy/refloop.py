# The fixed reference loop the benchmarks divide by (bench_core.RP2040_US_PER_ITER
# is the published cost of one iteration on an RP2040).
import time


def ref_loop(n):
    x = 0
    for i in range(n):
        x += i
    return x


def us_per_iter(n=100000):
    """Unix-port microseconds per reference-loop iteration, measured now."""
    t0 = time.ticks_us()
    ref_loop(n)
    return time.ticks_diff(time.ticks_us(), t0) / n
