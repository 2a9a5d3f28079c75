"""The board files (one per board: a ``PINS`` table and ``build``), which
board this is, and the relay pins driven off before the application loads.

Importing a board file is cheap (its table only; ``boards.common`` and the
drivers are imported by ``build``), so main.py can open the relays before
the application's imports: ``relays_off`` (docs/wiring.md, "Pin rules").
"""
import sys


def board_name(cfg=None):
    """First match: config.py's BOARD; the board the image was built for
    (``board_image``, frozen in by tools/fwbuild.py: a pico32 or
    slave_module UF2 runs as that board with no config.py); the platform
    (rp2: pico, or pico_w if the firmware names a Pico W; esp32:
    esp32_devkit)."""
    name = getattr(cfg, "BOARD", None)
    if name:
        return name
    try:
        from board_image import BOARD
        return BOARD
    except ImportError:
        pass
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


def relays_off(machine=None, cfg=None):
    """Drive every relay pin of the board, and its ``hold_low`` pins, to the
    off level; the pin numbers driven.

    On an ESP32 a watchdog reset (task watchdog -> panic -> restart) and
    ``machine.reset()`` leave the GPIOs as they were: a closed relay stays
    closed through the whole boot until the board is built.  main.py calls
    this first, before the application's imports (on an RP2040 the pins
    are already at their reset level, the same off level)."""
    if machine is None:
        import machine
    if cfg is None:
        try:
            import config as cfg
        except ImportError:
            cfg = None
    name = board_name(cfg)
    pins = getattr(__import__("boards." + name, None, None, ["PINS"]), "PINS", None) or {}
    off = 1 if pins.get("relay_active_low", False) else 0
    done = []
    for n in pins.get("relays", ()):
        if n is not None:
            machine.Pin(n, machine.Pin.OUT, value=off)
            done.append(n)
    for n in pins.get("hold_low", ()):
        machine.Pin(n, machine.Pin.OUT, value=0)
        done.append(n)
    return done
