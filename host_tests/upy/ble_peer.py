"""The central's side of the BLE framing, written from the protocol text
(``comms/ble_link.py`` docstring) independently of the firmware: its own
bitwise CRC-16/Modbus, its own chunker and reassembler.  MicroPython-compatible.
"""
from bms.auth import Auth
from modbus_rig import ref_crc  # the spec's bitwise CRC, not the firmware's table


def make_auth(clock, store=None):
    """A fast Auth (few hash iterations, fixed salt); user password 123456."""
    return Auth(clock, store if store is not None else {}, factory_password=b"factory1",
                rng=lambda n: b"\x01" * n, iterations=4)


def answer(chal, pw):
    """The central's answer to a challenge (docs/modbus.md, auth block): per
    record (factory, user) the iterated salted SHA-256 of the password with
    that record's salt, then HMAC-SHA256(digest, nonce); 64 bytes as 32 words."""
    import hashlib

    def hmac(key, msg):
        key = key + bytes(64 - len(key))
        inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]) + msg).digest()
        return hashlib.sha256(bytes([b ^ 0x5C for b in key]) + inner).digest()
    nonce = chal[:16]
    out = b""
    pos = 16
    for _ in range(2):
        salt = chal[pos:pos + 8]
        it = (chal[pos + 8] << 8) | chal[pos + 9]
        pos += 10
        if not it:
            out += bytes(32)
            continue
        h = hashlib.sha256(salt + pw).digest()
        for _k in range(it - 1):
            h = hashlib.sha256(h + salt).digest()
        out += hmac(h, nonce)
    return [(out[2 * k] << 8) | out[2 * k + 1] for k in range(32)]


def message(typ, payload):
    body = bytes([typ, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    c = ref_crc(body)
    return body + bytes([c & 0xFF, c >> 8])


def chunks(seq, msg, mtu=23):
    size = mtu - 3 - 2
    out = []
    pos = 0
    idx = 0
    while pos < len(msg):
        part = msg[pos:pos + size]
        f = idx & 0x3F
        if pos == 0:
            f |= 0x80
        if pos + len(part) >= len(msg):
            f |= 0x40
        out.append(bytes([seq, f]) + part)
        pos += len(part)
        idx += 1
    return out


def drain(link, mtu=23):
    """Every chunk the link has queued, as the radio would notify them."""
    buf = bytearray(mtu - 3)
    out = []
    while True:
        n = link.next_chunk(buf)
        if not n:
            return out
        assert n <= mtu - 3
        out.append(bytes(buf[:n]))


def reassemble(chunk_list):
    """Messages (seq, type, payload) from notified chunks; checks every rule."""
    msgs = []
    cur = None
    seq = None
    idx = 0
    for c in chunk_list:
        f = c[1]
        if f & 0x80:
            assert cur is None, "START inside a message"
            assert f & 0x3F == 0
            cur = bytearray()
            seq = c[0]
            idx = 0
        else:
            assert cur is not None and c[0] == seq and f & 0x3F == idx & 0x3F
        cur += c[2:]
        idx += 1
        if f & 0x40:
            n = cur[1] | (cur[2] << 8)
            assert len(cur) == 3 + n + 2
            crc = ref_crc(bytes(cur[:3 + n]))
            assert cur[3 + n] == crc & 0xFF and cur[4 + n] == crc >> 8
            msgs.append((seq, cur[0], bytes(cur[3:3 + n])))
            cur = None
    assert cur is None, "unterminated message"
    return msgs
