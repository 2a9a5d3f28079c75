"""A slave module whose image has a ROMFS partition: the master forwards a
ROMFS application package over the internal CAN bus into the slave's
inactive ROMFS slot (bms.romupdate), the slave reboots into it on trial and
confirms it; the other slaves are not touched.  MicroPython-compatible."""
from can_fwrig import FwRig
from rom_rig import FakeRom, app, check, package

from bms import romslot as R
from bms.fwslot import ROOT_SLOT, ST_OK
from bms.romupdate import RomUpdater
from comms import slave_update as SU
from slave.fw import SlaveFw
from slave.core import Slave

LIMIT_MS = 120000


class RomRig(FwRig):
    def __init__(self, n=2):
        self.roms = [FakeRom() for _ in range(n)]
        self.mounted = [None] * n
        FwRig.__init__(self, n=n)

    def boot(self, k):
        fs = self.fss[k]
        rom = self.roms[k]
        self.mounted[k] = R.boot(fs, rom.part(), lambda mv, s: None)    # boot.py
        up = RomUpdater(fs, rom.part(), check=check)                     # slave_main
        node = self.snodes[k]
        node.rx = []
        now = self.clock.ticks_ms()
        s = Slave(node, self.afes[k], addr=k + 1, cells=4, uid=0x100 + k, now=now)
        s.fw_version = (0, 1, 0)
        s.fw = SlaveFw(s, up, reset=self._reset_fn(k), now=now)
        s.fw.confirm_sweeps = self.confirm_sweeps
        s.fw.trial_timeout_ms = self.trial_timeout_ms
        self.slaves[k] = s
        self.boots[k] += 1


def test_rom_package_forwarded_to_one_slave_installs_reboots_and_confirms():
    r = RomRig(3)
    assert r.run_until(lambda: all(r.master.mod_state[k] == 1 for k in range(3)), 5000) >= 0
    pkg, digest, sig = package(app("slave-2", pad=9000))
    r.upload(pkg, digest, sig)
    r.fwd.start(2, r.clock.ticks_ms())
    assert r.run_until(lambda: r.fwd.phase >= SU.FP_DONE, LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_DONE, r.fwd.err_text
    assert list(r.fwd.results[:3]) == [SU.SR_NONE, SU.SR_UPDATED, SU.SR_NONE]
    assert r.boots[1] == 2 and r.mounted[1] == 0
    up = r.slaves[1].fw.up
    assert (up.state, up.active) == (ST_OK, 0)            # confirmed
    mv = r.roms[1].part()[1]
    assert R.valid(mv, 0)
    img = bytes(R.image(mv, 0))
    assert b"slave-2" in img
    for k in (0, 2):
        assert r.roms[k].ops == 0 and r.mounted[k] == ROOT_SLOT
        assert R.slots(r.fss[k]).active == ROOT_SLOT


def test_rom_package_staged_without_apply_is_dropped_not_mounted_at_the_next_boot():
    # docs/can_internal.md: a staged package is swapped in only by the reset
    # that follows the master's APPLY.  The master restarts between FINISH
    # and APPLY; the module's next reset (watchdog, power cycle) keeps the
    # running application and drops the staged slot (erased at that boot).
    r = RomRig(2)
    assert r.run_until(lambda: all(r.master.mod_state[k] == 1 for k in range(2)), 5000) >= 0
    pkg, digest, sig = package(app("slave-1", pad=9000))
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    r.restart_master_before_apply(0)
    r.run(500)
    mv = r.roms[0].part()[1]
    assert R.valid(mv, 0) and r.boots[0] == 1        # staged in slot A, not applied
    r.boot(0)                                        # a watchdog reset
    assert r.mounted[0] == ROOT_SLOT
    s = R.slots(r.fss[0])
    assert (s.state, s.active) == (ST_OK, ROOT_SLOT)
    assert not R.valid(mv, 0)                        # dropped: erased ahead of the next update
    r.boot(0)
    assert r.mounted[0] == ROOT_SLOT
