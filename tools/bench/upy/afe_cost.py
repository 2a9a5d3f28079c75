# Driver-only cost of one cell read under the MicroPython unix port: a bus
# that copies a preallocated valid frame, so only driver time is measured.
import gc
import time
from array import array

from drivers.bq76952 import BQ76952
from drivers.ltc681x import LTC681x, pec15


class I2C:
    def __init__(self):
        self.frame = bytearray(64)

    def readfrom_mem_into(self, a, r, buf):
        f = self.frame
        for i in range(len(buf)):
            buf[i] = f[i]


def ltc_frame(chips):
    g = bytearray(b"\x10\x80\x10\x80\x10\x80")
    p = pec15(g, 0, 6)
    f = bytearray(4 + 8 * chips)
    for c in range(chips):
        f[4 + 8 * c:10 + 8 * c] = g
        f[10 + 8 * c] = p >> 8
        f[11 + 8 * c] = p & 0xFF
    return f


class Spi:
    # Cell groups read back the one valid frame; a configuration group reads
    # back what was last written to it (the driver verifies it), as the chips do.
    def __init__(self, frame):
        self.frame = frame
        self.cfg = {}

    def write(self, b):
        if len(b) > 4 and b[0] == 0 and b[1] in (0x01, 0x24):   # WRCFGA / WRCFGB
            self.cfg[b[1] + 1 + (b[1] == 0x24)] = bytes(b)

    def write_readinto(self, w, r):
        if len(r) == 1:
            r[0] = 0xFF
            return
        f = self.cfg.get(w[1], self.frame) if w[0] == 0 else self.frame
        for i in range(len(r)):
            r[i] = f[i]


class Pin:
    def value(self, v=None):
        pass


def measure(fn, n):
    fn()
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    for _ in range(n):
        fn()
    dt = time.ticks_diff(time.ticks_us(), t0)
    return dt // n, (gc.mem_alloc() - a0) // n


bq = BQ76952(I2C(), cells=16)
mv16 = array("H", [0] * 16)
us, alloc = measure(lambda: bq.read_cells(mv16, 16), 200)
print("bq_read_cells_us", us)
print("bq_alloc_bytes", alloc)

def no_wait(us):
    pass


chips = 14
# The waits go through the injected sleep (a no-op here: CPU time only) and
# the wake-up decision through ticks_ms, as on a board.
ltc = LTC681x(Spi(ltc_frame(chips)), Pin(), chips=chips, model=6813, wait_us=no_wait,
              ticks_ms=time.ticks_ms)
mv = array("H", [0] * (chips * 18))
us, alloc = measure(lambda: ltc.read_cells(mv, chips * 18), 20)
print("ltc_read_cells_us", us)
print("ltc_alloc_bytes", alloc)
