"""Slave module (RP2040): one BQ76952 for up to 16 cells, three NTCs (LC-7
T0/T1/T2), the MCP2515 to the master's CAN chain (LC-8 / LC-9) and a status
LED.  No shunt, relays or RS485: the master owns those."""

PINS = {
    "i2c": (0, 4, 5, 400000),
    "spi": (0, 18, 19, 16),
    "can_cs": 17, "can_int": 20,
    "ntc": ((26, "cell"), (27, "cell"), (28, "cell")),  # LC-7 T0, T1, T2
    "led": 25,
    "addr_pins": (6, 7, 8, 9),  # module address DIP switch (read by the CAN slave)
}


def build(machine=None, opts=None):
    from boards.common import build_slave   # here: importing the table is cheap (boards.relays_off)
    if machine is None:
        import machine
    return build_slave(machine, PINS, opts)
