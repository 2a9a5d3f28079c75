"""Modbus CRC-16 (polynomial 0xA001 reflected, i.e. 0x8005; initial value 0xFFFF).

Table-driven: the 256-entry table is built once at import into an
``array('H')`` (512 bytes), so computing a CRC over a frame allocates
nothing.  The CRC goes on the wire low byte first.

On MicroPython the loop is viper code (``comms.crc16_viper``: machine
words, the buffer and the table read through raw pointers): on the emulated
RP2040 the bytecode loop took 12 us a byte, 3 ms for a 125-register Modbus
reply and about a quarter of every reply's build time; the viper loop takes
under 2 us a byte.  The bytecode loop stays for CPython (the host tests and
tools) and wherever the native code does not load; the unix-port tests check
that both give the same CRC (host_tests/upy/test_modbus_crc.py).
"""
import sys
from array import array

from micropython import const

_POLY = const(0xA001)
_INIT = const(0xFFFF)


def _make_table():
    t = array("H", [0] * 256)
    for i in range(256):
        c = i
        for _ in range(8):
            if c & 1:
                c = (c >> 1) ^ _POLY
            else:
                c >>= 1
        t[i] = c
    return t


TABLE = _make_table()


def crc16_bytecode(buf, start=0, end=-1, crc=_INIT):
    """CRC of ``buf[start:end]`` (``end=-1``: to the end) without slicing."""
    if end < 0:
        end = len(buf)
    if start < 0 or end > len(buf) or start > end:
        raise IndexError("crc range")
    t = TABLE
    for i in range(start, end):
        crc = (crc >> 8) ^ t[(crc ^ buf[i]) & 0xFF]
    return crc


def crc16_viper(buf, start=0, end=-1, crc=_INIT):
    """CRC of ``buf[start:end]`` (``end=-1``: to the end) without slicing."""
    if end < 0:
        end = len(buf)
    if start < 0 or end > len(buf) or start > end:
        raise IndexError("crc range")   # raw pointers: no bounds check there
    return _loop(buf, start, end, crc)


crc16 = crc16_bytecode
_loop = None
if sys.implementation.name == "micropython":
    try:
        from comms import crc16_viper as _v
        _v.TABLE = TABLE
        _loop = _v.crc_loop
        crc16 = crc16_viper
    except (ImportError, ValueError):   # no viper, or native code of another arch
        pass


def check(buf, n):
    """True if the last two of the first ``n`` bytes are the CRC of the rest."""
    if n < 3:
        return False
    c = crc16(buf, 0, n - 2)
    return buf[n - 2] == (c & 0xFF) and buf[n - 1] == (c >> 8)


def append(buf, n):
    """Write the CRC of ``buf[:n]`` at ``buf[n]``, ``buf[n+1]``; returns ``n + 2``."""
    c = crc16(buf, 0, n)
    buf[n] = c & 0xFF
    buf[n + 1] = c >> 8
    return n + 2
