# Shared by the driver tests (CPython and the MicroPython unix port): puts
# tools/sim on the path so the chip emulators import as top-level modules,
# and provides allocation-free bus fakes for heap_lock tests.
import sys


def _root():
    f = __file__
    for _ in range(3):  # host_tests/upy/drv_helpers.py -> repo root
        i = f.rfind("/")
        f = f[:i] if i > 0 else "."
    return f


ROOT = _root()
for _p in (ROOT + "/tools/sim", ROOT):
    if _p not in sys.path:
        sys.path.append(_p)


def run_app(app, clock, ms):
    """The board main loop in virtual time: step, then sleep what it asks."""
    end = clock.elapsed_ms + ms
    while clock.elapsed_ms < end:
        wait = app.step()
        clock.advance(wait if wait > 0 else 1)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


class FixedI2C:
    """readfrom_mem_into copies a preset register image without allocating."""

    def __init__(self, regs):
        self.regs = regs  # {reg: bytearray}
        self.fail = 0

    def readfrom_mem_into(self, addr, reg, buf):
        if self.fail:
            self.fail -= 1
            raise OSError(5)
        src = self.regs[reg]
        for i in range(len(buf)):
            buf[i] = src[i]

    def writeto_mem(self, addr, reg, buf):
        pass


def heap_locked(fn):
    """Run fn with the heap locked on MicroPython (MemoryError if it
    allocates); plain call on CPython."""
    import micropython
    lock = getattr(micropython, "heap_lock", None)
    unlock = getattr(micropython, "heap_unlock", None)
    if lock is None or unlock is None:
        return fn()
    lock()
    try:
        return fn()
    finally:
        unlock()
