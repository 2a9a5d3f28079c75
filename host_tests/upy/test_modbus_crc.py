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
