# MCP2515 driver against datasheet bit timing, raw SPI bytes and the
# byte-level emulator on a virtual CAN bus.
import drv_helpers  # noqa: F401
from drv_helpers import heap_locked, raises

from canbus import BusNode, VirtualCanBus
from drivers.mcp2515 import (MCP2515, STATE_BUS_OFF, STATE_ERROR_ACTIVE,
                             STATE_ERROR_PASSIVE, STATE_ERROR_WARNING, bit_timing)
from emu_mcp2515 import EmuMCP2515
from vclock import UsClock


def pair(bus=None, **kw):
    """Emulator and driver on one virtual clock (the driver's waits move it)."""
    clk = UsClock()
    emu = EmuMCP2515(bus, clock=clk)
    return emu, MCP2515(emu.spi, emu.cs, wait_us=clk.sleep_us, **kw)


def decode_cnf(xtal, cnf1, cnf2, cnf3):
    """Datasheet section 5: TQ = 2 (BRP+1) / Fosc, bit = 1 + PropSeg + PS1 + PS2."""
    brp = cnf1 & 0x3F
    sjw = (cnf1 >> 6) + 1
    assert cnf2 & 0x80, "BTLMODE must be 1 (PS2 from CNF3)"
    ps1 = ((cnf2 >> 3) & 7) + 1
    prop = (cnf2 & 7) + 1
    ps2 = (cnf3 & 7) + 1
    ntq = 1 + prop + ps1 + ps2
    return {"bitrate": xtal / (2.0 * (brp + 1) * ntq), "ntq": ntq, "sjw": sjw,
            "ps1": ps1, "ps2": ps2, "prop": prop, "sp": (1.0 + prop + ps1) / ntq}


def test_bit_timing_for_8_and_16_mhz_crystals():
    for xtal in (8000000, 16000000):
        for rate in (125000, 250000, 500000):
            d = decode_cnf(xtal, *bit_timing(xtal, rate))
            assert d["bitrate"] == rate, (xtal, rate, d)
            assert 8 <= d["ntq"] <= 25
            assert d["ps2"] >= 2 and d["prop"] + d["ps1"] >= d["ps2"]
            assert d["ps2"] > d["sjw"]
            assert 0.75 <= d["sp"] <= 0.875
    # Hand-derived from the datasheet for 16 MHz / 500 kbit/s: BRP 0 ->
    # TQ 125 ns, 16 TQ = 1 + 7 + 6 + 2 (87.5 %), SJW 1.
    assert bit_timing(16000000, 500000) == (0x00, 0xAE, 0x01)
    # The widespread Arduino mcp_can values decode to the same rates.
    assert decode_cnf(16000000, 0x00, 0xF0, 0x86)["bitrate"] == 500000
    assert decode_cnf(16000000, 0x41, 0xF1, 0x85)["bitrate"] == 250000
    assert decode_cnf(8000000, 0x00, 0x90, 0x82)["bitrate"] == 500000
    assert decode_cnf(8000000, 0x01, 0xB1, 0x85)["bitrate"] == 125000
    # 1 Mbit/s at 8 MHz would need 4 TQ per bit: impossible.
    assert raises(ValueError, bit_timing, 8000000, 1000000)


def _node(bus, **kw):
    emu, drv = pair(bus, **kw)
    drv.init()
    return emu, drv


def test_init_raw_spi_bytes():
    emu, drv = pair(xtal_hz=16000000, bitrate=500000)
    emu.spi_log = []
    drv.init()
    log = emu.spi_log
    assert log[0][0] == b"\xc0"                        # RESET
    assert log[1][0][:2] == b"\x03\x0e" and log[1][1][2] == 0x80  # CANSTAT: config mode
    # WRITE from CNF3 (0x28): CNF3, CNF2, CNF1, CANINTE (RX0IE|RX1IE|ERRIE|MERRE)
    assert log[2][0] == bytes([0x02, 0x28, 0x01, 0xAE, 0x00, 0xA3])
    # Normal mode requested with BIT MODIFY on CANCTRL (REQOP = 000)
    assert bytes([0x05, 0x0F, 0xE8, 0x00]) in [m for m, _ in log]
    assert emu.mode == 0


def test_send_load_tx_bytes_std_and_ext():
    bus = VirtualCanBus()
    BusNode(bus)  # someone to ACK
    emu, drv = _node(bus)
    emu.spi_log = []
    assert drv.send(0x123, b"\x01\x02")
    mosi = [m for m, _ in emu.spi_log]
    assert mosi[0][0] == 0xA0                          # READ STATUS
    # LOAD TX BUFFER 0 at SIDH: SID10:3, SID2:0<<5, EID8, EID0, DLC, data
    assert mosi[1] == bytes([0x40, 0x123 >> 3, (0x123 & 7) << 5, 0, 0, 2, 1, 2])
    assert mosi[2] == bytes([0x02, 0x30, 0x08 | 3])    # TXREQ, TXP=3 (fifo head)
    bus.step()
    emu.spi_log = []
    can_id = 0x18FF50E5
    assert drv.send(can_id, b"\xaa", ext=True)
    sid = can_id >> 18
    want = bytes([0x40, sid >> 3, ((sid & 7) << 5) | 0x08 | ((can_id >> 16) & 3),
                  (can_id >> 8) & 0xFF, can_id & 0xFF, 1, 0xAA])
    assert [m for m, _ in emu.spi_log][1] == want
    assert raises(ValueError, drv.send, 0x800, b"")
    assert raises(ValueError, drv.send, 1, b"123456789")


def test_two_controllers_exchange_frames():
    bus = VirtualCanBus()
    ea, a = _node(bus)
    eb, b = _node(bus)
    buf = bytearray(8)
    assert b.recv(buf) == -1
    assert a.send(0x321, b"\x10\x20\x30")
    assert a.send(0x1ABCDEF0 & 0x1FFFFFFF, b"", ext=True)
    bus.step()
    assert b.recv(buf) == 3 and b.rx_id == 0x321 and not b.rx_ext
    assert bytes(buf[:3]) == b"\x10\x20\x30"
    assert b.recv(buf) == 0 and b.rx_id == 0x1ABCDEF0 and b.rx_ext
    assert b.recv(buf) == -1
    assert a.tx_count == 2 and ea.tx_frames == 2 and eb.rx_frames == 2


def test_frame_counters_wrap_as_small_ints():
    # Months of frames pass 2**30: beyond it every count would allocate a
    # long int on the RP2040 (31-bit small ints), so the counters wrap there.
    bus = VirtualCanBus()
    ea, a = _node(bus)
    eb, b = _node(bus)
    buf = bytearray(8)
    a.tx_count = b.rx_count = 0x3FFFFFFF
    for _ in range(2):
        assert a.send(0x321, b"\x01")
        bus.step()
        assert b.recv(buf) == 1
    assert a.tx_count == 1 and b.rx_count == 1


def test_filters_masks_and_rollover_order():
    bus = VirtualCanBus()
    peer = BusNode(bus)
    emu, drv = _node(bus)
    drv.set_filters([(0x100, 0x7F0, False), (0x200, 0x7FF, False)])
    for cid in (0x105, 0x300, 0x200, 0x10F, 0x201):
        peer.send(cid, bytes([cid & 0xFF]))
    bus.step()
    buf = bytearray(8)
    got = []
    while True:
        n = drv.recv(buf)
        if n < 0:
            break
        got.append(drv.rx_id)
    # The bus sends in id order: 0x105 -> RXB0 (RXF0), 0x10F -> RXB1 by
    # rollover, 0x200 (RXF2, mask 2) finds RXB1 full -> overflow; 0x201 and
    # 0x300 match no filter.
    assert got == [0x105, 0x10F]
    assert drv.rx_overflow >= 1
    # Extended filter on the second mask group.
    drv.set_filters([(0x100, 0x700, False), (0x18FF0000, 0x1FFF0000, True)])
    peer.send(0x18FF1234, b"x", ext=True)
    peer.send(0x18FE1234, b"y", ext=True)
    peer.send(0x1FF, b"z")
    bus.step()
    got = []
    while drv.recv(buf) >= 0:
        got.append((drv.rx_id, drv.rx_ext))
    assert got == [(0x1FF, False), (0x18FF1234, True)] or \
        got == [(0x18FF1234, True), (0x1FF, False)]
    assert raises(ValueError, drv.set_filters,
                  [(1, 0x7FF, False), (2, 0x7F0, False), (3, 0x700, False)])


def test_rollover_keeps_arrival_order():
    bus = VirtualCanBus()
    peer = BusNode(bus)
    emu, drv = _node(bus)
    buf = bytearray(8)
    peer.send(0x10, b"1")
    peer.send(0x11, b"2")
    bus.step()            # RXB0 = 0x10, RXB1 = 0x11 (rollover)
    assert drv.recv(buf) >= 0 and drv.rx_id == 0x10
    peer.send(0x12, b"3")
    bus.step()            # RXB0 = 0x12, newer than RXB1
    order = []
    while drv.recv(buf) >= 0:
        order.append(drv.rx_id)
    assert order == [0x11, 0x12]


def test_tx_fifo_order_and_priority():
    bus = VirtualCanBus()
    BusNode(bus)
    emu, drv = _node(bus)
    for cid in (0x300, 0x200, 0x100):
        assert drv.send(cid, b"")
    assert not drv.send(0x050, b"")      # three buffers busy
    bus.step()
    assert [f[0] for f in bus.log] == [0x300, 0x200, 0x100]   # FIFO kept
    bus.log = []
    emu2, drv2 = _node(bus, fifo=False)
    assert drv2.send(0x300, b"", prio=0)  # goes on the wire at once
    assert drv2.send(0x200, b"", prio=1)
    assert drv2.send(0x100, b"", prio=3)
    bus.step()
    assert [f[0] for f in bus.log] == [0x300, 0x100, 0x200]   # TXP order


def test_error_counters_passive_bus_off_and_restart():
    bus = VirtualCanBus()
    emu, drv = _node(bus)
    emu.recovery_ticks = 1000
    assert drv.state() == STATE_ERROR_ACTIVE and drv.tec == 0
    # Alone on the bus nobody ACKs: TEC +8 per attempt up to error passive
    # (128), then the ACK-error exception keeps it there: never bus-off.
    drv.send(0x10, b"a")
    bus.step()
    assert drv.state() == STATE_ERROR_PASSIVE and drv.tec == 128
    peer = BusNode(bus)
    bus.step()  # the retransmission is ACKed: delivered, TEC - 1
    assert len(peer.inbox) == 1 and drv.state() == STATE_ERROR_WARNING and drv.tec == 127
    # Bit errors on every attempt: 127 + 17 x 8 = 263 > 255 -> bus-off.
    bus.errors = 100
    drv.send(0x11, b"b")
    bus.step()
    assert bus.errors == 100 - 17
    assert drv.state() == STATE_BUS_OFF and drv.bus_off_count == 1
    assert not emu.can_ack()
    bus.errors = 0
    drv.restart()
    assert drv.state() == STATE_ERROR_ACTIVE and drv.tec == 0 and drv.rec == 0
    assert drv.send(0x12, b"c")
    bus.step()
    assert peer.inbox[-1][0] == 0x12


def test_warning_level_and_auto_recovery():
    bus = VirtualCanBus()
    peer = BusNode(bus)
    emu, drv = _node(bus)
    bus.errors = 13  # 13 x 8 = 104, then one success: 103 >= 96 -> warning
    drv.send(0x20, b"")
    bus.step()
    assert drv.state() == STATE_ERROR_WARNING and drv.tec == 103
    bus.errors = 20  # 103 + 20 x 8 = 263 -> bus-off on the 20th error
    drv.send(0x21, b"")
    bus.step()
    assert bus.errors == 0 and drv.state() == STATE_BUS_OFF
    bus.step()  # second idle step: recovery_ticks (2) reached
    assert drv.state() == STATE_ERROR_ACTIVE and drv.tec == 0
    bus.step()  # the pending frame goes out after recovery
    assert peer.inbox[-1][0] == 0x21 and drv.bus_off_count == 1


def test_absent_chip_and_brownout_raise_oserror():
    emu, drv = pair(retry_limit=2)
    emu.dead = True
    emu.spi_log = []
    assert raises(OSError, drv.init)
    assert sum(1 for m, _ in emu.spi_log if m == b"\xc0") == 3  # bounded retries
    emu.dead = False
    drv.init()
    assert drv.state() == STATE_ERROR_ACTIVE
    emu._reset()  # brown-out: the chip is back in configuration mode, deaf
    assert raises(OSError, drv.state)
    drv.restart()
    assert drv.state() == STATE_ERROR_ACTIVE


def test_bus_guard_restarts_a_controller_that_stopped_answering_or_browned_out():
    # Rule (docs/can_internal.md, bus-off recovery): a controller that cannot
    # talk is restarted with back-off, doubling while it stays down; a chip
    # dead at boot or reset by a brown-out is such a controller.
    from comms.can_guard import BusGuard
    bus = VirtualCanBus(500000)
    emu, drv = pair(bus, retry_limit=0)
    peer = BusNode(bus)
    emu.dead = True
    assert raises(OSError, drv.init)
    # Filters set while it does not answer are kept for its next init.
    assert raises(OSError, drv.set_filters, [(0x100, 0x700, False)])
    assert drv.filters == [(0x100, 0x700, False)]
    g = BusGuard(drv)
    tries = []
    now = 0
    while now < 3000:
        r0 = g.restarts
        assert not g.step(now)
        if g.restarts != r0:
            tries.append(now)
        now += 10
    assert g.dead_count >= 1
    assert tries[:4] == [100, 300, 700, 1500]           # 100, 200, 400, 800 ms apart
    emu.dead = False
    while not g.step(now):
        now += 10
    assert now - tries[-1] <= 1600 + 10 and drv.state() == STATE_ERROR_ACTIVE
    assert emu.mode == 0                                 # normal mode, configured
    # The stored filter is programmed: an id outside it is not received.
    buf = bytearray(8)
    peer.send(0x200, b"\x01")
    bus.step()
    peer.send(0x123, b"\x02")
    bus.step()
    got = []
    while True:
        if drv.recv(buf) < 0:
            break
        got.append(drv.rx_id)
    assert got == [0x123], got
    # A brown-out after 10 s of stable operation: restarted after the
    # shortest back-off again.
    t0 = now
    while now - t0 < 10100:
        assert g.step(now)
        now += 10
    emu._reset()
    n = g.restarts
    t0 = now
    up = False
    while not up:
        up = g.step(now) and g.restarts > n
        now += 10
        assert now - t0 <= 100 + 2 * 100 + 10       # READ_MS + 100 ms back-off
    assert drv.state() == STATE_ERROR_ACTIVE


def test_loopback_mode():
    emu, drv = pair(mode=2)
    drv.init()
    buf = bytearray(8)
    assert drv.send(0x7FF, b"\x55\xaa")
    assert drv.recv(buf) == 2 and drv.rx_id == 0x7FF and buf[1] == 0xAA


class _ConstSpi:
    """MISO always returns one byte value; never allocates."""

    def __init__(self, v):
        self.v = v

    def write(self, buf):
        pass

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = self.v

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(rbuf)):
            rbuf[i] = self.v


class _Pin:
    def value(self, v=None):
        return 1


def test_send_and_recv_do_not_allocate():
    spi = _ConstSpi(0x00)
    drv = MCP2515(spi, _Pin())
    data = b"\x01\x02\x03\x04"
    buf = bytearray(8)

    def tx():
        return drv.send(0x123, data)

    assert heap_locked(tx)
    spi.v = 0x40  # RX STATUS: message in RXB0; frame bytes all 0x40
    drv.fifo = False

    def rx():
        return drv.recv(buf)

    assert heap_locked(rx) == 0  # DLC 0x40 & 0x0F = 0


def test_first_access_waits_for_the_oscillator_start_up_timer():
    # DS20001801 section 8.1: the oscillator start-up timer holds the chip in
    # reset for 128 OSC1 cycles (128 us at the slowest 1 MHz clock); an SPI
    # access before that is lost.  The driver waits 128 us after RESET.
    clk = UsClock()
    emu = EmuMCP2515(clock=clk, osc_hz=1000000)
    hasty = MCP2515(emu.spi, emu.cs, retry_limit=1)   # no wait_us: back to back
    assert raises(OSError, hasty.init)
    assert emu.ignored_frames >= 2
    clk = UsClock()
    emu = EmuMCP2515(clock=clk, osc_hz=1000000)
    drv = MCP2515(emu.spi, emu.cs, wait_us=clk.sleep_us, retry_limit=0)
    drv.init()
    assert emu.ignored_frames == 0 and clk.slept_us >= 128
    assert drv.state() == STATE_ERROR_ACTIVE


class _IntPin:
    """The chip's INT output as the board reads it (low: an enabled flag set)."""

    def __init__(self, emu):
        self.emu = emu
        self.cut = False    # a broken wire: the pull-up keeps it high

    def value(self, v=None):
        return 1 if self.cut or not self.emu.int_active() else 0


def _int_pair(bus):
    emu, drv = _node(bus)
    pin = _IntPin(emu)
    drv.int_pin = pin
    return emu, drv, pin


def test_rx_pending_follows_the_int_pin_and_reads_each_frame_status_once():
    bus = VirtualCanBus()
    ea, a = _node(bus)
    eb, b, pin = _int_pair(bus)
    buf = bytearray(8)
    eb.spi_log = []
    assert not b.rx_pending()
    assert eb.spi_log == []         # INT high: a pin read, no SPI
    a.send(0x101, b"\x01")
    a.send(0x102, b"\x02")
    bus.step()
    got = []
    eb.spi_log = []
    while b.rx_pending():
        n = b.recv(buf)
        if n < 0:
            break
        got.append((b.rx_id, buf[0]))
    assert got == [(0x101, 1), (0x102, 2)]
    # One RX STATUS and one READ RX BUFFER per frame; with both buffers
    # full, the overflow flags are read once as well (READ CANINTF, EFLG).
    firsts = [t[0][0] for t in eb.spi_log]
    assert firsts.count(0xB0) == 2, eb.spi_log
    assert firsts.count(0x90) + firsts.count(0x94) == 2, eb.spi_log
    assert [t[0][:2] for t in eb.spi_log if t[0][0] == 0x03] == [bytes([0x03, 0x2C])], eb.spi_log


def test_rx_pending_checks_a_high_int_pin_over_spi_and_stops_trusting_a_broken_one():
    bus = VirtualCanBus()
    ea, a = _node(bus)
    eb, b, pin = _int_pair(bus)
    pin.cut = True
    a.send(0x55, b"\x07")
    bus.step()
    # A frame waits but the pin reads high: found by the periodic SPI check.
    seen = 0
    for _ in range(64):
        if b.rx_pending():
            seen += 1
    assert seen == 1 and b.int_misses == 1
    buf = bytearray(8)
    assert b.recv(buf) == 1 and b.rx_id == 0x55
    for k in range(2):
        a.send(0x56 + k, b"\x08")
        bus.step()
        n = 0
        while not b.rx_pending():
            n += 1
            assert n <= 64
        assert b.recv(buf) == 1
    assert b.int_misses == 3 and b.int_pin is None
    # Without the pin every call asks the chip: no frame is missed.
    a.send(0x60, b"\x09")
    bus.step()
    assert b.rx_pending() and b.recv(buf) == 1 and b.rx_id == 0x60
    assert not b.rx_pending()
