# Driver hot paths under the MicroPython unix port: time per call (host CPU,
# not an RP2040 figure) and heap bytes allocated per call (port-independent),
# plus SPI bytes per CAN frame counted on the MCP2515 emulator.
import gc
import sys
import time

import drv_helpers  # noqa: F401
from drv_helpers import FixedI2C

from drivers.ina228 import INA228
from drivers.mcp2515 import MCP2515
from drivers.ntc import Beta, Ntc, NtcTable
from emu_mcp2515 import EmuMCP2515
from vclock import UsClock
from canbus import BusNode, VirtualCanBus

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


class ConstSpi:
    def __init__(self, v):
        self.v = v

    def write(self, b):
        pass

    def readinto(self, b, w=0):
        for i in range(len(b)):
            b[i] = self.v

    def write_readinto(self, wb, rb):
        for i in range(len(rb)):
            rb[i] = self.v


class P:
    def value(self, v=None):
        return 1


class Adc:
    def read_u16(self):
        return 30000


def measure(name, fn):
    fn()
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    for _ in range(N):
        fn()
    dt = time.ticks_diff(time.ticks_us(), t0)
    a1 = gc.mem_alloc()
    print("%s_us %.3f" % (name, dt / N))
    print("%s_alloc %d" % (name, (a1 - a0) // N))


spi = ConstSpi(0)
can = MCP2515(spi, P())
data = b"12345678"
measure("mcp2515_send", lambda: can.send(0x123, data))
spi.v = 0x48
buf = bytearray(8)
measure("mcp2515_recv", lambda: can.recv(buf))
ina = INA228(FixedI2C({0x07: bytearray(b"\x01\x23\x40")}), shunt_uohm=100, max_current_ma=300000)
measure("ina228_current", ina.read_current_ma)
ntc = Ntc(Adc(), NtcTable(Beta()), samples=4)
measure("ntc_read", ntc.read)

bus = VirtualCanBus()
BusNode(bus)
clk = UsClock()
emu = EmuMCP2515(bus, clock=clk)
drv = MCP2515(emu.spi, emu.cs, wait_us=clk.sleep_us)
drv.init()
print("mcp2515_init_wait_us %d" % clk.slept_us)
peer = BusNode(bus)
emu.spi_log = []
drv.send(0x100, data)
tx = sum(len(m) for m, _ in emu.spi_log)
bus.step()
peer.send(0x101, data)
bus.step()
emu.spi_log = []
drv.recv(buf)
rx = sum(len(m) for m, _ in emu.spi_log)
print("can_tx_spi_bytes %d" % tx)
print("can_rx_spi_bytes %d" % rx)
