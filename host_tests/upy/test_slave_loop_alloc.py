# A slave module's loop pass allocates nothing in steady operation, on the
# board's own drivers (boards/slave_module: BQ76952, NTCs on the ADC, the
# status LED, the watchdog) and slave_main.loop, not only slave.core on a
# stand-in AFE (test_can_alloc).  Garbage made per pass piles up until an
# allocation fails and MicroPython collects inside a step (15 ms on the
# chip): CAN frames wait in the MCP2515's two RX buffers meanwhile and a
# SYNC read late shifts the module's slot into its neighbour's.
# The chip emulators behind the fake machine allocate, so the BQ76952's bus
# is recorded while warming up and replayed (FixedI2C) once the heap is
# locked; the CAN controller is ReplayCtrl (the MCP2515 driver's own
# send/recv are checked in test_drv_mcp2515).
# MicroPython-compatible: runs under pytest and the unix port.
from drv_fakemachine import FakeMachine
from drv_helpers import FixedI2C

from boards import slave_module as bd
from can_helpers import ReplayCtrl
import micropython
from comms import can_ids as C
from slave.afe import SlaveAfe
from slave.core import Slave
import slave_main as SM


class RecordingI2C:
    """Passes through to the emulated bus and keeps each register's last reply."""

    def __init__(self, bus):
        self.bus = bus
        self.regs = {}

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        self.bus.readfrom_mem_into(addr, reg, buf)
        self.regs[reg] = bytearray(buf)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self.bus.writeto_mem(addr, reg, buf)


class Clock:
    """slave_main.loop's time in virtual ms (each pass's sleep moves it):
    ``tick(now)`` at every whole second, ``on_lock()`` at ``lock_at``."""

    def __init__(self, now):
        self.now = now
        self.lock_at = None
        self.tick = None
        self.on_lock = None

    def ticks_ms(self):
        return self.now

    def sleep_ms(self, ms):
        for _ in range(ms):
            self.now += 1
            if self.tick is not None and self.now % 1000 == 0:
                self.tick(self.now)
            if self.now == self.lock_at:
                self.on_lock()


class Module:
    def __init__(self, addr=0):
        self.fm = FakeMachine([3300 + 5 * i for i in range(16)])
        hw = bd.build(self.fm)
        self.drv = hw["afe"]
        self.rec = RecordingI2C(self.drv.i2c)
        self.drv.i2c = self.rec
        self.ctrl = ReplayCtrl()
        self.clock = Clock(1000)
        now = self.clock.now
        self.s = Slave(self.ctrl, SlaveAfe(hw["afe"], hw["ntcs"]), addr=addr, cells=16,
                       temps=len(hw["ntcs"]), uid=0x123456, now=now)
        self.st = {"addr": addr, "cells": 16, "locked": False}
        self.wdt = hw["wdt"](SM.WDT_MS)
        self.led = hw["led"]
        self.collections = 0
        self.locked = False
        self.sent0 = 0              # frames sent and watchdog feeds when the heap was locked
        self.feeds0 = 0
        self.clock.on_lock = self._lock

    def _collect(self):
        self.collections += 1

    def _lock(self):
        # The AFE's bus copies the recorded replies from now on (no allocation).
        self.drv.i2c = FixedI2C(self.rec.regs)
        self.sent0 = self.ctrl.sent
        self.feeds0 = self.fm.feeds
        lock = getattr(micropython, "heap_lock", None)
        if lock is not None:
            lock()
            self.locked = True

    def run(self, warm_ms, locked_ms):
        """One loop (as run() has it: its state lives in its locals) for
        ``warm_ms`` (the first sample configures the AFE), then
        ``locked_ms`` with the heap locked on MicroPython.  A pass sleeps
        LOOP_MS (1 ms); no collection is due within 10 s."""
        c = self.clock
        c.lock_at = c.now + warm_ms
        try:
            SM.loop(self.s, self.wdt, self.led, self.st, c.now, collect=self._collect,
                    clock=c, passes=warm_ms + locked_ms)
        finally:
            if self.locked:
                micropython.heap_unlock()
                self.locked = False
        assert self.collections == 0


def test_an_unaddressed_modules_loop_allocates_nothing():
    m = Module(addr=0)
    # 2.5 s, then 6 s locked: samples, announces, the LED's blip and a settings check
    m.run(2500, 6000)
    assert m.s.afe_ok and m.s.sampled and not m.s.sleeping
    assert m.sent0 > 0 and m.ctrl.sent >= m.sent0 + 20          # announcing
    assert m.fm.feeds >= m.feeds0 + 6000
    assert list(m.s.cell_mv[:16]) == [3300 + 5 * i for i in range(16)]


def _sync(sweep):
    b = bytearray(8)
    C.sync_pack(b, sweep, C.SYNC_BAL_OK, 1, C.SWEEP_MS, C.SLOT_MS, C.GAP_MS)
    return (C.ID_SYNC, b)


def _bal(mask):
    b = bytearray(4)
    C.bal_pack(b, mask, 3 * C.SWEEP_MS, mask & 0xFF)
    return (C.ID_BAL, b)


def test_an_addressed_modules_loop_in_a_sweep_allocates_nothing():
    # The master alternates the bleeders of odd and even cells, so a BAL
    # that changes the mask (a write to the AFE) is part of the steady loop.
    m = Module(addr=1)
    cfg = bytearray(8)
    C.config_pack(cfg, 16, 3, 3650, 2500, 55, C.CFG_SET_CELLS)
    syncs = [_sync(k) for k in range(10)]
    masks = (_bal(0b0101), _bal(0b1010))
    frames = [syncs[1], (C.ID_CONFIG, cfg), masks[1]]
    m.ctrl.frames = frames

    def sweep(now):             # every second: SYNC, CONFIG, BAL of the other mask
        k = now // 1000
        frames[0] = syncs[k]
        frames[2] = masks[k & 1]
        m.ctrl.i = 0
    m.clock.tick = sweep
    m.run(4500, 4000)           # SYNCs at 1..5 s, then at 6..9 s with the heap locked
    assert m.s.configured and m.s.syncs == 9, m.s.syncs
    assert m.ctrl.sent >= m.sent0 + 4 * 6 and m.sent0 >= 5 * 6
    assert m.s.bal_mask == 0b1010 and m.s.bal_timeouts == 0
    assert not m.s.faults & (C.LF_HARD | C.LF_AFE | C.LF_MASTER_LOST)
