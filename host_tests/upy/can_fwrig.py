"""A master forwarding a slave package over CAN to slaves with their own flash.

MicroPython-compatible.  Each slave has a FakeFlash with its Updater; a
slave "reboot" runs the boot selection (``select_at_boot``) and builds a new
Slave like ``slave_main`` would.  The firmware a slave runs is modelled by the
files of its active slot: its reported version is the ``FW_VERSION`` line of
the slot's ``comms/can_ids.py`` (the factory version when running from the
root), and a line ``SIM_DEFECT = 'afe'`` makes that firmware unable to read
its AFE, ``'can'`` unable to bring up its CAN controller (it then never
reaches normal operation).
"""
from can_helpers import LoopBus, LoopNode, Stepping, ValueAfe
from fakeflash import FakeFlash
from update_rig import package

from bms.pkgstore import PackageStore
from slave.core import Slave
from slave.fw import SlaveFw
from bms.ticks import VirtualClock
from bms.update import Updater
from comms import can_ids as C
from comms.can_master import CanMaster
from comms.slave_update import FP_NAMES, SlaveUpdater

CELLS = 4


def slave_files(version=(0, 2, 0), defect=None, pad=300):
    text = "FW_VERSION = (%d, %d, %d)\n" % version
    if defect:
        text += "SIM_DEFECT = '%s'\n" % defect
    text += "# padding\n" * pad
    return [("comms/", b""), ("comms/can_ids.py", text.encode()),
            ("slave/core.py", b"# slave logic\n" * pad)]


def slave_package(key=None, **kw):
    return package(slave_files(**kw), key)


def slot_firmware(fs, path):
    """(version, defect) of the firmware in slot directory ``path`` ("" = factory)."""
    if not path:
        return C.FW_VERSION, None
    try:
        f = fs.open(path + "/comms/can_ids.py", "rb")
        text = f.read().decode()
        f.close()
    except OSError:
        return C.FW_VERSION, None
    ver = C.FW_VERSION
    defect = None
    for line in text.split("\n"):
        if line.startswith("FW_VERSION = ("):
            ver = tuple(int(x) for x in line[14:line.index(")")].split(","))
        elif line.startswith("SIM_DEFECT = '"):
            defect = line[14:-1]
    return ver, defect


class FakeContactors:
    def __init__(self):
        self.state = bytearray(5)


class FakeBms:
    def __init__(self):
        self.contactors = FakeContactors()
        self.inhibit = 0


class FwRig(Stepping):
    def __init__(self, n=2, key=None, confirm_sweeps=3, trial_timeout_ms=6000):
        self.clock = VirtualClock(1000)
        now = self.clock.ticks_ms()
        self.bus = LoopBus()
        self.mnode = LoopNode(self.bus, rx_depth=64)
        self.master = CanMaster(self.mnode, n, now=now)
        self.master.configure(n * CELLS, CELLS, 2500)
        self.mfs = FakeFlash()
        self.store = PackageStore(self.mfs)
        self.bms = FakeBms()
        self.fwd = SlaveUpdater(self.master, self.store, self.bms)
        self.master.fw = self.fwd
        self.key = key
        self.confirm_sweeps = confirm_sweeps
        self.trial_timeout_ms = trial_timeout_ms
        self.fss = [FakeFlash() for _ in range(n)]
        self.snodes = [LoopNode(self.bus) for _ in range(n)]
        self.afes = [ValueAfe(CELLS, 3300 + k) for k in range(n)]
        self.slaves = [None] * n
        self.boots = [0] * n
        self._resets = []
        self.inhibit_seen = 0
        for k in range(n):
            self.boot(k)

    def boot(self, k):
        fs = self.fss[k]
        Updater(fs, key=self.key).select_at_boot()     # boot.py
        up = Updater(fs, key=self.key)                 # slave_main
        ver, defect = slot_firmware(fs, up.slot_path(up.active))
        node = self.snodes[k]
        node.rx = []
        self.afes[k].dead = defect == "afe"
        node.stuck = node.bus_off = defect == "can"
        now = self.clock.ticks_ms()
        s = Slave(node, self.afes[k], addr=k + 1, cells=CELLS, uid=0x100 + k, now=now)
        s.fw_version = ver
        s.fw = SlaveFw(s, up, reset=self._reset_fn(k), now=now)
        s.fw.confirm_sweeps = self.confirm_sweeps
        s.fw.trial_timeout_ms = self.trial_timeout_ms
        self.slaves[k] = s
        self.boots[k] += 1

    def _reset_fn(self, k):
        def reset():
            self._resets.append(k)
        return reset

    def upload(self, pkg, digest, sig=None, chunk=240):
        st = self.store
        st.begin(len(pkg), digest, sig)
        off = 0
        while off < len(pkg):
            off = st.chunk(off, pkg[off:off + chunk])
        return st.finish()

    def step(self, dt=2):
        self.clock.advance(dt)
        now = self.clock.ticks_ms()
        for s in self.slaves:
            s.step(now)
        self.master.poll(now)
        self.fwd.poll(now)
        self.inhibit_seen |= self.bms.inhibit
        while self._resets:
            self.boot(self._resets.pop(0))


    def restart_master_before_apply(self, k, limit_ms=120000):
        """The master loses power right after slave ``k`` acknowledged FINISH:
        its APPLY never reaches the slave, and it comes back with no update
        running (nothing holds the relays open).  Returns the forwarder that
        was running (its ``last_fw``: what the slave last reported)."""
        node = self.snodes[k]
        orig = node.deliver

        def deliver(cid, data, ext):
            if cid == C.ID_FWCTL + k and data[0] == C.FW_APPLY:
                return
            orig(cid, data, ext)
        node.deliver = deliver
        applying = FP_NAMES.index("applying")
        assert self.run_until(lambda: self.fwd.phase == applying, limit_ms) >= 0
        old = self.fwd
        self.fwd = SlaveUpdater(self.master, self.store, self.bms)
        self.master.fw = self.fwd
        self.bms.inhibit = 0
        node.deliver = orig
        return old

    def version(self, addr):
        v = self.master.mod_version
        k = 4 * (addr - 1)
        return (v[k], v[k + 1], v[k + 2])

    def ctl_frames(self, addr):
        return [d for i, d in self.mnode.sent if i == C.ID_FWCTL + addr - 1]

    def data_frames(self, addr):
        return [d for i, d in self.mnode.sent if i == C.ID_FWDATA + addr - 1]


def drop_frames(node, can_id, every, start=0):
    """Make ``node`` lose every ``every``-th frame with ``can_id`` (as if never received)."""
    orig = node.deliver
    cnt = [start]

    def deliver(cid, data, ext):
        if cid == can_id:
            cnt[0] += 1
            if cnt[0] % every == 0:
                return
        orig(cid, data, ext)
    node.deliver = deliver
    return cnt
