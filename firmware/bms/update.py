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
    finish_start(), then finish_step() until it is not FS_BUSY
        the incremental finish: bounded work per call, so a board keeps
        running its control loop (and feeding the watchdog) while a package
        is verified and unpacked; ``poll()`` is the app's poller for it.
        ``finish_start`` does the cheap checks at once (size, the SHA-256
        of what was received) and raises ``UpdateError`` on them; then the
        steps, each moving at most ``step_bytes`` of file data (plus one
        512-byte header, one marker write or ``_RM_PER_STEP`` removals):
          verifying   the staged file is re-read from flash and hashed
                      (catches flash write errors)
          checking    the archive headers (names, sizes, checksums) are
                      validated *before* anything is extracted
          clearing    a PENDING (or STAGED) marker from an earlier, not
                      yet booted update is reset to OK (that slot is
                      rewritten now), then the inactive slot directory is
                      emptied
          unpacking   member by member into the inactive slot
          committing  the marker is set to ``commit_state``: PENDING (the
                      next boot swaps it in), or STAGED where activation
                      is a separate request (a slave module: the master's
                      APPLY calls ``slots.request_apply``); the last step.
        A refusal in a step returns FS_ERROR with ``last_error`` = (code,
        text).  The running firmware is never touched.  A reset or power
        cut at any step leaves the old marker (so the old firmware boots);
        the staged file left behind is removed by the next Updater, and the
        sender starts again with ``begin``.
    finish()
        the blocking form (loops the steps; raises UpdateError) for callers
        that own the CPU anyway (tests, the CAN slave update, a REPL).

Slots and the boot marker live in ``bms.fwslot`` (what every boot needs);
an Updater works on one ``Slots`` object - the app's, shared with the
services that confirm a trial, so both always see the same marker state.
A new update is refused while a trial is running, so the rollback target
can never be overwritten.
"""
import struct

from micropython import const

from bms.digest import equal, hmac_sha256, sha256
from bms.fwslot import (EVENT_NAMES, ROOT_SLOT, ST_OK, ST_PENDING, ST_STAGED,  # noqa: F401
                        ST_TRIAL, STATE_NAMES, U_CONFIRMED, U_DISCARDED, U_REFUSED,
                        U_REJECTED, U_ROLLED_BACK, U_STAGED, U_SWAPPED, Slots)
from bms.store import makedirs

# Error codes (UpdateError.code), stable for comms.
E_STATE = const(1)
E_SIGNATURE = const(2)
E_SIZE = const(3)
E_OFFSET = const(4)
E_HASH = const(5)
E_FORMAT = const(6)
E_FLASH = const(7)
E_INTERNAL = const(8)
ERROR_NAMES = ("", "state", "signature", "size", "offset", "hash", "format", "flash",
               "internal")

# finish_step() results.
FS_IDLE = const(0)
FS_BUSY = const(1)
FS_DONE = const(2)
FS_ERROR = const(3)
FS_NAMES = ("idle", "busy", "done", "error")

# Finish phases (Updater.phase); 0 = no finish running.
PH_NONE = const(0)
PH_VERIFY = const(1)
PH_CHECK = const(2)
PH_CLEAR = const(3)
PH_EXTRACT = const(4)
PH_COMMIT = const(5)
PHASE_NAMES = ("", "verifying", "checking", "clearing", "unpacking", "committing")

# Bounded work per finish step.  2 KB of file data per step: reading 2 KB and
# writing 2 KB through littlefs costs a few ms on an RP2040, up to one sector
# erase (~45 ms typical) when a write needs a fresh block - below the 50 ms
# fast task period, far below the watchdog timeout.
STEP_BYTES = const(2048)
_RM_PER_STEP = const(4)

MAX_SIZE = const(1024 * 1024)
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


class TarWalker:
    """Reads one ustar header per ``next()``: resumable across finish steps."""

    def __init__(self, size):
        self.size = size
        self.pos = 0
        self.zeros = 0
        self.end = False

    def next(self, f, buf):
        """(name, type, size, data_offset) of the next member, None at the end marker."""
        size = self.size
        while not self.end and self.pos + 512 <= size:
            f.seek(self.pos)
            if f.readinto(buf) != 512:
                raise UpdateError(E_FORMAT, "archive: short header")
            self.pos += 512
            if not any(buf):
                self.zeros += 1
                if self.zeros == 2:
                    self.end = True
                    return None
                continue
            self.zeros = 0
            chk = _octal(buf[148:156])
            # The checksum field counts as 8 spaces; sum() runs in C (a Python
            # loop over 512 bytes would cost ~4 ms per header on an RP2040).
            if sum(buf) - sum(buf[148:156]) + 8 * 32 != chk:
                raise UpdateError(E_FORMAT, "archive: header checksum")
            typ = buf[156]
            name = _member_name(buf)
            n = _octal(buf[124:136])
            if typ in (0, 48):        # '0' or NUL: regular file
                pos = self.pos
                if pos + n > size:
                    raise UpdateError(E_FORMAT, "archive: %s truncated" % name)
                self.pos += (n + 511) // 512 * 512
                return name, 0, n, pos
            if typ == 53:             # '5': directory
                return name, 5, 0, self.pos
            raise UpdateError(E_FORMAT, "archive: %s: only files and directories" % name)
        if self.end:
            return None
        raise UpdateError(E_FORMAT, "archive: no end marker")


def iter_tar(f, size, buf):
    """Yield (name, type, size, data_offset) of every member; validates headers."""
    w = TarWalker(size)
    while True:
        m = w.next(f, buf)
        if m is None:
            return
        yield m


def prune(fs, path, budget):
    """Remove at most ``budget`` entries of the tree at ``path`` (itself last).

    Returns the budget left: > 0 means the tree is gone."""
    try:
        names = fs.listdir(path)
    except OSError:
        return budget
    for n in names:
        if budget <= 0:
            return 0
        p = path + "/" + n
        if fs.stat(p)[0] & 0x4000:
            budget = prune(fs, p, budget)
        else:
            fs.remove(p)
            budget -= 1
    if budget > 0:
        fs.rmdir(path)
        budget -= 1
    return budget


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


def check_upload(t, size, digest):
    """The begin rule of a staged upload (``Updater``, ``pkgstore.PackageStore``):
    a size in 1..``t.max_size`` and a 32-byte SHA-256, else ``t._fail``."""
    if size <= 0 or size > t.max_size:
        t._fail(E_SIZE, "size %d outside 1..%d" % (size, t.max_size))
    if len(digest) != 32:
        t._fail(E_HASH, "sha256 must be 32 bytes")


def open_upload(t, path, size, what):
    """Create the file of an upload (and its directory; refused as E_FLASH,
    naming ``what``), reset its hash and offset (``t``: ``fs``, ``_fail``)."""
    i = path.rfind("/")
    try:
        if i > 0:
            makedirs(t.fs, path[:i])
        t._f = t.fs.open(path, "wb")
    except OSError:
        t._fail(E_FLASH, "cannot create " + what)
    t._hash = sha256()
    t.size = size
    t.offset = 0


def append_in_order(t, offset, data):
    """The transfer rule of a staged upload (``Updater``, ``pkgstore.PackageStore``):
    a chunk wholly below the expected offset is a retransmission, acknowledged
    without writing; an overlapping one writes only its new tail; a gap or a
    chunk past the declared size is refused.  ``t`` has ``_f`` (open file),
    ``_hash``, ``offset``, ``size``, ``_fail(code, msg)`` and ``abort()``.
    Returns the next expected offset."""
    end = offset + len(data)
    if end <= t.offset:
        return t.offset
    if offset > t.offset:
        t._fail(E_OFFSET, "gap: expected offset %d, got %d" % (t.offset, offset))
    if end > t.size:
        t._fail(E_SIZE, "chunk beyond declared size %d" % t.size)
    mv = memoryview(data)[t.offset - offset:]
    try:
        t._f.write(mv)
    except OSError:
        t.abort()
        t._fail(E_FLASH, "flash write failed at %d" % t.offset)
    t._hash.update(mv)
    t.offset = end
    return end


class Updater:
    def __init__(self, fs, root="/fw", key=None, max_tries=3, max_size=MAX_SIZE,
                 step_bytes=STEP_BYTES, slots=None):
        self.fs = fs
        self.root = root
        self.key = key
        self.max_size = max_size
        # The marker state: the app passes its boot-time Slots (shared with
        # the services; it dropped a stale staged file at boot); a
        # standalone Updater reads its own and drops it now.  One Updater
        # per filesystem: a second one would drop a live transfer.
        if slots is None:
            slots = Slots(fs, root, max_tries)
            slots.drop_stage()
        self.slots = slots
        # The marker the last finish step writes: ST_PENDING (swapped in at the
        # next boot) or ST_STAGED (only after ``slots.request_apply``: slave.fw).
        self.commit_state = ST_PENDING
        self._f = None
        self._hash = None
        self.size = 0
        self.offset = 0
        self._digest = None
        self.last_error = None
        # Incremental finish.
        self.step_bytes = step_bytes
        self.phase = PH_NONE
        self._buf = None         # 512 B, allocated by the first finish
        self._rf = None          # the staged file, read
        self._wf = None          # the member being unpacked
        self._walk = None
        self._pos = 0            # verify: bytes hashed; unpack: read offset of the member
        self._left = 0           # unpack: bytes of the member still to copy
        self._payload = 0        # file bytes in the archive (from the check)
        self._copied = 0
        self.steps = 0           # finish steps of the last finish
        self.step_io = 0         # flash bytes read + written by the last step
        self.max_step_io = 0     # ... the most in one step of the last finish

    # ---- marker: the shared Slots ----------------------------------------------
    @property
    def state(self):
        return self.slots.state

    @state.setter
    def state(self, v):
        self.slots.state = v

    @property
    def active(self):
        return self.slots.active

    @property
    def tries(self):
        return self.slots.tries

    @property
    def event(self):
        return self.slots.event

    @event.setter
    def event(self, v):
        self.slots.event = v

    @property
    def _staged(self):
        return self.slots.staged

    def _save(self):
        self.slots.save()

    def slot_path(self, slot):
        return self.slots.slot_path(slot)

    def select_at_boot(self):
        return self.slots.select_at_boot()

    def confirm(self):
        return self.slots.confirm()

    def reject(self):
        return self.slots.reject()

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
        check_upload(self, size, digest)
        if self.key is not None:
            if signature is None:
                self._fail(E_SIGNATURE, "signature required")
            if not equal(bytes(signature), sign(self.key, size, bytes(digest))):
                self._fail(E_SIGNATURE, "bad signature")
        open_upload(self, self.root + "/stage.pkg", size, "staging file")
        self._digest = bytes(digest)
        return 0

    def chunk(self, offset, data):
        if self._f is None:
            if self.phase:
                self._fail(E_STATE, "finish in progress: no more data accepted")
            self._fail(E_STATE, "no update in progress")
        return append_in_order(self, offset, data)

    def progress(self):
        return self.offset, self.size

    def abort(self):
        """Drop a transfer or a running finish; the marker stays as it is."""
        if self._f is not None or self.phase:
            self._close_all()
            self.phase = PH_NONE
            try:
                self.fs.remove(self.root + "/stage.pkg")
            except OSError:
                pass

    def _close_all(self):
        for name in ("_f", "_rf", "_wf"):
            f = getattr(self, name)
            if f is not None:
                setattr(self, name, None)
                try:
                    f.close()
                except OSError:
                    pass

    # ---- finish: a state machine, bounded work per step ----------------------
    def finish(self):
        """Blocking finish: all steps in one call; raises UpdateError on a refusal."""
        r = self.finish_start()
        while r == FS_BUSY:
            r = self.finish_step()
        if r == FS_ERROR:
            raise UpdateError(self.last_error[0], self.last_error[1])
        return self.slot_path(self._staged)

    def finish_start(self):
        """Cheap checks now (raise UpdateError), the rest in ``finish_step``; FS_BUSY."""
        if self.phase:
            return FS_BUSY                # already running (a repeated command)
        if self._buf is None:             # before anything changes: a MemoryError leaves all as it was
            self._buf = bytearray(512)
        if self._f is None:
            self._fail(E_STATE, "no update in progress")
        f = self._f
        self._f = None
        try:
            f.close()
            if self.offset != self.size:
                self._fail(E_SIZE, "truncated: got %d of %d bytes" % (self.offset, self.size))
            if self._hash.digest() != self._digest:
                self._fail(E_HASH, "sha256 mismatch")
            self._rf = self.fs.open(self.root + "/stage.pkg", "rb")
        except OSError:
            self._stop()
            self._fail(E_FLASH, "cannot read the staged package")
        except UpdateError:
            self._stop()
            raise
        self.last_error = None
        self._hash = sha256()
        self._pos = 0
        self.steps = 0
        self.max_step_io = 0
        self.phase = PH_VERIFY
        return FS_BUSY

    def _stop(self):
        """End a finish (refused, done or abandoned): files closed, staged copy removed."""
        self._close_all()
        self.phase = PH_NONE
        self._walk = None
        try:
            self.fs.remove(self.root + "/stage.pkg")
        except OSError:
            pass

    def poll(self):
        """The app's poller: one finish step while a finish runs."""
        if self.phase:
            self.finish_step()

    def finish_step(self):
        """One bounded step: FS_BUSY (call again), FS_DONE, FS_ERROR, FS_IDLE (nothing to do)."""
        if not self.phase:
            return FS_IDLE
        self.steps += 1
        self.step_io = 0
        try:
            ph = self.phase
            if ph == PH_VERIFY:
                self._step_verify()
            elif ph == PH_CHECK:
                self._step_check()
            elif ph == PH_CLEAR:
                self._step_clear()
            elif ph == PH_EXTRACT:
                self._step_extract()
            else:
                self.state = self.commit_state
                self._save()
                self._stop()
                self.event = U_STAGED
                return FS_DONE
        except UpdateError as e:
            return self._refuse(e.code, e.msg)
        except OSError:
            return self._refuse(E_FLASH, "flash error while %s (flash full?)"
                                % PHASE_NAMES[self.phase])
        except MemoryError:
            return self._refuse(E_INTERNAL, "out of memory while %s" % PHASE_NAMES[self.phase])
        finally:
            if self.step_io > self.max_step_io:
                self.max_step_io = self.step_io
        return FS_BUSY

    def _refuse(self, code, msg):
        self._stop()
        self.last_error = (code, msg)
        self.event = U_REFUSED
        return FS_ERROR

    def _step_verify(self):
        buf = self._buf
        mv = memoryview(buf)
        budget = self.step_bytes
        while budget > 0:
            k = self.size - self._pos
            if k > 512:
                k = 512
            if k > budget:
                k = budget
            n = self._rf.readinto(mv[:k]) if k > 0 else 0
            if not n:
                break
            self._hash.update(mv[:n])
            self._pos += n
            self.step_io += n
            budget -= n
        if budget > 0:                    # reached the end of the file
            if self._pos != self.size or self._hash.digest() != self._digest:
                raise UpdateError(E_FLASH, "staged file differs from what was received")
            self._hash = None
            self._walk = TarWalker(self.size)
            self._payload = 0
            self._pos = 0
            self.phase = PH_CHECK

    def _step_check(self):
        w = self._walk
        for _i in range(self.step_bytes // 512 or 1):
            m = w.next(self._rf, self._buf)
            self.step_io += 512
            if m is None:
                if self._pos == 0:
                    raise UpdateError(E_FORMAT, "archive: empty")
                self.phase = PH_CLEAR
                return
            self._pos += 1                # members
            self._payload += m[2]

    def _step_clear(self):
        if self.state == ST_PENDING or self.state == ST_STAGED:
            self.state = ST_OK            # never boot a slot while it is being rewritten
            self._save()
            return
        dest = self.slot_path(self._staged)
        if prune(self.fs, dest, _RM_PER_STEP) > 0:
            makedirs(self.fs, dest)
            self._walk = TarWalker(self.size)
            self._copied = 0
            self._left = 0
            self.phase = PH_EXTRACT

    def _step_extract(self):
        fs = self.fs
        rf = self._rf
        mv = memoryview(self._buf)
        budget = self.step_bytes
        while budget > 0:
            if self._wf is None:
                m = self._walk.next(rf, self._buf)
                self.step_io += 512
                budget -= 512
                if m is None:
                    rf.close()
                    self._rf = None
                    self.phase = PH_COMMIT
                    return
                name, typ, n, off = m
                target = self.slot_path(self._staged) + "/" + name
                if typ == 5:
                    makedirs(fs, target)
                    continue
                makedirs(fs, target[:target.rfind("/")])
                self._wf = fs.open(target, "wb")
                self._pos = off
                self._left = n
            while self._left > 0 and budget > 0:
                k = self._left if self._left < 512 else 512
                if k > budget:
                    k = budget
                rf.seek(self._pos)
                got = rf.readinto(mv[:k])
                if got != k:
                    raise OSError(5)
                self._wf.write(mv[:k])
                self._pos += k
                self._left -= k
                self._copied += k
                self.step_io += 2 * k
                budget -= k
            if self._left == 0:
                f = self._wf
                self._wf = None
                f.close()

    def finish_pm(self):
        """Progress of the running finish, per mille (verify 0-450, check -500, unpack -990)."""
        ph = self.phase
        size = self.size or 1
        if ph == PH_VERIFY:
            return self._pos * 450 // size
        if ph == PH_CHECK:
            return 450 + self._walk.pos * 50 // size
        if ph == PH_CLEAR:
            return 500
        if ph == PH_EXTRACT:
            return 500 + self._copied * 490 // (self._payload or 1)
        if ph == PH_COMMIT:
            return 990
        return 1000 if self.state == self.commit_state and self.last_error is None else 0
