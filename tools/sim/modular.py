"""A master with N CAN slave modules on one simulated bus, in virtual time.

Every slave runs the real ``slave.core.Slave`` code against a value-level AFE
reading its slice of one ``Pack``; the master runs the real core with a
``comms.can_master.MasterBoard`` whose current, local temperatures and
relays come from the usual ``FakeBoard``.  All nodes are ``SimCanNode``
controllers with the MCP2515's buffer depths on a ``VirtualCanBus`` at the
protocol's bit rate, so frame timing, arbitration and lost frames are the
bus's, not an assumption.

    sim = build_modular(slaves=16, cells=16, chem="LFP")
    sim.run(5)
    sim.unplug(3); sim.run(3); sim.plug(3)

Time advances in ``tick_ms`` steps (the master's and slaves' main-loop
period); the pack physics in 50 ms steps.

CLI: ``python -m tools.sim.modular --slaves 16 --cells 16 --seconds 20``
"""
import argparse
import random
import sys

import tools  # noqa: F401  (firmware on sys.path)
from slave.core import Slave
from comms import can_ids as C
from comms.can_master import MS_NAMES, MasterBoard
from tools.sim.canbus import SimCanNode, VirtualCanBus
from tools.sim.fakeboard import FakeBoard
from tools.sim.simulator import Simulation

PHYS_MS = 50


class SliceAfe:
    """Value-level AFE on cells ``first .. first+n-1`` of a Pack."""

    def __init__(self, pack, first, n, seed=0, noise_mv=1):
        self.pack = pack
        self.first = first
        self.n = n
        self.rng = random.Random(seed)
        self.noise_mv = noise_mv
        self.dead = False           # stops answering (OSError)
        self.ntc_fault = {}         # index -> "open" / "short"
        self.temp_offset_c = 0.0
        self.mask = 0
        self.asleep = False
        self.reads = 0

    def read_cells(self, cell_mv, n):
        if self.dead:
            raise OSError(110)
        self.reads += 1
        cells = self.pack.cells
        cur = self.pack.current_a
        for j in range(n):
            k = self.first + j
            if j < self.n and k < len(cells):
                v = cells[k].voltage(cur) * 1000.0 + self.rng.uniform(-self.noise_mv, self.noise_mv)
                cell_mv[j] = max(0, min(65534, int(round(v))))
            else:
                cell_mv[j] = C.CELL_INVALID

    def read_temps(self, temp_dc, n):
        if self.dead:
            raise OSError(110)
        t = self.pack.cell_temp_c + self.temp_offset_c
        for j in range(n):
            f = self.ntc_fault.get(j)
            if f == "open":
                temp_dc[j] = C.TEMP_OPEN
            elif f == "short":
                temp_dc[j] = C.TEMP_SHORT
            else:
                temp_dc[j] = int(round(t * 10.0))

    def balance(self, mask):
        if self.dead:
            raise OSError(110)
        self.mask = mask
        cells = self.pack.cells
        for j in range(self.n):
            k = self.first + j
            if k < len(cells):
                cells[k].bleed_a = self.pack.balance_ma / 1000.0 if (mask >> j) & 1 else 0.0

    def sleep(self, on):
        self.asleep = on


class _Chain:
    """The auto-addressing daisy chain: slave k's input is slave k-1's output."""

    def __init__(self, n):
        self.out = [False] * n

    def input(self, k):
        return (lambda: True) if k == 0 else (lambda: self.out[k - 1])

    def output(self, k):
        def set_out(on):
            self.out[k] = bool(on)
        return set_out


class ModularSimulation(Simulation):
    def __init__(self, slaves=16, cells=16, chem="LFP", temps=3, tick_ms=2, auto_address=False,
                 rx_depth=2, params=None, seed=1, **kw):
        if slaves < 1 or slaves > C.MAX_MODULES or cells < 1 or cells > C.MAX_MODULE_CELLS:
            raise ValueError("1..16 slaves of 1..16 cells")
        self.n_slaves = slaves
        self.module_cells = cells
        self.tick_ms = tick_ms
        self.bus = VirtualCanBus(C.BITRATE)
        self.master_node = self.bus.attach(SimCanNode("master", rx_depth=rx_depth))
        total = slaves * cells
        over = {"module_cells": cells}
        over.update(params or {})

        def factory(pack):
            base = FakeBoard(pack, seed + 1, max_cells=total)
            return MasterBoard(self.master_node, base, slaves, temps_per_module=temps,
                               max_cells=256, now=self.clock.ticks_ms())

        Simulation.__init__(self, chem=chem, cells=total, seed=seed, params=over,
                            board_factory=factory, **kw)
        self.master = self.board.master
        self.board.bind(self.bms)
        self.chain = _Chain(slaves)
        self.slaves = []
        self.nodes = []
        self.afes = []
        self.powered = [True] * slaves
        now = self.clock.ticks_ms()
        for k in range(slaves):
            node = self.bus.attach(SimCanNode("slave%d" % (k + 1), rx_depth=rx_depth))
            afe = SliceAfe(self.pack, k * cells, cells, seed=seed * 100 + k)
            s = Slave(node, afe, addr=0 if auto_address else k + 1, cells=cells, temps=temps,
                      uid=0xB0000000 + 0x101 * (k + 1), chain_in=self.chain.input(k),
                      chain_out=self.chain.output(k), now=now)
            self.nodes.append(node)
            self.afes.append(afe)
            self.slaves.append(s)
        self._phys_ms = 0
        self.slave_fw = None     # comms.slave_update.SlaveUpdater once enabled
        self.slave_fs = []
        self._boot_at = {}

    # ---- slave firmware update ---------------------------------------------
    def enable_slave_update(self, key=None, skip=(), reboot_ms=1500, confirm_sweeps=None,
                            trial_timeout_ms=None):
        """Flash and an Updater on every slave, a package store and the forwarder on the master.

        The firmware a slave "runs" is modelled by its active slot (see
        ``slot_firmware``); a reboot powers the slave off for ``reboot_ms``,
        runs the boot selection and builds a new Slave.  Slaves in ``skip``
        get no update receiver (a python-can node may play that part).
        """
        from bms.pkgstore import PackageStore
        from comms.slave_update import SlaveUpdater
        from tools.sim.flashdir import FlashDir
        if self.fs is None:
            self.attach_flash(True)
        self.pkgstore = PackageStore(self.fs)
        self.slave_fw = SlaveUpdater(self.master, self.pkgstore, self.bms)
        self.master.fw = self.slave_fw
        self.slave_key = key
        self.fw_skip = set(skip)
        self.reboot_ms = reboot_ms
        self.confirm_sweeps = confirm_sweeps
        self.trial_timeout_ms = trial_timeout_ms
        self.slave_fs = [FlashDir() for _ in range(self.n_slaves)]
        self.boots = [1] * self.n_slaves
        for k in range(self.n_slaves):
            self._attach_fw(k)
        return self.slave_fw

    def _attach_fw(self, k):
        from slave.fw import SlaveFw
        from bms.update import Updater
        if k + 1 in self.fw_skip:
            return
        fs = self.slave_fs[k]
        up = Updater(fs, key=self.slave_key)
        ver, defect = slot_firmware(fs, up.slot_path(up.active))
        s = self.slaves[k]
        s.fw_version = ver
        self.afes[k].dead = defect == "afe"
        s.fw = SlaveFw(s, up, reset=lambda: self._reboot(k), now=self.clock.ticks_ms())
        if self.confirm_sweeps is not None:
            s.fw.confirm_sweeps = self.confirm_sweeps
        if self.trial_timeout_ms is not None:
            s.fw.trial_timeout_ms = self.trial_timeout_ms

    def _reboot(self, k):
        self.powered[k] = False
        self._boot_at[k] = self.t_ms + self.reboot_ms

    def _boot_due(self):
        for k, t in list(self._boot_at.items()):
            if self.t_ms >= t:
                del self._boot_at[k]
                self.power(k + 1, True)

    def slave_firmware(self, addr):
        """(marker state name, active slot, version) of slave ``addr`` as on its flash."""
        from bms.update import STATE_NAMES, Updater
        up = Updater(self.slave_fs[addr - 1])
        return STATE_NAMES[up.state], up.active, self.slaves[addr - 1].fw_version

    # ---- running -----------------------------------------------------------
    def step(self):
        dt = self.tick_ms
        self.clock.advance(dt)
        self.t_ms += dt
        now = self.clock.ticks_ms()
        self.bus.advance_to(self.t_ms * 1000.0)
        for k, s in enumerate(self.slaves):
            if self.powered[k]:
                s.step(now)
        if self._boot_at:
            self._boot_due()
        self.board.poll(now)
        self.bms.step()
        self._phys_ms += dt
        if self._phys_ms >= PHYS_MS:
            self.pack.step(self._phys_ms / 1000.0)
            self._phys_ms = 0
        self._after_step()

    # ---- faults --------------------------------------------------------------
    def add_module(self, addr, uid):
        """One more module on the bus, set to address ``addr`` (a spare module
        left at an address already taken, a copied slave.json): it measures
        the same cells as module ``addr``.  Returns its index in ``slaves``."""
        k = len(self.slaves)
        node = self.bus.attach(SimCanNode("extra%d" % k, rx_depth=self.master_node.rx_depth))
        afe = SliceAfe(self.pack, (addr - 1) * self.module_cells, self.module_cells,
                       seed=1000 + k)
        s = Slave(node, afe, addr=addr, cells=self.module_cells,
                  temps=self.slaves[0].temps, uid=uid, now=self.clock.ticks_ms())
        self.nodes.append(node)
        self.afes.append(afe)
        self.slaves.append(s)
        self.powered.append(True)
        return k

    def unplug(self, addr):
        self.bus.unplug(self.nodes[addr - 1])

    def plug(self, addr):
        self.bus.plug(self.nodes[addr - 1])

    def power(self, addr, on):
        """Power a slave off (its loop stops) or on (it restarts from scratch)."""
        k = addr - 1
        if on and not self.powered[k]:
            old = self.slaves[k]
            node = self.nodes[k]
            node.restart()
            node._rx = []
            self.slaves[k] = Slave(node, self.afes[k], addr=0 if old.auto else addr,
                                   cells=old.cells, temps=old.temps, uid=old.uid,
                                   chain_in=old.chain_in, chain_out=old.chain_out,
                                   now=self.clock.ticks_ms())
            if self.slave_fs:
                from bms.update import Updater
                Updater(self.slave_fs[k], key=self.slave_key).select_at_boot()   # boot.py
                self.boots[k] += 1
                self._attach_fw(k)
        self.powered[k] = on

    # ---- observing -----------------------------------------------------------
    def module_states(self):
        m = self.master
        return [MS_NAMES[m.mod_state[k]] for k in range(m.n_modules)]

    def sample(self):
        s = Simulation.sample(self)
        s["modules_ok"] = sum(1 for x in self.module_states() if x == "ok")
        s["bus_frames"] = self.bus.frames
        return s


def slot_firmware(fs, path):
    """(version, defect) of the firmware in slot directory ``path`` ("" = factory).

    The simulated slave runs the host's Slave code whatever the slot holds;
    what it reports is taken from the slot: the ``FW_VERSION`` of its
    ``comms/can_ids.py``, and a line ``SIM_DEFECT = 'afe'`` models a firmware
    that cannot read its AFE (it never reaches normal operation).
    """
    import re
    if not path:
        return C.FW_VERSION, None
    try:
        with fs.open(path + "/comms/can_ids.py", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return C.FW_VERSION, None
    m = re.search(r"^FW_VERSION = \((\d+), (\d+), (\d+)\)", text, re.M)
    d = re.search(r"^SIM_DEFECT = '(\w+)'", text, re.M)
    ver = tuple(int(x) for x in m.groups()) if m else C.FW_VERSION
    return ver, d.group(1) if d else None


def build_modular(slaves=16, cells=16, chem="LFP", **kw):
    return ModularSimulation(slaves=slaves, cells=cells, chem=chem, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tools.sim.modular", description=__doc__.split("\n")[0])
    ap.add_argument("--slaves", type=int, default=16)
    ap.add_argument("--cells", type=int, default=16, help="cells per slave module")
    ap.add_argument("--chem", default="LFP", choices=["NMC", "LFP", "LTO", "NA"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--auto-address", action="store_true")
    ap.add_argument("--unplug", type=int, default=0, help="unplug this module at half time")
    a = ap.parse_args(argv)
    sim = build_modular(a.slaves, a.cells, a.chem, auto_address=a.auto_address)
    half = a.seconds / 2.0
    sim.run(half)
    if a.unplug:
        sim.unplug(a.unplug)
        print("t=%.1f s: module %d unplugged" % (sim.t_ms / 1000.0, a.unplug))
    sim.run(a.seconds - half)
    s = sim.sample()
    print("t=%.1f s  modules %s" % (sim.t_ms / 1000.0, " ".join(sim.module_states())))
    print("cells %d  max %d mV (#%d)  min %d mV (#%d)  mode %s  relays %s" % (
        sim.bms.meas.n_cells, s["cell_max_mv"], s["cell_max_idx"], s["cell_min_mv"],
        s["cell_min_idx"], s["mode"], s["relays"]))
    print("faults: %s" % (", ".join(s["faults"]) or "none"))
    load = sim.bus.busy_us / (sim.t_ms * 1000.0) * 100.0
    print("bus: %d frames, %d error frames, load %.1f %% at %d bit/s, master rx overflow %d" % (
        sim.bus.frames, sim.bus.error_frames, load, sim.bus.bitrate, sim.master_node.rx_overflow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
