"""16-bit field packing shared by every protocol (allocation-free).

Modbus, the display-port frames of the Elcon charger and JBD are big-endian;
CAN (internal, Pylontech) and the display protocol are little-endian.  A
negative ``v`` is stored as two's complement.
"""


def put16be(buf, pos, v):
    buf[pos] = (v >> 8) & 0xFF
    buf[pos + 1] = v & 0xFF


def get16be(buf, pos):
    return (buf[pos] << 8) | buf[pos + 1]


def put16le(buf, pos, v):
    buf[pos] = v & 0xFF
    buf[pos + 1] = (v >> 8) & 0xFF
