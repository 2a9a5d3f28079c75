"""CRC-32 and HMAC-SHA256 for the store, the event log, updates and leases.

MicroPython has ``hashlib.sha256`` but no ``hmac`` module and no
``sha256().copy()``, so HMAC (RFC 2104) is built here from two hashes.
``binascii.crc32`` exists on rp2/esp32/unix builds (EXTRA_FEATURES); a
table-free bitwise fallback keeps ports without it working (slow, but only
used on small records).
"""
import hashlib

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports built without it
    _crc32 = None

_BLOCK = 64


def crc32(data, crc=0):
    """IEEE CRC-32 (zlib/binascii compatible), chainable like binascii.crc32."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return ~crc & 0xFFFFFFFF


def sha256(data=b""):
    return hashlib.sha256(data)


def hmac_sha256(key, msg):
    """HMAC-SHA256(key, msg) -> 32 bytes (RFC 2104)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    k = bytearray(_BLOCK)
    k[:len(key)] = key
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        ipad[i] = k[i] ^ 0x36
        opad[i] = k[i] ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Compare secrets in time independent of where they differ."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0
