"""CRC-16/MODBUS against vectors typed in from the spec and well-known frames."""
from comms import crc16
from modbus_rig import ref_crc


def test_spec_vectors():
    # Read holding registers 0..9 of device 1: CRC 0xCDC5, sent low byte first: C5 CD.
    assert crc16.crc16(bytes((0x01, 0x03, 0x00, 0x00, 0x00, 0x0A))) == 0xCDC5
    # Modbus over serial line spec, 6.2.2 example: frame 02 07 -> CRC 0x1241 (41 12 on the wire).
    assert crc16.crc16(bytes((0x02, 0x07))) == 0x1241
    # Frames quoted in many device manuals.
    assert crc16.crc16(bytes((0x01, 0x04, 0x00, 0x00, 0x00, 0x01))) == 0xCA31
    assert crc16.crc16(bytes((0x01, 0x06, 0x00, 0x01, 0x00, 0x03))) == 0x0B98
    # CRC-16/MODBUS catalogue check value ("123456789").
    assert crc16.crc16(b"123456789") == 0x4B37


def test_wire_order_and_check():
    buf = bytearray(8)
    for i, b in enumerate((0x01, 0x03, 0x00, 0x00, 0x00, 0x0A)):
        buf[i] = b
    assert crc16.append(buf, 6) == 8
    assert bytes(buf[6:8]) == bytes((0xC5, 0xCD))
    assert crc16.check(buf, 8)
    buf[3] ^= 1
    assert not crc16.check(buf, 8)
    assert not crc16.check(buf, 2)


def test_table_matches_bitwise_reference():
    seed = 12345
    data = bytearray(200)
    for n in range(0, 200, 7):
        for i in range(n):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            data[i] = (seed >> 16) & 0xFF
        assert crc16.crc16(data, 0, n) == ref_crc(data[:n])


def test_range_without_slicing():
    data = b"xx\x01\x03\x00\x00\x00\x0Ayy"
    assert crc16.crc16(data, 2, 8) == 0xCDC5


def test_fast_loop_matches_bytecode_loop():
    # On MicroPython crc16 is the viper loop; the bytecode loop is the
    # reference kept for CPython.  Every length, offset and start value.
    import sys
    if sys.implementation.name == "micropython":
        assert crc16.crc16 is crc16.crc16_viper   # the unix port has viper (x64)
    seed = 777
    data = bytearray(300)
    for i in range(300):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        data[i] = (seed >> 16) & 0xFF
    for start in (0, 1, 5):
        for n in (0, 1, 2, 7, 8, 64, 255, 295):
            for init in (0xFFFF, 0x0000, 0x1234):
                assert crc16.crc16(data, start, start + n, init) == \
                    crc16.crc16_bytecode(data, start, start + n, init)
    mv = memoryview(data)[3:40]
    assert crc16.crc16(mv) == crc16.crc16_bytecode(mv)
    assert crc16.crc16(bytes(data[:9]), 0, 9) == ref_crc(data[:9])


def test_range_outside_the_buffer_is_refused():
    # The fast loop reads through a raw pointer: a range past the end must
    # raise, not read beyond the buffer.
    data = bytearray(8)
    for bad in ((0, 9), (-1, 4), (5, 4)):
        try:
            crc16.crc16(data, bad[0], bad[1])
        except IndexError:
            continue
        raise AssertionError("range %r accepted" % (bad,))
