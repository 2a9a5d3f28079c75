# Runs under the MicroPython unix port: RAM kept by a slave module's firmware
# after boot (slave_main's build on the slave_module board file over the chip
# emulators, firmware update receiver on a fake flash, 3 s of its loop).
import gc

import micropython

from drv_fakemachine import FakeMachine  # noqa: E402
from fakeflash import FakeFlash  # noqa: E402

fm = FakeMachine([3300 + i for i in range(16)])
fm.unique_id = lambda: b"\x01\x02\x03\x04\x05\x06\x07\x08"
fs = FakeFlash()
gc.collect()
m0 = gc.mem_alloc()

import slave_main  # noqa: E402
from boards import slave_module as bd  # noqa: E402

hw = bd.build(fm)
st = {"addr": 1, "cells": 16, "locked": False}
slave = slave_main.build_slave(hw, fm, st, 0)
slave_main.attach_update(slave, fm, 0, fs=fs)
for t in range(3000):
    slave.step(t)
gc.collect()
print("heap_after_boot", gc.mem_alloc() - m0)
print("baseline", m0)
print("update", 1 if slave.fw is not None else 0)
print("failed", 0 if slave.fw is not None else 1)
micropython.mem_info()
