# Master and slave CPU per 256-cell sweep under the MicroPython unix port.
# Prints "key value" lines for tools/bench/bench_can.py.
import gc
import sys
import time

from bms.measurements import Measurements, ROLE_CELL
from bms.slave import Slave
from comms import can_ids as C
from comms.can_master import CanMaster

N_MOD = int(sys.argv[1]) if len(sys.argv) > 1 else 16
CELLS = 16
SWEEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 50


class Ctrl:
    """Replays a prepared list of frames; counts what the code sends."""

    def __init__(self):
        self.frames = []
        self.i = 0
        self.rx_id = 0
        self.rx_ext = False
        self.sent = 0
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0

    def recv(self, buf):
        if self.i >= len(self.frames):
            return -1
        cid, data = self.frames[self.i]
        self.i += 1
        for j in range(8):
            buf[j] = data[j]
        self.rx_id = cid
        return 8

    def send(self, cid, data, ext=False):
        self.sent += 1
        return True

    def set_filters(self, f):
        pass

    def state(self):
        return 0

    def restart(self):
        pass


class Afe:
    def read_cells(self, mv, n):
        for i in range(n):
            mv[i] = 3300 + i

    def read_temps(self, t, n):
        for i in range(n):
            t[i] = 250

    def balance(self, mask):
        pass


def sweep_frames(sweep):
    out = []
    b = bytearray(8)
    for a in range(1, N_MOD + 1):
        C.status_pack(b, C.ST_RUN, CELLS, sweep, 0, 0, 3, 20)
        out.append((C.ID_STATUS + a - 1, bytes(b)))
        for f in range(4):
            out.append((C.cells_id(a, f), bytes([0xE4, 0x0C] * 4)))
        out.append((C.ID_TEMPS + a - 1, bytes([0xFA, 0, 0xFA, 0, 0xFA, 0, 0, 0x80])))
    return out


ctrl = Ctrl()
m = CanMaster(ctrl, N_MOD, now=0)
m.configure(N_MOD * CELLS, CELLS, 2500)
meas = Measurements(256, (ROLE_CELL,) * (3 * N_MOD))
meas.set_cell_count(N_MOD * CELLS)
flags = bytearray(256)
frames = [sweep_frames(s) for s in range(1, SWEEPS + 2)]
now = 0
t_rx = 0
t_fill = 0
t_sync = 0
alloc = 0
for s in range(SWEEPS):
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
sc = Ctrl()
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
