"""Shared rig for the tests that run the real board image on the emulated
RP2040 (tools/rp2emu): builds the UF2 once (cached under build/), boots a
board around a pack model, and reads state off the chip through its USB
REPL or its Modbus port.
"""
import pytest

import tools  # noqa: F401  (firmware on sys.path)
from bms.contactors import RELAY_NAMES
from tools import fwbuild
from tools.rp2emu.board import EmuBoard, VirtualCanBus
from tools.rp2emu.repl import Repl
from tools.sim.pack import Pack

_UF2 = {}


def uf2(board="pico"):
    """The board image, built (or brought up to date) once per test session."""
    if board not in _UF2:
        try:
            _UF2[board] = fwbuild.build(board)
        except fwbuild.BuildError as e:
            pytest.fail("cannot build the %s image: %s" % (board, e))
    return _UF2[board]


class CanLog:
    """An inverter-side CAN node that ACKs and records every frame."""

    def __init__(self, bus):
        self.frames = []
        bus.attach(self)

    def deliver(self, can_id, data, ext):
        self.frames.append((can_id, bytes(data), ext))


def boot(board="pico", cells=16, soc=0.5, chem="LFP", seed=1, flash_file=None, ms=2500,
         **pack_kw):
    """A board running its image for ``ms`` of emulated time."""
    pack = Pack(chem, cells, 100.0, soc, seed=seed, **pack_kw)
    bus = VirtualCanBus(500000)
    b = EmuBoard(uf2("pico" if board == "pico" else board), pack, board=board,
                 can_bus=bus, flash_file=flash_file)
    b.can_log = CanLog(bus)
    b.relay_log = []     # (t_ms, relay name, on)

    def on_pin(pin, level, t):
        if pin in b.relay_pins:
            name = RELAY_NAMES[b.relay_pins.index(pin)]
            b.relay_log.append((t / 1e6, name, b.relay(name)))
    b.chip.pin_listeners.append(on_pin)
    if ms:
        b.run_ms(ms)
    return b


def repl(board):
    r = Repl(board)
    r.enter()
    return r
