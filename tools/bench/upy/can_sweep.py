# Master and slave CPU per 256-cell sweep under the MicroPython unix port.
# Prints "key value" lines for tools/bench/bench_can.py.
import gc
import sys
import time

from bms.measurements import Measurements, ROLE_CELL
from slave.core import Slave
from comms import can_ids as C
from comms.can_master import CanMaster
from can_helpers import ReplayCtrl, sweep_frames  # host_tests/upy

N_MOD = int(sys.argv[1]) if len(sys.argv) > 1 else 16
CELLS = 16
SWEEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 50


class Afe:
    def read_cells(self, mv, n):
        for i in range(n):
            mv[i] = 3300 + i

    def read_temps(self, t, n):
        for i in range(n):
            t[i] = 250

    def balance(self, mask):
        pass


ctrl = ReplayCtrl()
m = CanMaster(ctrl, N_MOD, now=0)
m.configure(N_MOD * CELLS, CELLS, 2500)
meas = Measurements(256, (ROLE_CELL,) * (3 * N_MOD))
meas.set_cell_count(N_MOD * CELLS)
flags = bytearray(256)
frames = [sweep_frames(N_MOD, s, CELLS) for s in range(1, SWEEPS + 3)]
now = 0
t_rx = 0
t_fill = 0
t_sync = 0
alloc = 0
for s in range(SWEEPS + 1):
    if s == 1:  # sweep 0 warms up (first-time allocations are boot cost, not per sweep)
        t_rx = t_fill = t_sync = alloc = 0
    # SYNC + commands at the start of the sweep
    t0 = time.ticks_us()
    m.poll(now)
    t_sync += time.ticks_diff(time.ticks_us(), t0)
    ctrl.frames = frames[s]
    ctrl.i = 0
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    while ctrl.i < len(ctrl.frames):
        now += 6
        m.poll(now)
    t_rx += time.ticks_diff(time.ticks_us(), t0)
    t0 = time.ticks_us()
    m.fill_cells(meas, now)
    m.fill_temps(meas, 0, 3)
    m.set_balance(flags)
    t_fill += time.ticks_diff(time.ticks_us(), t0)
    alloc += gc.mem_alloc() - a0
    now = (s + 1) * 1000
assert m.comm_fault is False, "modules not OK in the bench"
n_frames = len(frames[0])
print("frames_per_sweep", n_frames)
print("master_rx_us_per_sweep %.1f" % (t_rx / SWEEPS))
print("master_rx_us_per_frame %.2f" % (t_rx / SWEEPS / n_frames))
print("master_fill_us_per_sweep %.1f" % (t_fill / SWEEPS))
print("master_sync_us_per_sweep %.1f" % (t_sync / SWEEPS))
print("master_alloc_bytes_per_sweep %d" % (alloc // SWEEPS))

# one slave: SYNC in, sample, six frames out
sc = ReplayCtrl()
sl = Slave(sc, Afe(), addr=16, cells=16, now=0)
b = bytearray(8)
t_slave = 0
for s in range(SWEEPS):
    C.sync_pack(b, s, C.SYNC_BAL_OK, 16, 1000, 40, 6)
    sc.frames = [(C.ID_SYNC, bytes(b))]
    sc.i = 0
    base = s * 1000
    t0 = time.ticks_us()
    for t in range(0, 1000, 2):
        sl.step(base + t)
    t_slave += time.ticks_diff(time.ticks_us(), t0)
print("slave_us_per_sweep %.1f" % (t_slave / SWEEPS))
print("slave_frames_per_sweep %d" % (sc.sent // SWEEPS))
