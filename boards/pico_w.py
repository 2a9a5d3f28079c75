"""Raspberry Pi Pico W master: the Pico pin map, but the on-board LED is on
the CYW43 ("LED") and GP23-25/29 belong to the radio (BLE via aioble)."""
from boards.pico import PINS as _PICO

PINS = dict(_PICO)
PINS["led"] = "LED"


def build(machine=None, opts=None):
    from boards.common import build_master   # here: importing the table is cheap
    if machine is None:
        import machine
    hw = build_master(machine, PINS, opts)
    hw["ble"] = True   # CYW43 radio: app.start_ble serves the register map over BLE
    return hw
