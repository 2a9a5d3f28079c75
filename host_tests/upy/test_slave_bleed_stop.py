# A slave module's bleeders stop when its rules say so, whatever the AFE did
# a moment before (docs/can_internal.md: "an AFE error stops balancing at
# once", "the slave stops bleeding when the timeout passes without a new
# BAL", "it also stops after 3 periods without a SYNC"; docs/safety.md
# "Master dies while slaves balance").  The real BQ76952 driver and the
# module's board build on the project's chip emulator: the chip's own bleed
# mask (cb_mask) is what is checked, not the slave's record of it.
# MicroPython-compatible: runs under pytest and the unix port.
import drv_helpers  # noqa: F401

from can_helpers import HandMaster, LoopBus, LoopNode
from drv_fakemachine import FakeMachine

from boards import slave_module as bd
from bms.ticks import VirtualClock
from comms import can_ids as C
from slave.afe import SlaveAfe
from slave.core import Slave


def _run(clock, s, ms):
    for _ in range(ms):
        clock.advance(1)
        s.step(clock.ticks_ms())


class Rig:
    def __init__(self):
        self.fm = FakeMachine([3400] * 16)
        self.clock = VirtualClock(1000)
        self.bus = LoopBus()
        self.m = HandMaster(self.bus)
        self.s = None
        self.boot()

    def boot(self):
        """A module MCU (re)start: fresh drivers, the same chip (it keeps its state)."""
        hw = bd.build(self.fm)
        self.s = Slave(LoopNode(self.bus), SlaveAfe(hw["afe"], hw["ntcs"]), addr=1, cells=16,
                       temps=len(hw["ntcs"]), uid=7, now=self.clock.ticks_ms())

    def run(self, ms):
        _run(self.clock, self.s, ms)

    def bleeding(self, mask=0b0101):
        self.m.sync()
        self.m.config(1)
        self.run(5)
        self.m.bal(1, mask)
        self.run(5)
        assert self.s.bal_mask == mask and self.fm.bq.cb_mask == mask


def test_an_off_write_lost_to_an_afe_outage_is_repeated():
    r = Rig()
    r.bleeding()
    r.fm.bq.dead = True             # the AFE stops answering: balancing must stop
    for _ in range(2):
        r.m.sync()
        r.run(1000)
    r.fm.bq.dead = False
    r.m.sync()
    r.run(1100)                      # the next sample
    assert r.fm.bq.cb_mask == 0


def test_a_bal_timeout_during_an_afe_glitch_still_stops_the_bleeders():
    r = Rig()
    r.bleeding()
    r.run(2990)
    r.fm.bq.dead = True
    r.run(20)                        # master lost / BAL timeout now: the write fails
    r.fm.bq.dead = False
    r.run(1100)
    assert r.s.bal_mask == 0
    assert r.fm.bq.cb_mask == 0


def test_a_module_restarted_while_bleeding_stops_the_chip_at_its_first_sample():
    r = Rig()
    r.bleeding()
    r.boot()                         # watchdog / firmware update reset
    r.m.sync()
    r.m.config(1)
    r.run(1100)
    assert r.fm.bq.cb_mask == 0
    assert r.s.bal_mask == 0


def test_an_unaddressed_module_does_not_transmit_asleep():
    r = Rig()
    hw = bd.build(r.fm)
    node = LoopNode(r.bus)
    s = Slave(node, SlaveAfe(hw["afe"], hw["ntcs"]), addr=0, cells=16, temps=3, uid=9,
              now=r.clock.ticks_ms())
    _run(r.clock, s, 600)
    assert any(f[0] == C.ID_ANNOUNCE for f in node.sent)    # awake: it announces
    s._sleep(True)
    n = len(node.sent)
    _run(r.clock, s, 10000)
    assert len(node.sent) == n


def test_config_outside_the_modules_range_is_refused():
    r = Rig()
    r.run(5)
    s = r.s
    for cells, temps in ((1, 3), (2, 3), (17, 3)):
        r.m.config(1, cells, temps=temps)
        r.run(5)
        assert s.cells == 16, (cells, temps)
    r.m.config(1, 12, temps=0)                # no sensor: the module's OT limit would be gone
    r.run(5)
    assert s.temps == 3 and s.cells == 16
    r.m.config(1, 12)
    r.run(5)
    assert s.cells == 12


def test_a_module_whose_can_controller_stays_bus_off_stops_bleeding_and_keeps_its_limits():
    # Its own drop cable shorted (or its MCP2515 not answering): to this module
    # the master has gone silent.  docs/safety.md "Master dies while slaves
    # balance": bleeding stops within 3 s; docs/can_internal.md "Sampling
    # without a master: the slave keeps sampling every 1 s" (its hard limits).
    r = Rig()
    r.bleeding()
    node = r.s.ctrl
    node.bus_off = node.stuck = True     # every restart goes bus-off again at once
    r.run(3100)
    assert r.fm.bq.cb_mask == 0
    assert r.s.bal_mask == 0
    r.fm.bq.source.cells[5] = 1200   # below the module's own UV limit
    r.run(1000 * 3 + 100)
    assert r.s.faults & C.LF_UV
