"""ESP32 DevKit (ESP32-WROOM-32) master.  Pin map: docs/wiring.md.

ESP32 notes: NTCs only on ADC1 (GPIO32-39; ADC2 is unusable with the radio
on); the ADC is neither ratiometric nor linear, so each NTC channel reads
calibrated microvolts (``read_uv``) and scales them against the divider
supply.  GPIO34-39 are input only (used for the MCP2515 INT, a UART RX and NTCs).
Pins and boot (docs/wiring.md, "Pin rules"): no relay on a strapping pin
(GPIO0, 2, 5, 12, 15) or on a pin pulled up or toggled at boot (GPIO0, 1,
3, 5, 14, 15).  The precharge relay was on GPIO14 until 2026-12 and is on
GPIO4 now; the RS485 DE moved to GPIO12 (pulled down at reset: the
transceiver stays a receiver while the chip boots).  GPIO14 is driven low
(``hold_low``): on a board still wired the old way the precharge relay
stays open once the firmware runs: the precharge fails, discharge stays open.
"""

PINS = {
    "i2c": (0, 21, 22, 400000),           # SDA 21, SCL 22
    "spi": (2, 18, 23, 19),               # VSPI: SCK 18, MOSI 23, MISO 19
    "can_cs": 5, "can_int": 34,
    "rs485": (2, 17, 16, 12),             # UART2 TX 17, RX 16, DE/RE 12 (pulled down at reset)
    "ttl": (1, 25, 35),                   # UART1 TX 25, RX 35
    "ntc": ((36, "power"), (39, "cell"), (32, "cell")),
    # discharge, precharge, charge, level-2, heater: none pulled up or active
    # at boot; each driver input with its own pull-down (docs/wiring.md)
    "relays": (13, 4, 27, 33, 26),
    "hold_low": (14,),                    # the old precharge pin: driven low
    "relay_active_low": False,
    "buzzer": 2,
    "key": 15,
    "led": None,
}
VDIV_UV = 3300000  # the NTC dividers hang off 3V3


class RatioAdc:
    """read_u16 as a ratio of the divider supply, from calibrated read_uv.

    At 11 dB the ESP32 ADC measures 150..2450 mV (ESP-IDF) and saturates
    below the 3V3 supply, and read_uv of a raw 0 is still the calibration
    offset: an open NTC (pin at 3V3) or a shorted one (pin at GND) scaled
    against the supply would land inside the NTC table as a temperature.
    A saturated raw reading is therefore full scale (NTC open) and a raw 0
    is 0 (NTC shorted): both sensor faults for drivers.ntc."""

    def __init__(self, adc, supply_uv=VDIV_UV):
        self.adc = adc
        self.supply_uv = supply_uv

    def read_u16(self):
        adc = self.adc
        raw = adc.read_u16()       # 12-bit raw scaled: 4095 -> 0xFFFF, 0 -> 0..15
        if raw >= 0xFFF0:
            return 65535
        if raw < 16:
            return 0
        uv = adc.read_uv()
        if uv >= self.supply_uv:
            return 65535
        # scaled by 256 so the product stays a small int (< 2**30)
        return ((uv >> 8) * 65535) // (self.supply_uv >> 8)


def build(machine=None, opts=None):
    from boards.common import build_master   # here: importing the table is cheap
    if machine is None:
        import machine

    def wrap(adc):
        adc.atten(machine.ADC.ATTN_11DB)
        return RatioAdc(adc)

    hw = build_master(machine, PINS, opts, adc_wrap=wrap)
    hw["ble"] = True   # on-chip radio: app.start_ble serves the register map over BLE
    return hw
