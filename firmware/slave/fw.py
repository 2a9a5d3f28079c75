"""Slave side of the firmware update over the internal CAN bus.

The master (``comms.slave_update``) streams a package to one slave at a
time; this module receives it into the slave's own ``bms.update.Updater``
(same staging, verification, A/B slots and rollback as the master's).
Frames and ids are in ``comms.can_ids`` (FWCTL / FWDATA / FWACK) and
``docs/can_internal.md``.

Transfer.  BEGIN carries the package size, a flags byte (signed) and the
block length B (segments per acknowledgement).  The data stream is the
SHA-256 (32 bytes), the signature (32 bytes, if signed) and the package,
cut into 7-byte segments; segment i has seq = i & 0xFF.  Go-back-N with
block acknowledgements:
  - the segment expected next is taken, anything else is not stored;
  - the last segment of a block (i % B == B - 1, or the last one) is
    acknowledged with FWACK(DATA, next byte offset), also when it is a
    duplicate (the master resends a block whose acknowledgement was lost);
  - a segment ahead of the expected one (a frame was lost) is answered
    once per gap with FWACK(DATA, next), so the master goes back at once
    instead of waiting for its time-out.
Package bytes are collected per block in one preallocated buffer and
written with one ``Updater.chunk`` call; the hash and signature check happen
in ``Updater.begin`` as soon as the first 32/64 stream bytes are in, so a
wrongly signed package is refused after its first block.

FINISH runs ``Updater.finish_start`` / ``finish_step`` one bounded step
per loop pass (``_finish_work``; the master's query sees FWR_BUSY
meanwhile).  Its last step marks the package STAGED, not PENDING: a staged
package is never swapped in by a reset the master did not ask for (a
watchdog reset or power cycle after the master restarted or lost the bus
between FINISH and APPLY, with the relays no longer held open); the next
boot drops it (``bms.fwslot``), and so does an ABORT.  APPLY writes the
mark that lets the next boot swap it in (PENDING, ``Slots.request_apply``),
acknowledges, and reboots 100 ms later.  After that boot the slot is on trial:
it is confirmed once the slave is back in normal operation
(``confirm_sweeps`` SYNCs heard, AFE answering, configured by the master);
a slave that does not get there within ``trial_timeout_ms`` reboots, and
``select_at_boot`` rolls back after ``max_tries`` such boots.

The measurement loop keeps running during the transfer: frames are
handled in ``Slave._receive`` like any other, a block costs one flash
write; only the (blocking) finish stops the slave for its duration, and
the master holds the relays open before it asks for it.
"""
from micropython import const

from bms import update as U
from bms.ticks import ticks_add, ticks_diff
from comms import can_ids as C

_PH_IDLE = const(0)
_PH_RECEIVING = const(1)
PH_FINISHING = const(2)
_PH_STAGED = const(3)
_PH_ERROR = const(4)
PHASE_NAMES = ("idle", "receiving", "finishing", "staged", "error")

_CONFIRM_SWEEPS = const(10)        # SYNCs in normal operation after the reboot -> confirm
_TRIAL_TIMEOUT_MS = const(120000)  # still unconfirmed: reboot (one more try, then rollback)
_APPLY_DELAY_MS = const(100)       # the APPLY acknowledgement leaves before the reset


class SlaveFw:
    def __init__(self, slave, updater, reset=None, now=0):
        self.slave = slave
        self.up = updater
        updater.commit_state = U.ST_STAGED   # swapped in only after the master's APPLY
        self.reset = reset            # machine.reset on a board
        self.phase = _PH_IDLE
        self.error = 0
        self.session = 0
        self.size = 0
        self.meta_len = 0
        self.total = 0                # stream bytes: hash [+ signature] + package
        self.nsegs = 0
        self.nseg = 0                 # next segment expected
        self.block = 16
        self.begun = False
        self._nacked = False
        self._meta = bytearray(2 * C.FW_HASH_BYTES)
        self._buf = bytearray(C.FW_MAX_BLOCK * C.FW_SEG_BYTES)
        self._mv = memoryview(self._buf)
        self._buf_n = 0
        self._pkg_off = 0             # package offset of _buf[0]
        self._tx = bytearray(8)
        self._ack_op = 0              # acknowledgement waiting for a TX buffer
        self._ack_res = 0
        self._reboot_at = None
        self.boot_ts = now
        self.confirm_sweeps = _CONFIRM_SWEEPS
        self.trial_timeout_ms = _TRIAL_TIMEOUT_MS
        self.segments = 0             # diagnostics
        self.duplicates = 0
        self.gaps = 0
        self.resets = 0

    # ---- frames from the master (called by Slave._receive) ------------------
    def on_ctl(self, b, n, now):
        if n < 8:
            return
        op = b[0]
        ses = b[7]
        if op == C.FW_QUERY:
            self._ack(op, self._result())
            return
        if op == C.FW_BEGIN:
            size = C.u32(b, 1)
            if self.phase == _PH_RECEIVING and ses == self.session and size == self.size:
                self._ack(op, C.FWR_OK)   # our acknowledgement was lost: nothing to redo
                return
            self._begin(size, b[5], b[6], ses)
            return
        if ses != self.session or self.phase == _PH_IDLE:
            self._ack(op, C.FWR_SESSION)
            return
        if op == C.FW_ABORT:
            up = self.up
            up.abort()
            self.phase = _PH_IDLE
            try:
                up.slots.discard()        # staged, never to be applied: forget it now
            except OSError:
                pass                      # still STAGED on flash: the next boot drops it
            self._ack(op, C.FWR_OK)
        elif op == C.FW_FINISH:
            ph = self.phase
            if ph == _PH_RECEIVING:
                if self.nseg < self.nsegs or not self.begun:
                    self._ack(op, C.FWR_REQUEST)
                else:
                    self.phase = PH_FINISHING   # runs in step()
            else:
                r = self._result()
                self._ack(op, r if r != C.FWR_RECEIVING else C.FWR_REQUEST)
        elif op == C.FW_APPLY:
            st = self.up.state
            if self.phase == _PH_STAGED and (st == U.ST_STAGED or st == U.ST_PENDING):
                # The mark first (PENDING on flash), then the acknowledgement and
                # the reset: a power cut in between boots the new slot on trial.
                try:
                    self.up.slots.request_apply()
                except OSError:
                    self._ack(op, U.E_FLASH)   # not marked: stays staged, no reset
                    return
                self._ack(op, C.FWR_OK)
                self._reboot_at = ticks_add(now, _APPLY_DELAY_MS)
            else:
                self._ack(op, C.FWR_REQUEST)
        else:
            self._ack(op, C.FWR_REQUEST)

    def on_data(self, b, n, now):
        if self.phase != _PH_RECEIVING or n < 2:
            return
        s = b[0]
        d = (s - self.nseg) & 0xFF
        if d == 0:
            i = self.nseg
            if i >= self.nsegs:
                return
            o = i * C.FW_SEG_BYTES
            left = self.total - o
            if n - 1 != (left if left < C.FW_SEG_BYTES else C.FW_SEG_BYTES):
                return   # wrong length: treat as lost
            if not self._take(b, o, n - 1):
                return
            self.segments += 1
            self.nseg = i + 1
            self._nacked = False
            if self.nseg % self.block == 0 or self.nseg == self.nsegs:
                if self._flush():
                    self._ack(C.FW_DATA, C.FWR_OK)
        elif d >= 128:
            self.duplicates += 1
            i = self.nseg - (256 - d)
            if (i + 1) % self.block == 0 or i + 1 == self.nsegs:
                self._ack(C.FW_DATA, C.FWR_OK)
        else:
            self.gaps += 1
            if not self._nacked:
                self._nacked = True
                self._ack(C.FW_DATA, C.FWR_OK)

    # ---- the loop ---------------------------------------------------------------
    def step(self, now):
        if self._ack_op:
            self._send_ack()
        if self.phase == PH_FINISHING:
            self._finish_work()
        if self._reboot_at is not None and ticks_diff(now, self._reboot_at) >= 0:
            self._reboot_at = None
            self._reboot()
        up = self.up
        if up.state == U.ST_TRIAL:
            s = self.slave
            if (s.syncs >= self.confirm_sweeps and s.afe_ok and s.configured and s.addr
                    and not s.sleeping):
                try:
                    up.confirm()
                except OSError:
                    pass   # flash busy or failing: try again next pass
            elif ticks_diff(now, self.boot_ts) > self.trial_timeout_ms:
                self._reboot()

    def _finish_work(self):
        """Verify and unpack, one bounded step of ``Updater.finish_step`` per
        loop pass (at most a few KB of flash I/O), so the slave keeps sampling,
        sending its frames and feeding its 2 s watchdog meanwhile."""
        up = self.up
        try:
            r = up.finish_step() if up.phase else up.finish_start()
        except U.UpdateError as e:
            self._fail(e.code)
            return
        except OSError:
            self._fail(U.E_FLASH)
            return
        if r == U.FS_BUSY:
            return
        if r != U.FS_DONE:
            self._fail(up.last_error[0] if up.last_error else U.E_INTERNAL)
            return
        self.phase = _PH_STAGED
        self._ack(C.FW_FINISH, C.FWR_OK)

    def _reboot(self):
        self.resets += 1
        if self.reset is not None:
            self.reset()

    # ---- helpers ----------------------------------------------------------------
    def _result(self):
        ph = self.phase
        if ph == _PH_ERROR:
            return self.error
        if ph == PH_FINISHING:
            return C.FWR_BUSY
        if ph == _PH_RECEIVING:
            return C.FWR_RECEIVING
        return C.FWR_OK

    def _begin(self, size, flags, blk, ses):
        up = self.up
        up.abort()
        self.session = ses
        self.size = size
        self.error = 0
        self.begun = False
        if up.state == U.ST_TRIAL:
            self._fail(U.E_STATE, C.FW_BEGIN)   # the other slot is the rollback target
            return
        if size < 1 or size > up.max_size:
            self._fail(U.E_SIZE, C.FW_BEGIN)
            return
        if blk < 1 or blk > C.FW_MAX_BLOCK:
            self._fail(C.FWR_REQUEST, C.FW_BEGIN)
            return
        self.block = blk
        self.meta_len = C.FW_HASH_BYTES * (2 if flags & C.FWF_SIGNED else 1)
        self.total = self.meta_len + size
        self.nsegs = (self.total + C.FW_SEG_BYTES - 1) // C.FW_SEG_BYTES
        self.nseg = 0
        self._nacked = False
        self._buf_n = 0
        self._pkg_off = 0
        self.phase = _PH_RECEIVING
        self._ack(C.FW_BEGIN, C.FWR_OK)

    def _take(self, b, o, k):
        """Stream bytes ``b[1:1+k]`` at stream offset ``o``; False if refused."""
        m = self.meta_len
        j = 0
        while j < k and o + j < m:
            self._meta[o + j] = b[1 + j]
            j += 1
        if not self.begun and o + j >= m:
            h = C.FW_HASH_BYTES
            sig = bytes(self._meta[h:m]) if m > h else None
            try:
                self.up.begin(self.size, bytes(self._meta[:h]), sig)
            except U.UpdateError as e:
                self._fail(e.code, C.FW_DATA)
                return False
            self.begun = True
        buf = self._buf
        p = self._buf_n
        while j < k:
            buf[p] = b[1 + j]
            p += 1
            j += 1
        self._buf_n = p
        return True

    def _flush(self):
        n = self._buf_n
        if n == 0:
            return True
        try:
            self.up.chunk(self._pkg_off, self._mv[:n])
        except U.UpdateError as e:
            self._fail(e.code, C.FW_DATA)
            return False
        except OSError:
            self._fail(U.E_FLASH, C.FW_DATA)
            return False
        self._pkg_off += n
        self._buf_n = 0
        return True

    def _fail(self, code, op=C.FW_FINISH):
        self.up.abort()
        self.phase = _PH_ERROR
        self.error = code
        self._ack(op, code)

    def _ack(self, op, res):
        self._ack_op = op
        self._ack_res = res
        self._send_ack()

    def _send_ack(self):
        s = self.slave
        if not s.addr:
            self._ack_op = 0
            return
        up = self.up
        nxt = self.nseg * C.FW_SEG_BYTES
        if nxt > self.total:
            nxt = self.total
        C.fwack_pack(self._tx, self._ack_op, self._ack_res, nxt,
                     C.fw_state_byte(up.state, up.active, up.tries), self.session)
        if s.ctrl.send(C.ID_FWACK + s.addr - 1, self._tx, False):
            self._ack_op = 0
