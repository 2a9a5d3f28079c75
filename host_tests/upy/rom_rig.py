"""A ROMFS partition in RAM with the rp2 Flash block interface, tiny ROMFS
images and application packages (MicroPython-compatible, no mpremote)."""
from bms import romslot as R
from bms.digest import sha256
from bms.update import sign

SIZE = 128 * 1024      # the smallest partition bms.romslot splits (RAM of the unix-port run)


class FakeRom:
    """rp2.Flash of the ROMFS partition: 4 KB blocks; ``writeblocks(n, buf)``
    erases then programs, ``writeblocks(n, buf, off)`` only programs (bits go
    1 -> 0, as NOR flash does), ``ioctl(6, n)`` erases one block.
    ``ops`` counts flash operations; ``cut_at`` makes the n-th one fail half
    done (a power cut inside a write)."""

    def __init__(self, size=SIZE):
        self.buf = bytearray(b"\xff" * size)
        self.ops = 0
        self.cut_at = None
        self.erases = 0

    def _op(self):
        self.ops += 1
        if self.cut_at is not None and self.ops >= self.cut_at:
            raise PowerCutRom()

    def _erase(self, n):
        self._op()
        self.erases += 1
        b = self.buf
        for i in range(n * R.SECTOR, (n + 1) * R.SECTOR):
            b[i] = 0xFF

    def _program(self, at, data):
        self._op()
        b = self.buf
        for i in range(len(data)):
            b[at + i] &= data[i]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            for k in range((len(buf) + R.SECTOR - 1) // R.SECTOR):
                self._erase(n + k)
            off = 0
        self._program(n * R.SECTOR + off, buf)

    def ioctl(self, op, arg):
        if op == 6:
            self._erase(arg)
            return 0
        return None

    def part(self):
        return self, memoryview(self.buf)


class PowerCutRom(Exception):
    pass


def _uint(v):
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.insert(0, 0x80 | (v & 0x7F))
        v >>= 7
    return bytes(out)


def _rec(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def romfs(files):
    """A ROMFS image of top-level files [(name, bytes)] (mpremote's format)."""
    body = b""
    for name, data in files:
        n = name.encode()
        body += _rec(5, _uint(len(n)) + n + _rec(2, data))
    ln = _uint(len(body))
    if (3 + len(ln) + len(body)) % 2:
        ln = b"\x80" + ln
    return b"\xd2\xcd\x31" + ln + body


def package(files, mpy=None, key=None, size_delta=0):
    """(package, sha256, signature) of a ROMFS image of ``files``."""
    img = romfs(files)
    d = R.pack_desc(R.board_mpy() if mpy is None else mpy, len(img) + size_delta,
                    sha256(img).digest())
    pkg = d + b"\xff" * (R.DESC_LEN - len(d)) + img
    digest = sha256(pkg).digest()
    return pkg, digest, (sign(key, len(pkg), digest) if key is not None else None)


def check(img):
    """The updater's ROMFS check: VfsRom where the port has it, else the header
    and the app.mpy file record (CPython)."""
    try:
        import vfs
        vfs.VfsRom(img).stat("/app.mpy")
        return
    except ImportError:
        pass
    b = bytes(img)
    if b[:3] != b"\xd2\xcd\x31" or b"\x07app.mpy" not in b:
        raise OSError(2)


def app(label, pad=0):
    return [("app.mpy", b"M" + label.encode() + b"\0" * pad), ("fwinfo.txt", label.encode())]


def send(up, pkg, digest, sig=None, chunk=240):
    up.begin(len(pkg), digest, sig)
    off = 0
    while off < len(pkg):
        off = up.chunk(off, pkg[off:off + chunk])
