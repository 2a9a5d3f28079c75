"""Builds a Bms on a ScriptedBoard and a virtual clock; MicroPython-compatible."""
from bms.core import Bms
from bms.eventlog import EventLog
from bms.params import CHEM_LFP, ParamSet
from bms.ticks import VirtualClock
from scripted_board import ScriptedBoard

# Start just before the ticks wrap so every test also crosses it.
START = 0x3FFFFFFF - 20000


class Rig:
    """``persist=True``: latched faults go to a settings store on a fake
    flash after every step (what the services poller does on a board), and
    ``reboot()`` builds a new Bms from it, as a power cycle would."""

    def __init__(self, chem=CHEM_LFP, cells=16, mv=3300, start=START, persist=False, **over):
        self.clock = VirtualClock(start)
        self.board = ScriptedBoard(max_cells=cells, cells=cells, mv=mv)
        self.params = ParamSet(chem, max_cells=cells)
        if over:
            from bms import params as P
            self.params.set_many([(P.index(k), v) for k, v in over.items()])
        self.log = EventLog(256)
        self.store = None
        self.boots = 1
        if persist:
            from bms.store import SettingsStore
            from fakeflash import FakeFlash
            self.store = SettingsStore(FakeFlash())
        self.bms = Bms(self.board, self.params, self.clock, self.log)
        self._latch_ver = self.bms.prot.latch_ver

    def step(self):
        self.bms.step()
        if self.store is not None and self.bms.prot.latch_ver != self._latch_ver:
            self.store.save_latches(self.bms.prot.latched_ids())
            self._latch_ver = self.bms.prot.latch_ver

    def reboot(self):
        """Power cycle: every relay coil drops, a new Bms starts from flash."""
        self.board.set_relays(bytearray(5))
        self.params.listener = None
        latched = self.store.load_latches() if self.store is not None else None
        self.bms = Bms(self.board, self.params, self.clock, self.log, latched=latched)
        self._latch_ver = self.bms.prot.latch_ver
        self.boots += 1

    def run(self, ms, step=10):
        """Advance virtual time by ``ms`` in ``step`` increments, stepping the BMS."""
        t = 0
        while t < ms:
            self.clock.advance(step)
            t += step
            self.step()

    def run_until(self, pred, limit_ms, step=10):
        """Advance until ``pred()`` holds; returns elapsed ms or -1."""
        t = 0
        while t <= limit_ms:
            if pred():
                return t
            self.clock.advance(step)
            t += step
            self.step()
        return -1

    @property
    def relays(self):
        return self.board.relays


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)
