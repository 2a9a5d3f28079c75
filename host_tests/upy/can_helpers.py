"""Small CAN fixtures for the MicroPython-compatible CAN tests.

``LoopBus`` delivers every frame at once to every other node (no timing,
no arbitration: the timing model is tools/sim/canbus.py, CPython only).
``LoopNode`` has the firmware's controller interface; ``HandMaster`` sends
hand-made master frames.  ``ValueAfe`` is a
list-backed AFE.  ``Rig`` wires a CanMaster and N Slaves on a virtual clock.
"""
from array import array

from bms.ticks import VirtualClock
from comms import can_ids as C


class LoopNode:
    def __init__(self, bus, rx_depth=8):
        self.bus = bus
        self.rx_depth = rx_depth
        self.rx = []
        self.rx_id = 0
        self.rx_ext = False
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        self.filters = None
        self.bus_off = False
        self.stuck = False  # bus-off for good: restarts do not take
        self.plugged = True
        self.sent = []      # (id, bytes) log
        self.restarts = 0
        bus.nodes.append(self)

    def send(self, can_id, data, ext=False):
        if self.bus_off:
            return False
        d = bytes(data)
        self.sent.append((can_id, d))
        if self.plugged:
            for n in self.bus.nodes:
                if n is not self and n.plugged:
                    n.deliver(can_id, d, ext)
        return True

    def deliver(self, can_id, data, ext):
        if self.filters:
            ok = False
            for fid, mask, fext in self.filters:
                if (can_id & mask) == (fid & mask) and bool(fext) == bool(ext):
                    ok = True
            if not ok:
                return
        if len(self.rx) >= self.rx_depth:
            self.rx_overflow += 1
            return
        self.rx.append((can_id, data, ext))

    def recv(self, buf):
        if not self.rx:
            return -1
        can_id, data, ext = self.rx.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        self.rx_id = can_id
        self.rx_ext = ext
        return len(data)

    def set_filters(self, filters):
        self.filters = list(filters) if filters else None

    def state(self):
        return 3 if self.bus_off else 0

    def restart(self):
        self.restarts += 1
        self.bus_off = self.stuck


class HandMaster:
    """Sends hand-made master frames."""

    def __init__(self, bus):
        self.node = LoopNode(bus, rx_depth=256)
        self.sweep = 0

    def sync(self, flags=C.SYNC_BAL_OK):
        self.sweep += 1
        b = bytearray(8)
        C.sync_pack(b, self.sweep, flags, 4, 1000, 40, 6)
        self.node.send(C.ID_SYNC, b)

    def bal(self, addr, mask, timeout_ms=3000):
        b = bytearray(4)
        C.bal_pack(b, mask, timeout_ms, 1)
        self.node.send(C.ID_BAL + addr - 1, b)

    def config(self, addr, cells=16, ov=3800, uv=2100, ot=70, flags=C.CFG_SET_CELLS, temps=3):
        b = bytearray(8)
        C.config_pack(b, cells, temps, ov, uv, ot, flags)
        self.node.send(C.ID_CONFIG + addr - 1, b)


class LoopBus:
    def __init__(self):
        self.nodes = []


class ValueAfe:
    def __init__(self, n=16, mv=3300, temps=3, t_dc=250):
        self.mv = [mv] * n
        self.t = [t_dc] * temps
        self.mask = 0
        self.dead = False
        self.reads = 0
        self.asleep = False
        self.stack = 0          # the chip's stack voltage (mV); 0: no reading

    def read_stack_mv(self):
        return self.stack

    def read_cells(self, cell_mv, n):
        if self.dead:
            raise OSError(110)
        self.reads += 1
        for i in range(n):
            cell_mv[i] = self.mv[i] if i < len(self.mv) else C.CELL_INVALID

    def read_temps(self, temp_dc, n):
        if self.dead:
            raise OSError(110)
        for i in range(n):
            temp_dc[i] = self.t[i] if i < len(self.t) else C.TEMP_ABSENT

    def balance(self, mask):
        self.mask = mask

    def sleep(self, on):
        self.asleep = on


class Stepping:
    """``run``/``run_until`` for a rig whose ``step(dt)`` advances virtual time."""

    def run(self, ms, dt=2):
        t = 0
        while t < ms:
            self.step(dt)
            t += dt

    def run_until(self, pred, limit_ms, dt=2):
        """ms it took until ``pred()`` held, or -1 after ``limit_ms``."""
        t = 0
        while t <= limit_ms:
            if pred():
                return t
            self.step(dt)
            t += dt
        return -1


class Rig(Stepping):
    """A CanMaster and ``n`` slaves (fixed addresses unless ``auto``) on a LoopBus."""

    def __init__(self, n=3, cells=16, auto=False, uids=None, start=0x3FFFFFFF - 5000,
                 timeout=2500):
        from slave.core import Slave
        from comms.can_master import CanMaster
        self.clock = VirtualClock(start)
        now = self.clock.ticks_ms()
        self.bus = LoopBus()
        self.mnode = LoopNode(self.bus, rx_depth=64)
        self.master = CanMaster(self.mnode, n, now=now)
        self.master.configure(n * cells, cells, timeout)
        self.chain = [False] * n
        self.afes = []
        self.slaves = []
        self.snodes = []
        self.alive = [True] * n
        for k in range(n):
            node = LoopNode(self.bus)
            afe = ValueAfe(cells, 3300 + k)
            uid = uids[k] if uids else 0x1000 + k
            s = Slave(node, afe, addr=0 if auto else k + 1, cells=cells, uid=uid,
                      chain_in=self._chain_in(k), chain_out=self._chain_out(k), now=now)
            self.snodes.append(node)
            self.afes.append(afe)
            self.slaves.append(s)

    def _chain_in(self, k):
        if k == 0:
            return lambda: True
        return lambda: self.chain[k - 1]

    def _chain_out(self, k):
        def f(on):
            self.chain[k] = bool(on)
        return f

    def step(self, dt=2):
        self.clock.advance(dt)
        now = self.clock.ticks_ms()
        for k in range(len(self.slaves)):
            if self.alive[k]:
                self.slaves[k].step(now)
        self.master.poll(now)


    def states(self):
        m = self.master
        return [m.mod_state[k] for k in range(m.n_modules)]


def raw_frames(node, can_id):
    return [d for i, d in node.sent if i == can_id]


def u16s(b):
    out = []
    for i in range(0, len(b), 2):
        out.append(b[i] | (b[i + 1] << 8))
    return out


def arr_h(n, v):
    return array("H", [v] * n)


class ReplayCtrl:
    """Feeds prepared frames without copying (for heap-locked tests and benches)."""

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
        for j in range(len(data)):
            buf[j] = data[j]
        self.rx_id = cid
        return len(data)

    def send(self, cid, data, ext=False):
        self.sent += 1
        return True

    def set_filters(self, f):
        pass

    def state(self):
        return 0

    def restart(self):
        pass


def sweep_frames(n_mod, sweep, cells=16):
    out = []
    b = bytearray(8)
    for a in range(1, n_mod + 1):
        C.status_pack(b, C.ST_RUN, cells, sweep, 0, 0, 3, 20)
        out.append((C.ID_STATUS + a - 1, bytes(b)))
        for f in range(4):
            out.append((C.cells_id(a, f), bytes([0xE4, 0x0C] * 4)))
        out.append((C.ID_TEMPS + a - 1, bytes([0xFA, 0, 0xFA, 0, 0xFA, 0, 0, 0x80])))
    return out
