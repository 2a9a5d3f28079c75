"""Modbus exception codes, the roles a write needs, and the refusals every
block shares (one small module: the server, the map and each block use it)."""
from micropython import const

from bms.auth import ROLE_FACTORY, ROLE_USER  # noqa: F401  (the roles a block checks)

EX_NONE = const(0)
EX_FUNCTION = const(1)
EX_ADDRESS = const(2)
EX_VALUE = const(3)
EX_FAILURE = const(4)
EX_BUSY = const(6)

LOCKED = "locked: unlock with the password first"


def read_only(rm, off, count, data, pos):
    """``write`` of a read-only block."""
    return rm.refuse(EX_ADDRESS, -1, "read-only block")


def ascii_of(data, pos, count):
    """The ASCII text of ``count`` registers at ``data[pos:]``, up to the
    first NUL (allocates; writes only)."""
    raw = bytes(data[pos:pos + 2 * count])
    n = raw.find(b"\0")
    return raw if n < 0 else raw[:n]


def printable(text):
    """True if every byte of ``text`` is printable ASCII (32..126): what a
    text field stores, so that every later decode of it succeeds."""
    for ch in text:
        if ch < 32 or ch > 126:
            return False
    return True
