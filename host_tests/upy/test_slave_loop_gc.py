# A slave module's loop collects garbage between steps, when nothing is due
# (slave_main.loop, gc_due): about every GC_PERIOD_MS, never while its
# slot's frames go out and never just before the master's SYNC, whose
# arrival times the slot.  A collection takes about 11 ms on the chip: the
# test gives each one GC_MIN_IDLE_MS of virtual time, the master running
# on meanwhile, and checks that no frame of the module went out late, no
# SYNC was read late and no sample came late.
# MicroPython-compatible: runs under pytest and the unix port.
from can_helpers import LoopBus, LoopNode, ValueAfe
from bms.ticks import VirtualClock, ticks_add, ticks_diff
from comms import can_ids as C
from comms.can_master import CanMaster
from slave.core import Slave
import slave_main as SM


class Wdt:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Rig:
    """A CanMaster and one module at ``addr`` (or none: ``master=False``),
    the module in slave_main.loop on a virtual clock: the master is polled
    every ms, during the module's sleeps and its collections alike, and a
    collection takes GC_MIN_IDLE_MS."""

    def __init__(self, addr=16, master=True, period=C.SWEEP_MS, phase=0):
        self.clock = VirtualClock(0x3FFFFFFF - 20000)   # the tick wrap inside the run
        now = self.clock.ticks_ms()
        self.start = now
        bus = LoopBus()
        self.master = None
        if master:
            self.master = CanMaster(LoopNode(bus, rx_depth=64), addr, period=period, now=now)
            self.master.configure(addr * 16, 16, 2500)
        self.node = LoopNode(bus, rx_depth=2)      # the MCP2515's two RX buffers
        self.s = Slave(self.node, ValueAfe(16, 3300), addr=addr if master else 0, cells=16,
                       uid=0x4242, now=now)
        self.sends = []             # t of every frame the module sent
        self.late = []              # ms each frame of its slot went out after its time
        self.syncs = []             # t of every SYNC the module read
        self.sync_sent = []         # t of every SYNC the master sent
        self.samples = []           # t of every AFE sample
        self.gcs = []               # t of every collection
        s = self.s
        send = self.node.send

        def timed_send(cid, data, ext=False):
            self.sends.append(self.t())
            if s.addr:
                self.late.append(ticks_diff(self.clock.ticks_ms(), s._next_tx))
            return send(cid, data, ext)
        self.node.send = timed_send
        if master:
            msend = self.master.ctrl.send

            def master_send(cid, data, ext=False):
                if cid == C.ID_SYNC:
                    self.sync_sent.append(self.t())
                return msend(cid, data, ext)
            self.master.ctrl.send = master_send
        sample = s._sample

        def timed_sample(now):
            self.samples.append(self.t())
            sample(now)
        s._sample = timed_sample
        step = Slave.step

        def slave_step(now):
            n = s.syncs
            step(s, now)
            if s.syncs != n:
                self.syncs.append(self.t())
        s.step = slave_step
        # The first collection falls due ``phase`` ms before GC_PERIOD_MS.
        self.gc_start = ticks_add(now, -phase)

    def t(self):
        """ms since the start."""
        return ticks_diff(self.clock.ticks_ms(), self.start)

    def ticks_ms(self):
        return self.clock.ticks_ms()

    def sleep_ms(self, ms):
        for _ in range(ms):
            self.clock.advance(1)
            if self.master is not None:
                self.master.poll(self.clock.ticks_ms())
        if self.t() >= self.end:
            raise _End()

    def _collect(self):
        self.gcs.append(self.t())
        self.sleep_ms(SM.GC_MIN_IDLE_MS)     # the module does nothing meanwhile

    def run(self, ms):
        """One loop for ``ms`` (its collection clock starts at gc_start)."""
        self.end = self.t() + ms
        if self.master is not None:
            self.master.poll(self.clock.ticks_ms())
        try:
            SM.loop(self.s, Wdt(), None, {"cells": 16}, self.gc_start,
                    collect=self._collect, clock=self)
        except _End:
            pass


class _End(Exception):
    pass


def _on_time(r, why):
    """Nothing the module does came late for a collection."""
    assert r.late and max(r.late) == 0, why
    # Each SYNC read in the pass it came (but one sent as the run ended).
    assert r.syncs == [t for t in r.sync_sent if t < r.end], why
    for a, b in zip(r.samples, r.samples[1:]):
        assert b - a <= 1000, why               # _LOCAL_SAMPLE_MS, or a SYNC's sample


def test_a_module_in_a_sweep_collects_between_its_slot_and_the_next_sync():
    # Slot right after the SYNC (1) or far into the sweep (16); a period of
    # 1.5 s puts the module's own 1 s sample timer out of step with the
    # SYNCs; the phases make the period end in the slot, just before a SYNC
    # and just after one.
    for addr, period, phases in ((1, 1000, (0, 950, 985)),
                                 (16, 1000, (0, 190, 175, 5, 15)),
                                 (16, 1500, (0, 510, 490, 505))):
        for phase in phases:
            r = Rig(addr, period=period, phase=phase)
            r.run(33000)
            why = (addr, period, phase, r.gcs)
            assert len(r.syncs) >= 33000 // period - 1 and len(r.sends) > 20 * 6, why
            assert len(r.gcs) == 3, why
            for a, b in zip(r.gcs, r.gcs[1:]):
                assert b - a >= SM.GC_PERIOD_MS, why
            _on_time(r, why)
            assert r.s.tx_dropped == 0 and r.node.rx_overflow == 0, why
            assert r.s.syncs == len(r.syncs) and len(r.sync_sent) == r.master.n_sweeps, why
            assert not r.s.faults & C.LF_MASTER_LOST, why


def test_a_module_without_a_master_collects_every_period():
    r = Rig(master=False)
    r.run(61000)
    assert r.s.sampled and r.sends          # sampling and announcing
    assert len(r.gcs) == 6, r.gcs
    for a, b in zip(r.gcs, r.gcs[1:]):
        assert SM.GC_PERIOD_MS <= b - a <= SM.GC_PERIOD_MS + 1100   # the next quiet gap


def test_a_module_never_quiet_still_collects_after_the_force_time():
    r = Rig(master=False)
    r.s.quiet_ms = lambda now: 0
    r.run(SM.GC_FORCE_MS + 10)
    assert r.gcs == [SM.GC_FORCE_MS]
