"""The display's side for the upy tests: a UART-like fake port and frame
builders/decoders written from docs/display_protocol.md and the JBD protocol
text, independently of the firmware.  MicroPython-compatible.
"""
from ble_peer import ref_crc


class Port:
    def __init__(self):
        self.inbox = bytearray()
        self.out = bytearray()

    def feed(self, data):
        self.inbox += data

    def any(self):
        return len(self.inbox)

    def readinto(self, buf):
        n = min(len(buf), len(self.inbox))
        if not n:
            return None
        for i in range(n):
            buf[i] = self.inbox[i]
        self.inbox = self.inbox[n:]
        return n

    def write(self, buf):
        self.out += bytes(buf)
        return len(buf)

    def flush(self):
        pass

    def take(self):
        o = bytes(self.out)
        self.out = bytearray()
        return o


def frame(cmd, payload=b""):
    body = bytes([len(payload), cmd]) + bytes(payload)
    c = ref_crc(body)
    return b"\xa5\x5a" + body + bytes([c & 0xFF, c >> 8])


def parse(data):
    assert data[0] == 0xA5 and data[1] == 0x5A
    n = data[2]
    assert len(data) == 6 + n
    c = ref_crc(data[2:4 + n])
    assert data[4 + n] == c & 0xFF and data[5 + n] == c >> 8
    return data[3], data[4:4 + n]


def le(data, pos, size, signed=False):
    v = 0
    for i in range(size):
        v |= data[pos + i] << (8 * i)
    if signed and v & (1 << (8 * size - 1)):
        v -= 1 << (8 * size)
    return v


def jbd_request(cmd):
    s = cmd  # cmd + length 0
    c = (0x10000 - s) & 0xFFFF
    return bytes([0xDD, 0xA5, cmd, 0x00, c >> 8, c & 0xFF, 0x77])


def jbd_parse(data):
    """(cmd, status, payload) of a JBD answer; checks start, checksum, stop."""
    assert data[0] == 0xDD and data[-1] == 0x77
    n = data[3]
    assert len(data) == 7 + n
    s = 0
    for b in data[2:4 + n]:
        s += b
    assert (data[4 + n] << 8 | data[5 + n]) == (0x10000 - s) & 0xFFFF
    return data[1], data[2], data[4:4 + n]


def be(data, pos, signed=False):
    v = (data[pos] << 8) | data[pos + 1]
    if signed and v & 0x8000:
        v -= 0x10000
    return v
