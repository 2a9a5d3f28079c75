"""A tiny power-safe key/value store for ``bms.auth`` (password records, back-off count).

``Auth`` wants ``store.get(key)`` and ``store[key] = value`` with bytes or
int values.  The whole table lives in one A/B record (``bms.store.ABRecord``,
kind ``_KIND_KV``), so a power cut while it is written leaves the previous
table.  Writes happen only when a value really changes (a password change,
a wrong-password count), which the auth back-off keeps rare.  With ``hold``
set (the board's wiring, when services run) a change waits in RAM for
``flush()``, which ``bms.services`` calls right after a fast tick: a flash
erase stalls the RP2040 for ~45 ms, and a request handler (a wrong password
from an unauthenticated Bluetooth peer) must not put one anywhere in a cycle.

Payload: per item ``u8 key length | key | u8 type (0 int i32, 1 bytes) |
u16 length | value``, little-endian.
"""
import struct

from micropython import const

from bms.store import ABRecord

_KIND_KV = const(4)
_KV_FMT = const(1)
_T_INT = const(0)
_T_BYTES = const(1)


def encode(items):
    out = bytearray()
    for k in sorted(items):
        v = items[k]
        kb = k.encode()
        if isinstance(v, int):
            data, t = struct.pack("<i", v), _T_INT
        else:
            data, t = bytes(v), _T_BYTES
        out += struct.pack("<B", len(kb)) + kb + struct.pack("<BH", t, len(data)) + data
    return bytes(out)


def decode(payload):
    items = {}
    i = 0
    n = len(payload)
    while i < n:
        kl = payload[i]
        k = bytes(payload[i + 1:i + 1 + kl]).decode()
        i += 1 + kl
        t, ln = struct.unpack("<BH", payload[i:i + 3])
        i += 3
        data = bytes(payload[i:i + ln])
        if len(data) != ln:
            raise ValueError("kv truncated")
        i += ln
        items[k] = struct.unpack("<i", data)[0] if t == _T_INT else data
    return items


class KvStore:
    def __init__(self, fs, base="/data/kv"):
        self.rec = ABRecord(fs, base, _KIND_KV, (_KV_FMT,))
        self.items = {}
        self.errors = 0
        self.hold = False    # True: changes wait for flush() (see above)
        self.dirty = False
        r = self.rec.load()
        if r is not None:
            try:
                self.items = decode(r[1])
            except (ValueError, UnicodeError, IndexError):
                self.items = {}

    def get(self, key, default=None):
        return self.items.get(key, default)

    def __getitem__(self, key):
        return self.items[key]

    def __setitem__(self, key, value):
        if self.items.get(key) == value:
            return
        self.items[key] = value
        self.dirty = True
        if not self.hold:
            self.flush()

    def flush(self):
        """Write the table if a value changed since the last write."""
        if not self.dirty:
            return
        # Not retried at every call: a failing flash would be hit at every
        # poll.  Kept in RAM; saved with the next change.
        self.dirty = False
        try:
            self.rec.save(_KV_FMT, encode(self.items))
        except OSError:
            self.errors += 1
