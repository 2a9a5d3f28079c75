# A fake ``machine`` module for building the real board files on the host:
# I2C routes to the BQ76952 / INA228 emulators, SPI to the MCP2515 emulator
# (CS wired by pin number), ADC returns fixed NTC codes, WDT counts feeds.
# With ``top_mv`` a second BQ76952 (the top of a stacked 17S-32S board, cells
# top_mv) answers at 0x08 on I2C bus 1 only; bus 0 has the bottom chip (cells
# cells_mv) and the INA228.  ``sleep_us`` is a virtual microsecond clock the
# drivers wait on (boards/common.py takes it from the machine) and the chip
# emulators keep time by: ``fm.clock``.
import drv_helpers  # noqa: F401

from emu_bq76952 import EmuBQ76952, StaticSource
from emu_ina228 import EmuINA228, StaticSource as ShuntSource
from emu_mcp2515 import EmuMCP2515
from vclock import UsClock


class Pin:
    OUT = 1
    IN = 0
    PULL_UP = 1
    registry = {}
    cs_n = None
    cs_target = None

    levels = {}     # one level per GPIO: every Pin object of a number sees it

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n = n
        self.mode = mode
        if value is not None:
            Pin.levels[n] = value
        elif n not in Pin.registry:
            Pin.levels[n] = 1 if pull == Pin.PULL_UP else 0
        Pin.registry[n] = self

    @property
    def v(self):
        return Pin.levels[self.n]

    @v.setter
    def v(self, x):
        Pin.levels[self.n] = x

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        if self.n == Pin.cs_n and Pin.cs_target is not None:
            Pin.cs_target.value(self.v)  # wired to the MCP2515's CS
        return None

    IRQ_FALLING = 4
    IRQ_RISING = 8

    def irq(self, handler=None, trigger=0):
        self.irq_handler = handler
        self.irq_trigger = trigger

    def drive(self, v):
        """An outside source sets this input (an ALERT line): edges call the handler."""
        old = self.v
        self.v = 1 if v else 0
        h = getattr(self, "irq_handler", None)
        if h is not None and old != self.v:
            if self.irq_trigger & (Pin.IRQ_RISING if self.v else Pin.IRQ_FALLING):
                h(self)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class FakeMachine:
    def __init__(self, cells_mv, adc_code=32768, cs_pin=17, top_mv=None):
        Pin.registry = {}
        Pin.levels = {}
        self.Pin = Pin
        self.uart_kw = []      # (uid, keyword arguments) of every UART built
        self.clock = UsClock()
        self.sleep_us = self.clock.sleep_us
        self.bq = EmuBQ76952(StaticSource(cells_mv), crc=True, shunt_uohm=100, clock=self.clock)
        self.bq_top = None
        total = sum(cells_mv)
        if top_mv is not None:
            # SRP/SRN of the top chip are shorted: it never sees the current.
            self.bq_top = EmuBQ76952(StaticSource(top_mv), crc=True, shunt_uohm=100,
                                     clock=self.clock)
            total += sum(top_mv)
        self.ina = EmuINA228(ShuntSource(current_ma=0, bus_mv=total), shunt_uohm=100)
        self.can = EmuMCP2515(clock=self.clock)
        self.cs_pin = cs_pin
        Pin.cs_n = cs_pin
        Pin.cs_target = self.can.cs
        self.adc_code = adc_code
        self.adc_codes = {}     # pin -> code of that input alone (an NTC not fitted: 65535)
        self.created = []
        self.feeds = 0
        fm = self

        class I2C:
            def __init__(self, bus_id, sda=None, scl=None, freq=None):
                fm.created.append(("I2C", bus_id, sda.n, scl.n, freq))
                if bus_id == 0:
                    self.dev = {0x08: fm.bq, 0x40: fm.ina}
                else:  # the isolated top bus: nothing there unless stacked
                    self.dev = {0x08: fm.bq_top} if fm.bq_top is not None else {}

            def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
                if addr not in self.dev:
                    raise OSError(19)
                self.dev[addr].readfrom_mem_into(addr, reg, buf)

            def writeto_mem(self, addr, reg, buf, addrsize=8):
                if addr not in self.dev:
                    raise OSError(19)
                self.dev[addr].writeto_mem(addr, reg, buf)

        class SPI:
            def __init__(self, bus_id, **kw):
                fm.created.append(("SPI", bus_id))
                self.spi = fm.can.spi

            def write(self, b):
                self.spi.write(b)

            def readinto(self, b, w=0):
                self.spi.readinto(b, w)

            def write_readinto(self, wb, rb):
                self.spi.write_readinto(wb, rb)

        class UART:
            def __init__(self, uid, **kw):
                fm.created.append(("UART", uid, kw.get("baudrate")))
                fm.uart_kw.append((uid, kw))

            def write(self, b):
                return len(b)

            def flush(self):
                pass

            def any(self):
                return 0

            def readinto(self, b):
                return None

        class ADC:
            # RP2040: read_u16 is ratiometric to the divider supply
            # (fm.adc_code).  After atten() the ESP32 model: the divider
            # voltage (adc_code of 3.3 V) through an ADC that at 11 dB reads
            # raw 0 up to about ESP_UV_LO and saturates (raw 4095) from
            # ESP_UV_HI on (ESP-IDF: measurable range 150..2450 mV, below the
            # 3V3 an open NTC pulls its pin to); read_uv is the calibrated
            # voltage of the raw reading, read_u16 the raw scaled to 16 bits.
            ATTN_11DB = 3
            ESP_UV_LO = 142000
            ESP_UV_HI = 3100000

            def __init__(self, pin):
                fm.created.append(("ADC", pin.n))
                self.esp = False
                self.n = pin.n

            def _raw12(self):
                uv = fm.adc_code * 3300000 // 65535
                lo, hi = self.ESP_UV_LO, self.ESP_UV_HI
                return max(0, min(4095, (uv - lo) * 4095 // (hi - lo)))

            def read_u16(self):
                if not self.esp:
                    return fm.adc_codes.get(self.n, fm.adc_code)
                raw = self._raw12()
                return (raw << 4) | (raw >> 8)

            def atten(self, a):
                self.esp = True

            def read_uv(self):
                lo, hi = self.ESP_UV_LO, self.ESP_UV_HI
                return lo + self._raw12() * (hi - lo) // 4095

        class WDT:
            def __init__(self, timeout=0):
                fm.created.append(("WDT", timeout))

            def feed(self):
                fm.feeds += 1

        self.I2C = I2C
        self.SPI = SPI
        self.UART = UART
        self.ADC = ADC
        self.WDT = WDT

    def pin(self, n):
        return Pin.registry.get(n)
