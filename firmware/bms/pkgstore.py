"""A firmware package held on the master's flash for its slave modules.

The operator uploads a slave package to the master (Modbus window
``comms.regs.slave_update``); the master keeps it here and forwards it over
CAN (``comms.slave_update``) to one slave or to each in turn.  The same
calls and error codes as ``bms.update.Updater``: ``begin(size, sha256,
signature)``, ``chunk(offset, data)`` in order (retransmissions
acknowledged, gaps refused), ``finish()`` checks the size and the SHA-256
of what was received; it does no flash work, so it never stalls the control
loop.  The bytes read back from flash are checked end to end by each slave,
which hashes what arrives over CAN (a flash error on the master is refused
there as a SHA-256 mismatch).  Nothing is unpacked here: the signature is
checked by each slave against its own key (the master may not hold it), and
so is the archive format.

The staged state lives in RAM: after a master reboot the package must be
uploaded again (cheap, and it never forwards a file it did not verify in
this session).  An upload that does not complete (a write that fails, the
flash full; refused at the finish; aborted) leaves nothing on flash, and a
file left from before a reboot is removed when the store is built: a package
of up to 1 MB must not leave the master's littlefs (768 KB on the RP2040
image) full under its latch, settings and state records.
"""
from bms.update import (E_FLASH, E_HASH, E_SIZE, E_STATE, MAX_SIZE, UpdateError,
                        append_in_order, check_upload, open_upload)


class PackageStore:
    def __init__(self, fs, path="/fw/slave.pkg", max_size=MAX_SIZE):
        self.fs = fs
        self.path = path
        self.max_size = max_size
        self._f = None
        self._hash = None
        self.size = 0
        self.offset = 0
        self.digest = None
        self.signature = None
        self.staged = False
        self.last_error = None
        self._drop()

    def _drop(self):
        try:
            self.fs.remove(self.path)
        except OSError:
            pass

    def _fail(self, code, msg):
        self.last_error = (code, msg)
        raise UpdateError(code, msg)

    def begin(self, size, digest, signature=None):
        self.abort()
        self.staged = False
        self.last_error = None
        check_upload(self, size, digest)
        if signature is not None and len(signature) != 32:
            self._fail(E_SIZE, "signature must be 32 bytes")
        open_upload(self, self.path, size, self.path)
        self.digest = bytes(digest)
        self.signature = bytes(signature) if signature is not None else None
        return 0

    def chunk(self, offset, data):
        if self._f is None:
            self._fail(E_STATE, "no upload in progress")
        return append_in_order(self, offset, data)

    def abort(self):
        """Drop an upload in progress and its partial file (a staged package stays)."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
            self._drop()

    def receiving(self):
        return self._f is not None

    def finish(self):
        if self._f is None:
            self._fail(E_STATE, "no upload in progress")
        f = self._f
        self._f = None
        try:
            f.close()
        except OSError:
            self._drop()
            self._fail(E_FLASH, "flash write failed at the end (flash full?)")
        if self.offset != self.size:
            self._drop()
            self._fail(E_SIZE, "truncated: got %d of %d bytes" % (self.offset, self.size))
        if self._hash.digest() != self.digest:
            self._drop()
            self._fail(E_HASH, "sha256 mismatch")
        self.staged = True
        return self.path

    def open(self):
        """The verified package for reading (the forwarder keeps it open)."""
        if not self.staged:
            raise UpdateError(E_STATE, "no slave package staged: upload one first")
        return self.fs.open(self.path, "rb")
