"""Application update into the inactive ROMFS slot (bms.romslot).

The same calls, error codes, finish results and marker as ``bms.update.Updater``
(so the Modbus window, BLE, bmsctl and the app's step poller drive either):
``begin(size, sha256, signature)``, ``chunk(offset, data)`` in order,
``finish_start()`` then ``finish_step()`` from the main loop.

Package: a ``bms.romslot`` descriptor (64 bytes: magic, bytecode version,
image size, image SHA-256) followed by the ROMFS image (tools/fwpkg.py
--romfs).  The transport hash and the signature (HMAC with ``UPDATE_KEY``)
cover the whole package, as for the archive updater.

Transfer: the first 64 bytes are checked at once - a package whose
bytecode version is not the board's is refused with the reason before any
flash is touched.  Then the image streams into the inactive slot through a
256-byte RAM buffer, one flash page programmed as soon as it is complete
(never more than one per chunk); once the descriptor is
accepted (first chunk) the slot's descriptor sector is cleared (and a
PENDING marker of an earlier, unbooted update goes back to OK), so the slot
is not bootable while it is rewritten.  Nothing is staged on littlefs.

Erase ahead: a sector found blank at its first page is only programmed (a
page: 0.4 ms typ, 3 ms worst case, W25Q16JV); the loader erased the
inactive slot at boot (``bms.romslot.prepare``).  A sector that is not
blank (a transfer that was cut off, an update started again before the
reboot that follows a confirm) is erased first, in the same call: that pass
then takes ~50 ms, the erase (45 ms typ) cannot be split and stalls the CPU
with interrupts off.  ``slow_sectors`` counts them for the bench and the log.

Finish steps, each bounded (``STEP_BYTES`` of flash hashed, or one page
written, or one marker write):
  verifying   the last partial page is written; the image is re-hashed
              from flash against the descriptor (catches write errors)
  checking    the image mounts as a ROMFS and holds ``app.mpy`` (``entry``)
  describing  the descriptor page is programmed: the slot is whole
  committing  marker ``commit_state``: PENDING, the only step that makes
              it boot next, or STAGED (a slave module: bootable only once
              the master's APPLY marked it PENDING, ``Slots.request_apply``).
A power cut anywhere before the commit boots the old application (the
new slot is not selected); after it, the new one on trial.  The heap cost
is the page buffer (and 1 KB of 0xFF to compare sectors with) while an
update runs, and nothing after.
"""
import hashlib

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython (host tests): the step timing is not measured there
    def ticks_us():
        return 0

    def ticks_diff(a, b):
        return a - b

from micropython import const

from bms import romslot as R
from bms.digest import equal
from bms.fwslot import ST_PENDING, ST_OK, ST_STAGED, ST_TRIAL, U_REFUSED, U_STAGED
from bms.update import (E_FLASH, E_FORMAT, E_HASH, E_INTERNAL, E_SIGNATURE, E_SIZE, E_STATE,
                        FS_BUSY, FS_DONE, FS_ERROR, FS_IDLE, PH_CHECK, PH_COMMIT, PH_EXTRACT,
                        PH_NONE, PH_VERIFY, UpdateError, append_in_order, sign)

_PAGES = const(16)           # flash pages per 4 KB sector
STEP_BYTES = const(4096)     # SHA-256 of 4 KB from flash: ~4.5 ms on the RP2040 (emulated)
PHASE_NAMES = ("", "verifying", "checking", "", "describing", "committing")


def _romfs_check(img, entry):
    import vfs
    vfs.VfsRom(img).stat("/" + entry)


class _Sink:
    """What ``append_in_order`` writes to: the updater's page buffer."""

    def __init__(self, up):
        self.up = up

    def write(self, mv):
        self.up._take(mv)

    def close(self):
        pass


class RomUpdater:
    def __init__(self, fs, part=None, key=None, slots=None, step_bytes=STEP_BYTES, check=None,
                 entry="app.mpy"):
        self.fs = fs
        part = part or R.partition()
        if part is None:
            raise OSError(19)            # ENODEV: no ROMFS partition
        self.rom, self.mv = part
        self.half = R.half(self.mv)
        self.key = key
        self.slots = slots if slots is not None else R.slots(fs)
        self.commit_state = ST_PENDING   # or ST_STAGED: see bms.update.Updater
        self.max_size = R.DESC_LEN + self.half - R.SECTOR
        self.step_bytes = step_bytes
        # fn(image memoryview): raises OSError if it is not an application
        # (``entry``: the module it must hold - a slave module's is slave_main.mpy).
        self.entry = entry
        self.check = check or (lambda img: _romfs_check(img, entry))
        self._f = None
        self._hash = None
        self._digest = None
        self.size = 0
        self.offset = 0
        self.last_error = None
        self.phase = PH_NONE
        self._buf = None                 # one flash page (256 B) being filled
        self._fill = 0
        self._page = 0                   # image pages written
        self._hdr = bytearray(R.DESC_LEN)
        self._desc = None
        self._pos = 0
        self.steps = 0
        self.step_us = 0
        self.max_step_us = 0             # longest finish step of the last finish
        self.max_chunk_us = 0            # longest chunk call (a sector write) of the last transfer
        self.phase_us = [0] * len(PHASE_NAMES)   # longest finish step per phase
        self.step_io = 0
        self.max_step_io = 0
        self.slow_sectors = 0            # sectors the last transfer had to erase
        self._ff = None                  # 1 KB of 0xFF: the blank reference

    # ---- the marker (shared Slots) ----------------------------------------------
    @property
    def state(self):
        return self.slots.state

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

    def slot_path(self, slot):
        return R.MOUNT if slot >= 0 else ""

    def confirm(self):
        return self.slots.confirm()

    def reject(self):
        return self.slots.reject()

    def progress(self):
        return self.offset, self.size

    # ---- transfer ------------------------------------------------------------------
    def _fail(self, code, msg):
        self.last_error = (code, msg)
        self.event = U_REFUSED
        raise UpdateError(code, msg)

    def begin(self, size, digest, signature=None):
        self.abort()
        self.last_error = None
        if self.state == ST_TRIAL:
            self._fail(E_STATE, "update refused: new firmware on trial, not yet confirmed")
        if size <= R.DESC_LEN or size > self.max_size:
            self._fail(E_SIZE, "size %d outside %d..%d (one ROMFS slot)"
                       % (size, R.DESC_LEN + 1, self.max_size))
        if len(digest) != 32:
            self._fail(E_HASH, "sha256 must be 32 bytes")
        if self.key is not None:
            if signature is None:
                self._fail(E_SIGNATURE, "signature required")
            if not equal(bytes(signature), sign(self.key, size, bytes(digest))):
                self._fail(E_SIGNATURE, "bad signature")
        if self._buf is None:
            self._buf = bytearray(R.PAGE)
            self._ff = b"\xff" * 1024
        self.slow_sectors = 0
        self._digest = bytes(digest)
        self._hash = hashlib.sha256()
        self.size = size
        self.offset = 0
        self._fill = 0
        self._page = 0
        self._desc = None
        self._f = _Sink(self)
        self.max_chunk_us = 0
        return 0

    def chunk(self, offset, data):
        if self._f is None:
            self._fail(E_STATE, "finish in progress: no more data accepted" if self.phase
                       else "no update in progress")
        t0 = ticks_us()
        end = offset + len(data)
        if offset == self.offset and end <= self.size:
            # The usual case, without the slices append_in_order makes: no
            # allocation here, so the GC backstop does not land in a chunk.
            self._take(data)
            self._hash.update(data)
            self.offset = r = end
        else:
            r = append_in_order(self, offset, data)
        us = ticks_diff(ticks_us(), t0)
        if us > self.max_chunk_us:
            self.max_chunk_us = us
        return r

    def _timed(self, t0, ph):
        self.step_us = us = ticks_diff(ticks_us(), t0)
        if us > self.max_step_us:
            self.max_step_us = us
        if us > self.phase_us[ph]:
            self.phase_us[ph] = us

    def _take(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            if self._desc is None:
                k = min(R.DESC_LEN - self.offset - i, n - i)
                self._hdr[self.offset + i:self.offset + i + k] = mv[i:i + k]
                i += k
                if self.offset + i == R.DESC_LEN:
                    self._header()
                continue
            k = min(R.PAGE - self._fill, n - i)
            self._buf[self._fill:self._fill + k] = mv if k == n else mv[i:i + k]
            self._fill += k
            i += k
            if self._fill == R.PAGE:
                self._flush()

    def _header(self):
        d = R.parse_desc(self._hdr)
        why = None
        if d is None:
            why = (E_FORMAT, "not a ROMFS application package (no BMSAPP1 descriptor)")
        elif R.mpy_refusal(d[0]) is not None:
            why = (E_FORMAT, "MicroPython mismatch: " + R.mpy_refusal(d[0]))
        elif d[2] != self.size - R.DESC_LEN:
            why = (E_SIZE, "descriptor says %d image bytes, package carries %d"
                   % (d[2], self.size - R.DESC_LEN))
        if why is not None:
            self.abort()
            self._fail(why[0], why[1])
        self._desc = d
        # Before any image sector: the slot stops being bootable.  Here, in the
        # first chunk, so that on the slow path this erase and sector 0's do
        # not add up in one pass.
        if self.state == ST_PENDING or self.state == ST_STAGED:
            # An earlier, unbooted update in this slot: never boot it half rewritten.
            self.slots.state = ST_OK
            self.slots.save()
        k = self.half // R.SECTOR - 1
        if not self._blank(k):
            self.rom.ioctl(6, self._block(k))       # descriptor out
            self.slow_sectors += 1

    def _block(self, sector):
        return (self._staged * self.half) // R.SECTOR + sector

    def _blank(self, sector):
        return R.blank(self.mv, self._block(sector) * R.SECTOR, R.SECTOR, self._ff)

    def _flush(self):
        """One image page to flash, as soon as it is complete: ~0.5 ms of
        flash busy time (3 ms worst case), never more than one per chunk of
        up to 256 bytes.  At a sector's first page the sector must be blank;
        one that is not is erased first (the slow path)."""
        buf = self._buf
        for j in range(self._fill, R.PAGE):
            buf[j] = 0xFF                # the last page of an image is partial
        sector = self._page // _PAGES
        blk = self._block(sector)
        try:
            if self._page % _PAGES == 0 and not self._blank(sector):
                self.slow_sectors += 1
                self.rom.ioctl(6, blk)
            self.rom.writeblocks(blk, buf, (self._page % _PAGES) * R.PAGE)
        except OSError:
            self.abort()
            self._fail(E_FLASH, "flash write failed in sector %d" % sector)
        self._page += 1
        self._fill = 0

    def abort(self):
        """Drop a transfer or a running finish.  The slot keeps no descriptor."""
        self._f = None
        self.phase = PH_NONE

    # ---- finish ------------------------------------------------------------------------
    def finish(self):
        r = self.finish_start()
        while r == FS_BUSY:
            r = self.finish_step()
        if r == FS_ERROR:
            raise UpdateError(self.last_error[0], self.last_error[1])
        return self.slot_path(self._staged)

    def finish_start(self):
        if self.phase:
            return FS_BUSY
        if self._f is None:
            self._fail(E_STATE, "no update in progress")
        self._f = None
        if self.offset != self.size:
            self._fail(E_SIZE, "truncated: got %d of %d bytes" % (self.offset, self.size))
        if self._hash.digest() != self._digest:
            self._fail(E_HASH, "sha256 mismatch")
        self.last_error = None
        self._hash = hashlib.sha256()
        self._pos = 0
        self.steps = 0
        self.max_step_us = 0
        for j in range(len(self.phase_us)):
            self.phase_us[j] = 0
        self.phase = PH_VERIFY
        return FS_BUSY

    def poll(self):
        if self.phase:
            self.finish_step()

    def finish_step(self):
        if not self.phase:
            return FS_IDLE
        t0 = ticks_us()
        self.steps += 1
        try:
            ph = self.phase
            if ph == PH_VERIFY:
                self._step_verify()
            elif ph == PH_CHECK:
                self._step_check()
            elif ph == PH_EXTRACT:
                desc = bytearray(R.PAGE)
                for j in range(R.PAGE):
                    desc[j] = 0xFF
                d = self._desc
                desc[0:52] = R.pack_desc(d[0], d[2], d[3], d[1])
                self.rom.writeblocks(self._block(self.half // R.SECTOR - 1), desc, 0)
                if R.slot_desc(self.mv, self._staged) is None:
                    raise UpdateError(E_FLASH, "descriptor did not read back")
                self.phase = PH_COMMIT
            else:
                self.slots.state = self.commit_state
                self.slots.save()
                self.phase = PH_NONE
                self.event = U_STAGED
                self._timed(t0, ph)
                return FS_DONE
        except UpdateError as e:
            return self._refuse(e.code, e.msg)
        except OSError:
            return self._refuse(E_FLASH, "flash error while %s" % PHASE_NAMES[self.phase])
        except MemoryError:
            return self._refuse(E_INTERNAL, "out of memory while %s" % PHASE_NAMES[self.phase])
        self._timed(t0, ph)
        return FS_BUSY

    def _refuse(self, code, msg):
        self.phase = PH_NONE
        self.last_error = (code, msg)
        self.event = U_REFUSED
        return FS_ERROR

    def _step_verify(self):
        if self._fill:
            self._flush()
            return
        n = self._desc[2]
        k = min(self.step_bytes, n - self._pos)
        base = self._staged * self.half
        self._hash.update(self.mv[base + self._pos:base + self._pos + k])
        self._pos += k
        if self._pos >= n:
            if self._hash.digest() != self._desc[3]:
                raise UpdateError(E_FLASH, "image read back from flash differs from the package")
            self._hash = None
            self.phase = PH_CHECK

    def _step_check(self):
        base = self._staged * self.half
        try:
            self.check(self.mv[base:base + self._desc[2]])
        except OSError:
            raise UpdateError(E_FORMAT, "the image is not a ROMFS holding " + self.entry)
        self.phase = PH_EXTRACT

    def finish_pm(self):
        ph = self.phase
        if ph == PH_VERIFY:
            return self._pos * 900 // ((self._desc[2] if self._desc else 0) or 1)
        if ph == PH_CHECK:
            return 950
        if ph == PH_EXTRACT:
            return 970
        if ph == PH_COMMIT:
            return 990
        return 1000 if self.state == self.commit_state and self.last_error is None else 0
