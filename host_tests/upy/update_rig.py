"""Builds ustar archives and signed packages without tarfile (MicroPython-compatible)."""
from bms.digest import sha256
from bms.update import sign


def _field(s, n):
    b = s.encode() if isinstance(s, str) else s
    return b + bytes(n - len(b))


def _header(name, size, typ=b"0"):
    h = bytearray(512)
    h[0:100] = _field(name, 100)
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = _field("%011o" % size, 12)
    h[136:148] = _field("%011o" % 0, 12)
    h[148:156] = b"        "
    h[156] = typ[0]
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    s = sum(h)
    h[148:156] = _field("%06o\0 " % s, 8)
    return h


def make_tar(files):
    """files: list of (name, bytes); names ending in '/' are directories."""
    out = bytearray()
    for name, data in files:
        if name.endswith("/"):
            out.extend(_header(name, 0, b"5"))
            continue
        out.extend(_header(name, len(data)))
        out.extend(data)
        out.extend(bytes((512 - len(data) % 512) % 512))
    out.extend(bytes(1024))
    return bytes(out)


def package(files, key=None):
    pkg = make_tar(files)
    digest = sha256(pkg).digest()
    sig = sign(key, len(pkg), digest) if key is not None else None
    return pkg, digest, sig


def send(up, pkg, digest, sig=None, chunk=200):
    up.begin(len(pkg), digest, sig)
    off = 0
    while off < len(pkg):
        off = up.chunk(off, pkg[off:off + chunk])
    return up.finish()


NEW_FW = [("bms/", b""), ("bms/version.py", b"VERSION = '2.0'\n"),
          ("bms/core.py", b"# new core\n" * 100), ("main.py", b"import bms\n")]
