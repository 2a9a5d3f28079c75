"""A fake flash filesystem with MicroPython's os/VFS calls, that can lose power.

MicroPython-compatible (runs under the unix port too).  Files are bytearrays
in a dict; the firmware receives this object wherever it would use ``os``
plus ``open`` (``fs.open``, ``fs.rename``, ``fs.remove``, ``fs.stat``,
``fs.listdir``, ``fs.mkdir``, ``fs.rmdir``).

Power cuts: ``cut_after(n)`` lets ``n`` more *units* of flash work happen,
where every byte written costs one unit and every metadata operation
(open for writing/truncating, rename, remove, mkdir, rmdir) costs one unit.
The operation that would need unit ``n+1`` does only what fits (a write
keeps its first bytes: partially written content stays, the pessimistic
FAT-like model; littlefs would in fact discard an unsynced tail) and then
raises ``PowerCut``; so does every later call until ``reboot()``.
``rename`` is atomic (littlefs guarantees it).  ``units`` counts the work
done so far, so a test can measure an operation and then cut it at every
point inside it.
"""


class PowerCut(Exception):
    """The board lost power: nothing after this point happened.

    Deliberately not an OSError, so code that handles flash errors cannot
    swallow it by accident.
    """


def _norm(path):
    parts = []
    for p in path.split("/"):
        if p == "" or p == ".":
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/" + "/".join(parts)


def _parent(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


class _File:
    def __init__(self, fs, path, data, mode):
        self.fs = fs
        self.path = path
        self.data = data
        self.gen = fs.gen
        self.readable = "r" in mode or "+" in mode
        self.writable = "w" in mode or "a" in mode or "+" in mode
        self.append = "a" in mode
        self.text = "b" not in mode
        self.pos = len(data) if self.append else 0
        self.closed = False

    def _check(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self.fs._alive()
        if self.gen != self.fs.gen:
            raise OSError(9)  # EBADF: the handle did not survive a reboot

    def write(self, buf):
        self._check()
        if not self.writable:
            raise OSError(9)
        if isinstance(buf, str):
            buf = buf.encode()
        n = len(buf)
        ok = self.fs._spend(n)
        if self.append:
            self.pos = len(self.data)
        end = self.pos + ok
        d = self.data
        if self.pos > len(d):
            d.extend(bytes(self.pos - len(d)))
        d[self.pos:end] = bytes(buf[:ok])
        self.pos = end
        self.fs.bytes_written += ok
        if ok < n:
            self.fs._die()
        return n

    def read(self, n=-1):
        self._check()
        d = self.data
        if n is None or n < 0:
            n = len(d) - self.pos
        out = bytes(d[self.pos:self.pos + n])
        self.pos += len(out)
        return out.decode() if self.text else out

    def readinto(self, buf):
        self._check()
        d = self.data
        n = min(len(buf), len(d) - self.pos)
        if n < 0:
            n = 0
        buf[:n] = d[self.pos:self.pos + n]
        self.pos += n
        return n

    def seek(self, off, whence=0):
        self._check()
        if whence == 1:
            off += self.pos
        elif whence == 2:
            off += len(self.data)
        if off < 0:
            raise OSError(22)
        self.pos = off
        return off

    def tell(self):
        return self.pos

    def flush(self):
        self._check()

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class FakeFlash:
    def __init__(self):
        self.files = {}
        self.dirs = {"/": True}
        self.gen = 0
        self.budget = -1
        self.dead = False
        self.units = 0
        self.bytes_written = 0
        self.meta_ops = 0
        self.cuts = 0

    # ---- power ---------------------------------------------------------
    def cut_after(self, n):
        self.budget = n

    def reboot(self):
        """Power back on: open handles are gone, content is what reached flash."""
        self.dead = False
        self.budget = -1
        self.gen += 1

    def _alive(self):
        if self.dead:
            raise PowerCut()

    def _die(self):
        self.dead = True
        self.cuts += 1
        raise PowerCut()

    def _spend(self, n):
        """Units allowed out of ``n``; the caller dies if it got fewer."""
        self._alive()
        if self.budget < 0:
            self.units += n
            return n
        ok = n if n <= self.budget else self.budget
        self.budget -= ok
        self.units += ok
        return ok

    def _meta(self):
        if self._spend(1) < 1:
            self._die()
        self.meta_ops += 1

    # ---- os / VFS --------------------------------------------------------
    def open(self, path, mode="r"):
        self._alive()
        p = _norm(path)
        if p in self.dirs:
            raise OSError(21)  # EISDIR
        if "w" in mode or "a" in mode:
            if _parent(p) not in self.dirs:
                raise OSError(2)
            self._meta()
            if "w" in mode or p not in self.files:
                self.files[p] = bytearray()
        elif p not in self.files:
            raise OSError(2)  # ENOENT
        return _File(self, p, self.files[p], mode)

    def rename(self, a, b):
        self._alive()
        a = _norm(a)
        b = _norm(b)
        if a in self.files:
            if b in self.dirs:
                raise OSError(21)
            if _parent(b) not in self.dirs:
                raise OSError(2)
            self._meta()
            self.files[b] = self.files.pop(a)
        elif a in self.dirs:
            if b in self.dirs or b in self.files:
                raise OSError(17)
            self._meta()
            pre = a + "/"
            for k in [k for k in self.files if k.startswith(pre)]:
                self.files[b + k[len(a):]] = self.files.pop(k)
            for k in [k for k in self.dirs if k == a or k.startswith(pre)]:
                del self.dirs[k]
                self.dirs[b + k[len(a):]] = True
        else:
            raise OSError(2)

    def remove(self, path):
        self._alive()
        p = _norm(path)
        if p not in self.files:
            raise OSError(2)
        self._meta()
        del self.files[p]

    def mkdir(self, path):
        self._alive()
        p = _norm(path)
        if p in self.dirs or p in self.files:
            raise OSError(17)  # EEXIST
        if _parent(p) not in self.dirs:
            raise OSError(2)
        self._meta()
        self.dirs[p] = True

    def rmdir(self, path):
        self._alive()
        p = _norm(path)
        if p not in self.dirs or p == "/":
            raise OSError(2)
        if self.listdir(p):
            raise OSError(39)  # ENOTEMPTY
        self._meta()
        del self.dirs[p]

    def listdir(self, path="/"):
        self._alive()
        p = _norm(path)
        if p not in self.dirs:
            raise OSError(2)
        pre = "/" if p == "/" else p + "/"
        out = []
        for k in list(self.files) + list(self.dirs):
            if k != p and k.startswith(pre) and "/" not in k[len(pre):]:
                out.append(k[len(pre):])
        out.sort()
        return out

    def stat(self, path):
        self._alive()
        p = _norm(path)
        if p in self.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if p in self.files:
            return (0x8000, 0, 0, 0, 0, 0, len(self.files[p]), 0, 0, 0)
        raise OSError(2)

    # ---- test helpers ----------------------------------------------------
    def snapshot(self, prefix="/"):
        """Copy of every file under ``prefix`` (to prove something was untouched)."""
        pre = _norm(prefix)
        out = {}
        for k in self.files:
            if k == pre or k.startswith(pre if pre.endswith("/") else pre + "/"):
                out[k] = bytes(self.files[k])
        return out


class XorShift:
    """A tiny seeded PRNG that gives the same sequence on CPython and MicroPython."""

    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n if n > 0 else 0

    def bytes(self, n):
        return bytes(self.next() & 0xFF for _ in range(n))
