"""Builds a Bms on a ScriptedBoard and a virtual clock; MicroPython-compatible."""
from bms.core import Bms
from bms.eventlog import EventLog
from bms.params import CHEM_LFP, ParamSet
from bms.ticks import VirtualClock
from scripted_board import ScriptedBoard

# Start just before the ticks wrap so every test also crosses it.
START = 0x3FFFFFFF - 20000


class Rig:
    def __init__(self, chem=CHEM_LFP, cells=16, mv=3300, start=START, **over):
        self.clock = VirtualClock(start)
        self.board = ScriptedBoard(max_cells=cells, cells=cells, mv=mv)
        self.params = ParamSet(chem, max_cells=cells)
        if over:
            from bms import params as P
            self.params.set_many([(P.index(k), v) for k, v in over.items()])
        self.log = EventLog(256)
        self.bms = Bms(self.board, self.params, self.clock, self.log)

    def run(self, ms, step=10):
        """Advance virtual time by ``ms`` in ``step`` increments, stepping the BMS."""
        t = 0
        while t < ms:
            self.clock.advance(step)
            t += step
            self.bms.step()

    def run_until(self, pred, limit_ms, step=10):
        """Advance until ``pred()`` holds; returns elapsed ms or -1."""
        t = 0
        while t <= limit_ms:
            if pred():
                return t
            self.clock.advance(step)
            t += step
            self.bms.step()
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
