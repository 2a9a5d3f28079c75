"""Firmware update: staging, verification, atomic swap at restart, rollback.

Transport-agnostic: Modbus, BLE or a test call ``begin``/``chunk``/``finish``.

Package: an uncompressed ustar archive of the firmware tree (``bms/...``,
``drivers/...``, ``.mpy`` or ``.py``), as built by ``tools/fwpkg.py``.

    begin(size, sha256, signature=None)
        refuses a package that cannot fit or is unsigned/wrongly signed when
        a device key is configured.  Signature = HMAC-SHA256(device key,
        "BMSFW1" | size u32 LE | sha256) - a symmetric scheme: whoever holds
        the device key can sign, so keep it per device or per fleet
        (Ed25519 would be better but MicroPython has no fast implementation).
    chunk(offset, data) -> next expected offset
        in order; a chunk that lies wholly below the expected offset is a
        retransmission and is acknowledged without writing; an overlapping
        one writes only its new tail; a gap is refused (the sender resumes
        from the offset returned).
    finish()
        size must match, the staged file is re-read from flash and its
        SHA-256 compared (catches flash write errors too), the archive is
        checked (names, sizes, header checksums) *before* anything is
        extracted into the inactive slot directory, then the marker is set
        to PENDING.  The running firmware is never touched.

Slots: ``/fw/a`` and ``/fw/b``; "root" (-1) means the factory firmware at
the filesystem root.  The marker is an A/B record (bms.store), so a power
cut while it is written leaves the old marker.  ``select_at_boot`` (called
from boot.py before anything imports the firmware) turns PENDING into TRIAL
and counts boots in TRIAL; after ``max_tries`` boots without ``confirm()``
(called once the new firmware reached the armed state) it rolls back to
the previous slot.  A new update is refused while a trial is running, so the
rollback target can never be overwritten.
"""
import struct

from micropython import const

from bms.digest import equal, hmac_sha256, sha256
from bms.store import ABRecord, KIND_MARKER, makedirs

ST_OK = const(0)
ST_PENDING = const(1)   # staged, swap at the next boot
ST_TRIAL = const(2)     # running the new firmware, not yet confirmed
STATE_NAMES = ("ok", "pending", "trial")
ROOT_SLOT = const(-1)

# Events for the persistent log (PK_UPDATE a=...).
U_STAGED = const(1)
U_SWAPPED = const(2)
U_CONFIRMED = const(3)
U_ROLLED_BACK = const(4)
U_REFUSED = const(5)
U_REJECTED = const(6)   # the trial firmware ran but not whole: roll back at the next boot

# Error codes (UpdateError.code), stable for comms.
E_STATE = const(1)
E_SIGNATURE = const(2)
E_SIZE = const(3)
E_OFFSET = const(4)
E_HASH = const(5)
E_FORMAT = const(6)
E_FLASH = const(7)
ERROR_NAMES = ("", "state", "signature", "size", "offset", "hash", "format", "flash")

MAX_SIZE = const(1024 * 1024)
_MARKER = "<bbBB"
_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


class UpdateError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def sign(key, size, digest):
    return hmac_sha256(key, b"BMSFW1" + struct.pack("<I", size) + digest)


def _octal(field):
    s = bytes(field).split(b"\0")[0].strip()
    if not s:
        return 0
    v = 0
    for c in s:
        if c < 48 or c > 55:
            raise UpdateError(E_FORMAT, "archive: bad number")
        v = v * 8 + c - 48
    return v


def _member_name(h):
    name = bytes(h[0:100]).split(b"\0")[0]
    if bytes(h[257:262]) == b"ustar":
        prefix = bytes(h[345:500]).split(b"\0")[0]
        if prefix:
            name = prefix + b"/" + name
    try:
        name = name.decode()
    except UnicodeError:
        raise UpdateError(E_FORMAT, "archive: name not ASCII")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if not name or name.startswith("/") or len(name) > 120:
        raise UpdateError(E_FORMAT, "archive: bad name %r" % name)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise UpdateError(E_FORMAT, "archive: bad path %r" % name)
    for ch in name:
        if ch not in _NAME_OK:
            raise UpdateError(E_FORMAT, "archive: bad character in %r" % name)
    return name


def iter_tar(f, size, buf):
    """Yield (name, type, size, data_offset) of every member; validates headers."""
    pos = 0
    zeros = 0
    while pos + 512 <= size:
        f.seek(pos)
        if f.readinto(buf) != 512:
            raise UpdateError(E_FORMAT, "archive: short header")
        pos += 512
        if not any(buf):
            zeros += 1
            if zeros == 2:
                return
            continue
        zeros = 0
        chk = _octal(buf[148:156])
        s = 0
        for i in range(512):
            s += 32 if 148 <= i < 156 else buf[i]
        if s != chk:
            raise UpdateError(E_FORMAT, "archive: header checksum")
        typ = buf[156]
        name = _member_name(buf)
        n = _octal(buf[124:136])
        if typ in (0, 48):        # '0' or NUL: regular file
            if pos + n > size:
                raise UpdateError(E_FORMAT, "archive: %s truncated" % name)
            yield name, 0, n, pos
            pos += (n + 511) // 512 * 512
        elif typ == 53:           # '5': directory
            yield name, 5, 0, pos
        else:
            raise UpdateError(E_FORMAT, "archive: %s: only files and directories" % name)
    raise UpdateError(E_FORMAT, "archive: no end marker")


def rmtree(fs, path):
    try:
        names = fs.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if fs.stat(p)[0] & 0x4000:
            rmtree(fs, p)
        else:
            fs.remove(p)
    fs.rmdir(path)


class Updater:
    def __init__(self, fs, root="/fw", key=None, max_tries=3, max_size=MAX_SIZE):
        self.fs = fs
        self.root = root
        self.key = key
        self.max_tries = max_tries
        self.max_size = max_size
        self.marker = ABRecord(fs, root + "/marker", KIND_MARKER)
        self.active = ROOT_SLOT
        self.prev = ROOT_SLOT
        self.state = ST_OK
        self.tries = 0
        self.event = 0
        self._load()
        self._f = None
        self._hash = None
        self.size = 0
        self.offset = 0
        self._digest = None
        self.last_error = None

    # ---- marker ------------------------------------------------------------
    def _load(self):
        r = self.marker.load()
        if r is not None and len(r[1]) == 4:
            self.active, self.prev, self.state, self.tries = struct.unpack(_MARKER, r[1])

    def _save(self):
        self.marker.save(1, struct.pack(_MARKER, self.active, self.prev, self.state, self.tries))

    def slot_path(self, slot):
        return "" if slot == ROOT_SLOT else "%s/%s" % (self.root, "ab"[slot])

    def select_at_boot(self):
        """boot.py: returns the directory to put first on sys.path ("" = root)."""
        self.event = 0
        if self.state == ST_PENDING:
            self.prev = self.active
            self.active = self._staged
            self.state = ST_TRIAL
            self.tries = 1
            self.event = U_SWAPPED
            self._save()
        elif self.state == ST_TRIAL:
            if self.tries >= self.max_tries:
                self.active = self.prev
                self.state = ST_OK
                self.tries = 0
                self.event = U_ROLLED_BACK
            else:
                self.tries += 1
            self._save()
        return self.slot_path(self.active)

    @property
    def _staged(self):
        return 1 if self.active == 0 else 0

    def confirm(self):
        """The running firmware reached the armed state: keep it."""
        if self.state == ST_TRIAL:
            self.state = ST_OK
            self.tries = 0
            self._save()
            self.event = U_CONFIRMED
            return True
        return False

    def reject(self):
        """The trial firmware runs but is not whole (a part failed to build, e.g.
        out of memory): make the next boot roll back instead of counting on."""
        if self.state == ST_TRIAL:
            self.tries = self.max_tries
            self._save()
            self.event = U_REJECTED
            return True
        return False

    # ---- transfer ------------------------------------------------------------
    def _fail(self, code, msg):
        self.last_error = (code, msg)
        self.event = U_REFUSED
        raise UpdateError(code, msg)

    def begin(self, size, digest, signature=None):
        self.abort()
        self.last_error = None
        if self.state == ST_TRIAL:
            # The inactive slot is the rollback target until the trial is confirmed.
            self._fail(E_STATE, "update refused: new firmware on trial, not yet confirmed")
        if size <= 0 or size > self.max_size:
            self._fail(E_SIZE, "size %d outside 1..%d" % (size, self.max_size))
        if len(digest) != 32:
            self._fail(E_HASH, "sha256 must be 32 bytes")
        if self.key is not None:
            if signature is None:
                self._fail(E_SIGNATURE, "signature required")
            if not equal(bytes(signature), sign(self.key, size, bytes(digest))):
                self._fail(E_SIGNATURE, "bad signature")
        makedirs(self.fs, self.root)
        try:
            self._f = self.fs.open(self.root + "/stage.pkg", "wb")
        except OSError:
            self._fail(E_FLASH, "cannot create staging file")
        self._hash = sha256()
        self.size = size
        self.offset = 0
        self._digest = bytes(digest)
        return 0

    def chunk(self, offset, data):
        if self._f is None:
            self._fail(E_STATE, "no update in progress")
        end = offset + len(data)
        if end <= self.offset:
            return self.offset           # retransmission of something we have
        if offset > self.offset:
            self._fail(E_OFFSET, "gap: expected offset %d, got %d" % (self.offset, offset))
        if end > self.size:
            self._fail(E_SIZE, "chunk beyond declared size %d" % self.size)
        mv = memoryview(data)[self.offset - offset:]
        try:
            self._f.write(mv)
        except OSError:
            self.abort()
            self._fail(E_FLASH, "flash write failed at %d" % self.offset)
        self._hash.update(mv)
        self.offset = end
        return end

    def progress(self):
        return self.offset, self.size

    def abort(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
            try:
                self.fs.remove(self.root + "/stage.pkg")
            except OSError:
                pass

    def finish(self):
        if self._f is None:
            self._fail(E_STATE, "no update in progress")
        f = self._f
        self._f = None
        f.close()
        stage = self.root + "/stage.pkg"
        try:
            if self.offset != self.size:
                self._fail(E_SIZE, "truncated: got %d of %d bytes" % (self.offset, self.size))
            if self._hash.digest() != self._digest:
                self._fail(E_HASH, "sha256 mismatch")
            buf = bytearray(512)
            if self._rehash(stage, buf) != self._digest:
                self._fail(E_FLASH, "staged file differs from what was received")
            self._check_archive(stage, buf)
            if self.state == ST_PENDING:
                self.state = ST_OK   # never boot a slot while it is being rewritten
                self._save()
            slot = self._staged
            self._extract(stage, self.slot_path(slot), buf)
            self.state = ST_PENDING
            self._save()
            self.event = U_STAGED
        finally:
            try:
                self.fs.remove(stage)
            except OSError:
                pass
        return self.slot_path(self._staged)

    def _rehash(self, path, buf):
        h = sha256()
        f = self.fs.open(path, "rb")
        try:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
        finally:
            f.close()
        return h.digest()

    def _check_archive(self, path, buf):
        f = self.fs.open(path, "rb")
        try:
            n = 0
            for _m in iter_tar(f, self.size, buf):
                n += 1
            if n == 0:
                self._fail(E_FORMAT, "archive: empty")
        except UpdateError as e:
            self._fail(e.code, e.msg)
        finally:
            f.close()

    def _extract(self, path, dest, buf):
        fs = self.fs
        try:
            rmtree(fs, dest)
            makedirs(fs, dest)
            f = fs.open(path, "rb")
            try:
                members = list(iter_tar(f, self.size, buf))
                for name, typ, n, off in members:
                    target = dest + "/" + name
                    if typ == 5:
                        makedirs(fs, target)
                        continue
                    i = target.rfind("/")
                    makedirs(fs, target[:i])
                    out = fs.open(target, "wb")
                    try:
                        f.seek(off)
                        left = n
                        while left > 0:
                            k = f.readinto(buf)
                            if not k:
                                raise OSError(5)
                            k = k if k < left else left
                            out.write(memoryview(buf)[:k])
                            left -= k
                    finally:
                        out.close()
            finally:
                f.close()
        except OSError:
            self._fail(E_FLASH, "cannot write the new firmware (flash full?)")
