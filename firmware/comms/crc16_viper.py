"""The CRC-16/MODBUS loop as viper code, for ``comms.crc16`` on MicroPython.

Apart from ``comms.crc16`` because it is native code: a ``.mpy`` of it loads
only on the architecture it was compiled for, and ``comms.crc16`` falls back
to its bytecode loop when it does not load (a ROMFS image of armv6m ``.mpy``
files run by the unix port, a port without viper).  ``TABLE`` is set by
``comms.crc16`` before the first call.
"""
import micropython

TABLE = None


@micropython.viper
def crc_loop(buf, start: int, end: int, crc: int) -> int:
    # Raw pointers: the caller checks the range.
    p = ptr8(buf)         # noqa: F821 - viper's buffer cast
    t = ptr16(TABLE)      # noqa: F821
    c = crc
    i = start
    while i < end:
        c = (c >> 8) ^ t[(c ^ p[i]) & 0xFF]
        i += 1
    return c
