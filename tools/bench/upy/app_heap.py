# Runs under the MicroPython unix port: RAM kept by the whole board application
# after boot (app.build on the pico board file over the chip emulators, settings
# store on a fake flash, 3 s of operation).
# Usage: micropython app_heap.py single|single32|master [--poll] [ROMFS_IMAGE]
# --poll: then read what a PC tool's first poll reads (register blocks are
# imported when a request first touches them).
# With ROMFS_IMAGE the firmware is imported from a VfsRom mounted on that image:
# .mpy bytecode then runs in place (as frozen code does) and is not on the heap.
import gc
import sys

import micropython

POLL = "--poll" in sys.argv
if POLL:
    sys.argv.remove("--poll")
variant = sys.argv[1] if len(sys.argv) > 1 else "single"
if len(sys.argv) > 2:
    import vfs
    f = open(sys.argv[2], "rb")
    img = f.read()  # stands for the flash the image lives in; taken before the baseline
    f.close()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")

# Host-side emulators and the fake flash are allocated before the baseline.
from drv_fakemachine import FakeMachine  # noqa: E402
from fakeflash import FakeFlash  # noqa: E402
from bms.ticks import VirtualClock  # noqa: E402  (the board has its own clock)


class Cfg:
    MODULES = variant == "master"
    CHEMISTRY = 1


if variant == "single32":   # pico32: two stacked BQ76952, 32 cells
    fm = FakeMachine([3300 + i for i in range(16)], top_mv=[3300 + i for i in range(16)])
else:
    fm = FakeMachine([3300 + i for i in range(16)])
fs = FakeFlash()
clock = VirtualClock(0)
gc.collect()
print("qstr_before")
micropython.qstr_info()
m0 = gc.mem_alloc()

import app  # noqa: E402

params = None
board = "pico32" if variant == "single32" else "pico"
if variant == "single32":
    from bms import params as P
    params = P.ParamSet(Cfg.CHEMISTRY, max_cells=32)
    params.set_many(((P.P_CELL_COUNT, 32),))
if variant == "master":
    # 256 cells in 16 modules of 16, as the user would have stored them.
    from bms import params as P
    params = P.ParamSet(Cfg.CHEMISTRY, max_cells=256)
    params.set_many(((P.P_MODULE_CELLS, 16), (P.P_CELL_COUNT, 256)))
a = app.build(board, machine=fm, cfg=Cfg, clock=clock, fs=fs, params=params)
end = clock.elapsed_ms + 3000
while clock.elapsed_ms < end:
    w = a.step()
    clock.advance(w if w > 0 else 1)
if POLL:
    # identity, monitor, temps, cells, params, log head, auth state, modules header
    rm = a.parts["modbus"].regmap
    buf = bytearray(260)
    for addr, n in ((0x0000, 64), (0x0100, 61), (0x0200, 49), (0x0400, 125), (0x047D, 125),
                    (0x1000, 57), (0x3000, 4), (0x2109, 3), (0x0600, 16)):
        if rm.read(addr, n, buf, 0):
            raise RuntimeError("read of 0x%04X refused" % addr)
gc.collect()
print("heap_after_boot", gc.mem_alloc() - m0)
print("baseline", m0)
print("cells", a.bms.params.max_cells if a.bms else 0, a.bms.params[1] if a.bms else 0)
print("failed", len(getattr(a, "failed", ())))
print("qstr_after")
micropython.qstr_info()
