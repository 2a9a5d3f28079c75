"""The simulated CAN bus: bit timing, arbitration, buffers, errors, unplugging."""
import random

from tools.sim.canbus import (STATE_BUS_OFF, STATE_ERROR_ACTIVE, STATE_ERROR_PASSIVE, SimCanNode,
                              VirtualCanBus, frame_bits)


def _crc15_ref(bits):
    # Shift-register form from ISO 11898-1 (independent of the bus module's loop).
    reg = [0] * 15
    for b in bits:
        nxt = b ^ reg[0]
        reg = reg[1:] + [0]
        if nxt:
            for i, t in enumerate((1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1)):
                reg[i] ^= t
    return reg


def test_frame_bit_counts():
    rng = random.Random(3)
    counts = [frame_bits(rng.randrange(0x800), bytes(rng.randrange(256) for _ in range(8)))
              for _ in range(500)]
    # 111 bits without stuffing, at most 135 with worst-case stuffing
    assert min(counts) >= 111 and max(counts) <= 135
    assert frame_bits(0x000, bytes(8)) > 125       # long runs of zeros stuff a lot
    assert frame_bits(0x7FF, b"", False) >= 47     # empty frame: 47 bits + stuffing
    assert frame_bits(0x1ABCDEF, bytes(8), True) > frame_bits(0x1AB, bytes(8), False)


def test_crc_polynomial_matches_reference():
    from tools.sim.canbus import _crc15
    rng = random.Random(9)
    for _ in range(50):
        bits = [rng.randrange(2) for _ in range(rng.randrange(20, 100))]
        ref = int("".join(str(b) for b in _crc15_ref(bits)), 2)
        assert _crc15(bits) == ref


def _bus(n=3, **kw):
    bus = VirtualCanBus(250000)
    nodes = [bus.attach(SimCanNode("n%d" % i, **kw)) for i in range(n)]
    return bus, nodes


def test_arbitration_lowest_id_first_and_timing():
    bus, (a, b, c) = _bus(rx_depth=10)
    a.send(0x300, bytes(8))
    b.send(0x100, bytes(8))
    a.send(0x050, bytes(2))   # a's second buffer; lower id than b's
    got = []
    bus.sniffers.append(lambda t, i, d, e: got.append((t, i)))
    bus.advance_to(10000)
    assert [i for _, i in got] == [0x050, 0x100, 0x300]
    t_first = frame_bits(0x050, bytes(2)) * 4.0   # 4 us per bit at 250 kbit/s
    assert abs(got[0][0] - t_first) < 1e-6
    assert abs(got[1][0] - got[0][0] - frame_bits(0x100, bytes(8)) * 4.0) < 1e-6
    buf = bytearray(8)
    assert c.recv(buf) == 2 and c.rx_id == 0x050
    assert c.recv(buf) == 8 and c.rx_id == 0x100
    assert c.recv(buf) == 8 and c.rx_id == 0x300
    assert c.recv(buf) == -1


def test_buffers_filters_and_overflow():
    bus, (a, b) = _bus(2, rx_depth=2)
    assert a.send(1, b"\x01") and a.send(2, b"\x02") and a.send(3, b"\x03")
    assert not a.send(4, b"\x04")   # three TX buffers, like the MCP2515
    bus.advance_to(5000)
    assert b.rx_overflow == 1        # two RX buffers, nobody read
    b.set_filters([(0x010, 0x7F0, False)])
    buf = bytearray(8)
    while b.recv(buf) >= 0:
        pass
    a.send(0x015, b"")
    a.send(0x025, b"")
    bus.advance_to(10000)
    assert b.recv(buf) == 0 and b.rx_id == 0x015 and b.recv(buf) == -1


def test_error_injection_to_bus_off_and_restart():
    bus, (a, b) = _bus(2)
    bus.inject_errors(32, node=a)
    a.send(0x123, bytes(8))
    bus.advance_to(100000)
    assert a.state() == STATE_BUS_OFF and a.tec >= 256
    assert b.rec > 0 and bus.error_frames == 32 and bus.frames == 0
    assert not a.send(0x123, bytes(8))
    a.restart()
    assert a.state() == STATE_ERROR_ACTIVE
    assert a.send(0x123, bytes(8))
    bus.advance_to(200000)
    buf = bytearray(8)
    assert b.recv(buf) == 8


def test_retransmission_after_an_error():
    bus, (a, b) = _bus(2)
    bus.inject_errors(1)
    a.send(0x10, b"\xAA")
    bus.advance_to(5000)
    buf = bytearray(8)
    assert b.recv(buf) == 1 and buf[0] == 0xAA and a.tec == 7   # +8, then -1
    assert bus.error_frames == 1


def test_unplugged_node_goes_error_passive_and_is_heard_again():
    bus, (a, b) = _bus(2)
    bus.unplug(a)
    a.send(0x100, b"\x01")
    bus.advance_to(5000)
    buf = bytearray(8)
    assert b.recv(buf) == -1
    assert a.state() == STATE_ERROR_PASSIVE
    b.send(0x200, b"")
    bus.advance_to(10000)
    assert a.recv(buf) == -1     # hears nothing either
    bus.plug(a)
    bus.advance_to(15000)
    assert b.recv(buf) == 1 and b.rx_id == 0x100
