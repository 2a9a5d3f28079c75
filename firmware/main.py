"""Board entry point: pick the board, build the Bms, run the scheduler loop.

Board selection, first match wins:
  1. ``config.py`` on the board filesystem: BOARD = "pico" | "pico_w" |
     "esp32_devkit" | "slave_module", optional OPTS = {...} (see
     boards/common.py DEFAULTS: shunt_uohm, can_bitrate, can_xtal, ...)
     and CHEMISTRY = 0..3 (NMC, LFP, LTO, NA) for first-boot defaults
  2. the platform: rp2 -> pico (pico_w if the firmware names a Pico W),
     esp32 -> esp32_devkit

The loop runs ``bms.step()`` (every task that is due), then the comms
pollers in ``APP.pollers`` (other modules append theirs), then idles until
the scheduler's next deadline.  The watchdog is fed only after a completed
``step()``: a hang in any driver or task resets the MCU, whose GPIO reset
state leaves every relay coil off.  Ctrl-C at the REPL opens all relays and
leaves ``APP`` for ``import diag``.
"""
import sys
import time

from bms.core import Bms, MODE_BOOT, MODE_PROTECT
from bms.eventlog import EventLog
from bms.params import ParamSet
from bms.ticks import BoardClock, ticks_diff

WDT_MS = 4000
IDLE_MAX_MS = 20
APP = None


def board_name(cfg=None):
    name = getattr(cfg, "BOARD", None)
    if name:
        return name
    if sys.platform == "rp2":
        try:
            import os
            if "Pico W" in os.uname().machine:
                return "pico_w"
        except Exception:  # noqa: BLE001
            pass
        return "pico"
    if sys.platform == "esp32":
        return "esp32_devkit"
    raise ValueError("set BOARD in config.py")


def load_board(name, machine=None, opts=None):
    mod = __import__("boards." + name, None, None, ["build"])
    return mod.build(machine, opts)


class App:
    def __init__(self, hw, bms=None, clock=None):
        self.hw = hw
        self.bms = bms
        self.clock = clock
        self.pollers = []
        self.wdt = None
        self.loops = 0

    def led_pattern(self):
        from drivers import gpio
        b = self.bms
        if b is None or b.mode == MODE_BOOT:
            return gpio.LED_BLIP
        if b.mode == MODE_PROTECT or b.prot.level >= 2:
            return gpio.LED_FAST
        return gpio.LED_SLOW

    def step(self):
        """One loop pass; returns ms until the core's next deadline."""
        b = self.bms
        b.step()
        if self.wdt is not None:
            self.wdt.feed()  # only after a completed core step
        for p in self.pollers:
            try:
                p()
            except Exception as e:  # noqa: BLE001 - comms must not stop control
                sys.print_exception(e)
        led = self.hw.get("led")
        if led is not None:
            led.step(self.clock.ticks_ms(), self.led_pattern())
        self.loops += 1
        return b.sched.ms_to_next()

    def run(self):
        try:
            while True:
                wait = self.step()
                if wait > 0:
                    time.sleep_ms(wait if wait < IDLE_MAX_MS else IDLE_MAX_MS)
        finally:
            self.bms.contactors.open_all(self.clock.ticks_ms())


def build(name=None, machine=None, cfg=None, clock=None, params=None):
    """Construct the application without starting the loop (tests, REPL)."""
    name = name or board_name(cfg)
    opts = getattr(cfg, "OPTS", None)
    hw = load_board(name, machine, opts)
    if hw["kind"] != "master":
        return App(hw)
    board = hw["board"]
    if params is None:
        params = ParamSet(getattr(cfg, "CHEMISTRY", 1), max_cells=board.max_cells)
    board.init(params[1])  # P_CELL_COUNT; failures are retried by the reads
    clock = clock or BoardClock()
    bms = Bms(board, params, clock, EventLog(128))
    return App(hw, bms, clock)


def main():
    global APP
    try:
        import config as cfg
    except ImportError:
        cfg = None
    APP = build(cfg=cfg)
    if APP.bms is None:
        try:
            import comms.can_slave as slave  # the slave-side CAN protocol
            slave.run(APP.hw)
        except ImportError:
            print("slave board: comms.can_slave not installed")
        return
    APP.wdt = APP.hw["wdt"](WDT_MS)
    APP.run()


if __name__ == "__main__":
    main()
