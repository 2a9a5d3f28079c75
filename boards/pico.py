"""Raspberry Pi Pico (RP2040) master.  Pin map: docs/wiring.md.

RP2040 notes: three usable ADC inputs (GP26-28, 12-bit, read_u16 scaled);
I2C0 on GP4/GP5 at 400 kHz for the BQ76952 and the INA228; SPI0 for the
MCP2515; UART0 with a DE pin for RS485 (no hardware RS485 mode); WDT up to
8.3 s.
"""

PINS = {
    "i2c": (0, 4, 5, 400000),            # SDA GP4, SCL GP5: BQ76952 0x08, INA228 0x40
    "spi": (0, 18, 19, 16),              # SCK GP18, MOSI GP19, MISO GP16
    "can_cs": 17, "can_int": 20,         # MCP2515 CS GP17, INT GP20
    "rs485": (0, 0, 1, 2),               # UART0 TX GP0, RX GP1, DE/RE GP2 (LC-3 485A/B)
    "ttl": (1, 8, 9),                    # UART1 TX GP8, RX GP9 (LC-2 TTL display)
    "ntc": ((28, "power"), (26, "cell"), (27, "cell")),  # JT (LC-5), T1/T2 (LC-4)
    # LC-5: J1 discharge, J2 precharge, J3 charge, J4 level-2, JR heater
    "relays": (10, 11, 12, 13, 14),
    "relay_active_low": False,           # low-side MOSFET/ULN driver: GPIO high = coil on
    "buzzer": 15,                        # LC-2 pins 7/8 through a transistor
    "key": 21,                           # LC-2 K/VCC through an opto-coupler, active low
    "led": 25,                           # on-board LED
    "afe_alert": 22,
    "shunt_alert": 3,                    # INA228 ALERT (open drain, pull-up): over-current onset
}


def build(machine=None, opts=None):
    from boards.common import build_master   # here: importing the table is cheap (boards.relays_off)
    if machine is None:
        import machine
    return build_master(machine, PINS, opts)
