"""Raspberry Pi Pico (RP2040) single board for 17S-32S: two stacked BQ76952.

The Pico pin map (boards/pico.py) plus the top BQ76952 on I2C1 (GP6 SDA,
GP7 SCL) through a digital I2C isolator: the top chip floats on the bottom
chip's top cell and answers at the same address 0x08.  The bottom chip on
I2C0 measures cells 1..16 and the shunt; the cell split and the wiring of
fewer than 32 cells are in drivers/afe_stack.py and docs/wiring.md.
Cell count 6..32 (the product line is 21S-32S).  Select with
BOARD = "pico32" in config.py.
"""
from boards.pico import PINS as _PICO

PINS = dict(_PICO)
PINS["i2c_top"] = (1, 6, 7, 400000)   # I2C1 SDA GP6, SCL GP7 -> ISO1640 -> top BQ76952 0x08


def build(machine=None, opts=None):
    from boards.common import build_master   # here: importing the table is cheap (boards.relays_off)
    if machine is None:
        import machine
    return build_master(machine, PINS, opts)
