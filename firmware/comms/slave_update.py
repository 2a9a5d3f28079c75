"""Master side of the slave firmware update: forward a staged package over CAN.

The operator uploads a slave package to the master (``bms.pkgstore``,
Modbus window ``comms.regs.slave_update``) and starts the forwarding to one
slave or to all of them in turn.  ``SlaveUpdater.poll(now)`` runs from the
main loop (``MasterBoard.poll``) and does a bounded amount of work per call
(at most one CAN frame, at most one 112-byte flash read), so the control
loop never waits for it.  Frames: ``comms.can_ids`` FWCTL / FWDATA / FWACK;
the slave side is ``slave.fw``.

Per slave: BEGIN -> data blocks (B segments of 7 bytes, one frame every
``gap_ms``, then wait for the block acknowledgement; a gap report or an
acknowledgement time-out makes it go back to the first byte the slave does
not hold) -> FINISH (the slave verifies and unpacks; its marker says
``staged``: no reset swaps that in) -> APPLY (it marks the package to be
swapped in and reboots into the new slot; an APPLY that is refused or never
answered ends with an ABORT, which drops the staged package)
-> QUERY once a second until the slave reports its
marker: ``trial`` while it proves itself, then ``ok`` in the new slot
(updated) or ``ok`` in the old one (rolled back).  With ``all`` the slaves
follow one another; the first failure stops the rest.

Relays: the update refuses to start unless charge, precharge and discharge
are open, and from then until the end it holds them open through the core's
``inhibit`` mask, so no slave ever finishes or reboots (unknown cell
voltages) under load.  Independently of this, a slave that goes silent
raises the lost-module COMM fault as always.

Pacing and bus load (250 kbit/s): a data frame is 8 bytes (~0.5 ms on the
wire) every ``gap_ms`` = 4 ms, i.e. at most ~13 % of the bus on top of the
~5 % of a 16-module sweep; the FW ids are the highest on the bus, so every
measurement frame wins arbitration and waits at most one FW frame.  The
target slave reads one frame per 4 ms, less than its pure-Python MCP2515
budget (~300 frames/s), and writes flash once per block while the master
waits for the acknowledgement.  Throughput about 1.5 KB/s.
"""
from micropython import const

from bms import update as U
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_PRE
from bms.faults import R_CHG, R_DSG
from bms.ticks import ticks_add, ticks_diff
from comms import can_ids as C

FP_IDLE = const(0)
_FP_BEGIN = const(1)
FP_SEND = const(2)
_FP_FINISH = const(3)
_FP_APPLY = const(4)
_FP_REBOOT = const(5)     # applied: waiting for the slave to come back on trial
_FP_CONFIRM = const(6)    # on trial: waiting for its confirmation or rollback
FP_DONE = const(7)
FP_ERROR = const(8)
FP_NAMES = ("idle", "begin", "sending", "finishing", "applying", "rebooting", "confirming",
            "done", "error")

SR_NONE = const(0)
_SR_QUEUED = const(1)
SR_ACTIVE = const(2)
SR_UPDATED = const(3)
SR_REFUSED = const(4)
SR_ROLLED_BACK = const(5)
_SR_NO_ANSWER = const(6)
SR_ABORTED = const(7)
SR_NAMES = ("none", "queued", "updating", "updated", "refused", "rolled_back", "no_answer",
            "aborted")

TARGET_ALL = const(0xFF)
_BLOCK = const(16)                  # segments per acknowledgement (112 bytes)
GAP_MS = const(4)
_ACK_TIMEOUT_MS = const(300)
_MAX_RETRIES = const(8)
_QUERY_MS = const(1000)
_FINISH_TIMEOUT_MS = const(120000)  # verify + unpack on the slave
_CONFIRM_TIMEOUT_MS = const(600000)  # reboot + trial (a failing trial needs max_tries reboots)
INHIBIT = R_CHG | R_DSG

_REASONS = {
    U.E_STATE: "state: its previous update is still on trial",
    U.E_SIGNATURE: "signature: unsigned or signed with another key than the slave's",
    U.E_SIZE: "size: truncated or larger than the slave accepts",
    U.E_OFFSET: "offset: transfer out of order",
    U.E_HASH: "sha256 mismatch: the package is corrupt",
    U.E_FORMAT: "format: not a valid firmware archive",
    U.E_FLASH: "flash: the slave could not store it (full?)",
    C.FWR_SESSION: "session: the slave lost the transfer (rebooted?)",
    C.FWR_REQUEST: "protocol: request out of order",
}


class SlaveUpdater:
    def __init__(self, master, store, bms=None):
        self.ms = master
        self.store = store
        self.bms = bms
        self.phase = FP_IDLE
        self.target = 0
        self.addr = 0
        self.results = bytearray(C.MAX_MODULES)
        self.error = 0
        self.err_text = ""
        self.session = 0
        self.block = _BLOCK
        self.gap_ms = GAP_MS
        self.ack_timeout_ms = _ACK_TIMEOUT_MS
        self.confirm_timeout_ms = _CONFIRM_TIMEOUT_MS
        self._f = None
        self.meta_len = 0
        self.total = 0
        self.nsegs = 0
        self.base = 0        # segments the slave acknowledged
        self.next_seg = 0    # next segment to send
        self.block_end = 0
        self._blk = bytearray(C.FW_MAX_BLOCK * C.FW_SEG_BYTES)
        self._blk_first = -1
        self._tx = bytearray(8)
        mv = memoryview(self._tx)
        self._views = [mv[:k] for k in range(9)]
        self._ctl_op = 0     # control frame waiting for a TX buffer
        self._last_tx = 0
        self._deadline = 0
        self._until = 0
        self.retries = 0
        self.retransmits = 0
        self.frames_sent = 0
        self.old_active = U.ROOT_SLOT
        self.new_active = 0
        self.last_fw = 0

    # ---- operator -------------------------------------------------------------
    def busy(self):
        return FP_IDLE < self.phase < FP_DONE

    def start(self, target, now):
        """Forward the staged package to slave ``target`` (1..n) or TARGET_ALL."""
        if self.busy():
            raise U.UpdateError(U.E_STATE, "a slave update is already running (slave %d)"
                                % self.addr)
        if not self.store.staged:
            raise U.UpdateError(U.E_STATE, "no slave package staged: upload and finish it first")
        ms = self.ms
        n = ms.n_modules
        if target == TARGET_ALL:
            addrs = range(1, n + 1)
        elif 1 <= target <= n:
            addrs = (target,)
        else:
            raise U.UpdateError(U.E_STATE, "slave %d does not exist (1..%d, or 255 = all)"
                                % (target, n))
        for a in addrs:
            if ms.mod_state[a - 1] != 1:   # can_master.MS_OK
                raise U.UpdateError(U.E_STATE, "slave %d is not ok: fix it before updating" % a)
        b = self.bms
        if b is not None:
            cs = b.contactors.state
            if cs[RELAY_CHG] or cs[RELAY_DSG] or cs[RELAY_PRE]:
                raise U.UpdateError(U.E_STATE, "relays closed: open charge and discharge "
                                    "(switches or key off) before a slave update")
        f = self.store.open()
        self._close()
        self._f = f
        for k in range(C.MAX_MODULES):
            self.results[k] = SR_NONE
        for a in addrs:
            self.results[a - 1] = _SR_QUEUED
        self.target = target
        self.error = 0
        self.err_text = ""
        self.retransmits = 0
        self.frames_sent = 0
        if b is not None:
            b.inhibit |= INHIBIT
        self._next_slave(now)

    def abort(self, now):
        if not self.busy():
            return
        self._fail(SR_ABORTED, 0, "aborted by the operator")

    # ---- the loop -------------------------------------------------------------
    def poll(self, now):
        if self._ctl_op:
            self._send_ctl()   # (also an ABORT queued by a failure)
            return
        ph = self.phase
        if ph == FP_IDLE or ph >= FP_DONE:
            return
        if ph == FP_SEND:
            self._send_data(now)
            return
        if ph == _FP_REBOOT or ph == _FP_CONFIRM or ph == _FP_FINISH:
            if ticks_diff(now, self._until) >= 0:
                if ph == _FP_FINISH:
                    self._fail(_SR_NO_ANSWER, 0, "slave %d did not finish in time" % self.addr)
                else:
                    self._fail(_SR_NO_ANSWER, 0, "slave %d did not come back with the new "
                               "firmware in time" % self.addr)
                return
            if ticks_diff(now, self._deadline) >= 0:
                self._deadline = ticks_add(now, _QUERY_MS)
                self._ctl(C.FW_QUERY, now)
            return
        # _FP_BEGIN, _FP_APPLY: resend until acknowledged
        if ticks_diff(now, self._deadline) >= 0:
            self.retries += 1
            if self.retries > _MAX_RETRIES:
                self._fail(_SR_NO_ANSWER, 0, "slave %d does not answer the update request"
                           % self.addr)
                return
            self._ctl(C.FW_BEGIN if ph == _FP_BEGIN else C.FW_APPLY, now)

    def on_ack(self, k, b, now):
        """An FWACK frame of module ``k`` (0-based), from ``CanMaster._receive``."""
        ph = self.phase
        if ph == FP_IDLE or ph >= FP_DONE or k != self.addr - 1:
            return
        op = b[0]
        res = b[1]
        fw = b[6]
        self.last_fw = fw
        marker = fw & 3
        active = ((fw >> 2) & 3) - 1
        ses_ok = b[7] == self.session
        if ph == _FP_BEGIN:
            if op == C.FW_BEGIN and ses_ok:
                if res:
                    self._refused(res)
                    return
                self.old_active = active
                self.new_active = 1 if active == 0 else 0
                self.phase = FP_SEND
                self.base = 0
                self.next_seg = 0
                self._set_block_end()
                self.retries = 0
        elif ph == FP_SEND:
            if not ses_ok:
                return
            if res:
                self._refused(res)
                return
            if op != C.FW_DATA:
                return
            nxt = C.u32(b, 2)
            seg = self.nsegs if nxt >= self.total else nxt // C.FW_SEG_BYTES
            if seg < self.base or seg > self.next_seg:
                return   # stale
            if seg > self.base:
                self.retries = 0
            self.base = seg
            if seg >= self.nsegs:
                self.phase = _FP_FINISH
                self._until = ticks_add(now, _FINISH_TIMEOUT_MS)
                self._deadline = ticks_add(now, _QUERY_MS)
                self._ctl(C.FW_FINISH, now)
                return
            self.next_seg = seg   # go on (block acknowledged) or go back (gap reported)
            self._set_block_end()
        elif ph == _FP_FINISH:
            if res == C.FWR_BUSY:
                return
            if res == C.FWR_RECEIVING:
                self._ctl(C.FW_FINISH, now)   # our FINISH was lost
                return
            if res:
                self._refused(res)
                return
            if marker == U.ST_STAGED or marker == U.ST_PENDING:   # (PENDING: an older slave)
                self.phase = _FP_APPLY
                self.retries = 0
                self._ctl(C.FW_APPLY, now)
        elif ph == _FP_APPLY or ph == _FP_REBOOT or ph == _FP_CONFIRM:
            if ph == _FP_APPLY and op == C.FW_APPLY and ses_ok and res:
                self._refused(res)            # not marked (flash): it stays on its firmware
                return
            if ph == _FP_APPLY and op == C.FW_APPLY and ses_ok and res == 0:
                self.phase = _FP_REBOOT
                self._until = ticks_add(now, self.confirm_timeout_ms)
                self._deadline = ticks_add(now, _QUERY_MS)
                return
            if marker == U.ST_TRIAL:
                if ph != _FP_CONFIRM:
                    self.phase = _FP_CONFIRM
                    self._until = ticks_add(now, self.confirm_timeout_ms)
            elif marker == U.ST_OK and ph != _FP_APPLY:
                if active == self.new_active:
                    self.results[k] = SR_UPDATED
                    self._next_slave(now)
                else:
                    self._fail(SR_ROLLED_BACK, 0, "slave %d rolled back to its previous firmware:"
                               " the new one did not reach normal operation" % self.addr)

    # ---- status -----------------------------------------------------------------
    def progress_pm(self):
        ph = self.phase
        if ph < FP_SEND:
            return 0
        if ph == FP_SEND:
            return self.base * 1000 // self.nsegs if self.nsegs else 0
        return 1000

    def bytes_sent(self):
        n = self.base * C.FW_SEG_BYTES - self.meta_len
        if self.phase > FP_SEND:
            return self.store.size
        return n if n > 0 else 0

    # ---- internals ------------------------------------------------------------
    def _next_slave(self, now):
        for k in range(C.MAX_MODULES):
            if self.results[k] == _SR_QUEUED:
                break
        else:
            self.phase = FP_DONE
            self._release()
            return
        self.results[k] = SR_ACTIVE
        self.addr = k + 1
        self.session = (self.session % 255) + 1
        st = self.store
        self.meta_len = C.FW_HASH_BYTES * (2 if st.signature is not None else 1)
        self.total = self.meta_len + st.size
        self.nsegs = (self.total + C.FW_SEG_BYTES - 1) // C.FW_SEG_BYTES
        self.base = 0
        self.next_seg = 0
        self._blk_first = -1
        self.retries = 0
        self.phase = _FP_BEGIN
        self._ctl(C.FW_BEGIN, now)

    def _set_block_end(self):
        e = (self.base // self.block + 1) * self.block
        self.block_end = e if e < self.nsegs else self.nsegs

    def _ctl(self, op, now):
        self._ctl_op = op
        self._deadline = ticks_add(now, self.ack_timeout_ms if op != C.FW_QUERY else _QUERY_MS)
        self._send_ctl()

    def _send_ctl(self):
        ms = self.ms
        if ms._ob_n:
            return   # the sweep's own frames first
        op = self._ctl_op
        arg = p1 = p2 = 0
        if op == C.FW_BEGIN:
            arg = self.store.size
            p1 = C.FWF_SIGNED if self.store.signature is not None else 0
            p2 = self.block
        C.fwctl_pack(self._tx, op, arg, p1, p2, self.session)
        if ms.ctrl.send(C.ID_FWCTL + self.addr - 1, self._tx, False):
            self._ctl_op = 0
            self.frames_sent += 1

    def _send_data(self, now):
        if self.next_seg >= self.block_end:
            if ticks_diff(now, self._deadline) >= 0:
                # No acknowledgement of the block: resend it from what the slave holds.
                self.retries += 1
                if self.retries > _MAX_RETRIES:
                    self._fail(_SR_NO_ANSWER, 0, "slave %d stopped acknowledging data"
                               % self.addr)
                    return
                self.retransmits += self.next_seg - self.base
                self.next_seg = self.base
            return
        if ticks_diff(now, self._last_tx) < self.gap_ms or self.ms._ob_n:
            return
        i = self.next_seg
        n = self._segment(i)
        if n < 0:
            return
        if self.ms.ctrl.send(C.ID_FWDATA + self.addr - 1, self._views[n], False):
            self.frames_sent += 1
            self._last_tx = now
            self.next_seg = i + 1
            if self.next_seg >= self.block_end:
                self._deadline = ticks_add(now, self.ack_timeout_ms)

    def _segment(self, i):
        """Fill the TX buffer with segment ``i``; returns the frame length."""
        B = self.block
        if self._blk_first < 0 or not (self._blk_first <= i < self._blk_first + B):
            if not self._load_block(i // B * B):
                return -1
        o = (i - self._blk_first) * C.FW_SEG_BYTES
        left = self.total - i * C.FW_SEG_BYTES
        k = left if left < C.FW_SEG_BYTES else C.FW_SEG_BYTES
        tx = self._tx
        tx[0] = i & 0xFF
        blk = self._blk
        for j in range(k):
            tx[1 + j] = blk[o + j]
        return k + 1

    def _load_block(self, first):
        st = self.store
        s0 = first * C.FW_SEG_BYTES
        s1 = s0 + self.block * C.FW_SEG_BYTES
        if s1 > self.total:
            s1 = self.total
        m = self.meta_len
        blk = self._blk
        p = 0
        o = s0
        while o < s1 and o < m:
            blk[p] = st.digest[o] if o < C.FW_HASH_BYTES else st.signature[o - C.FW_HASH_BYTES]
            p += 1
            o += 1
        if o < s1:
            try:
                self._f.seek(o - m)
                want = s1 - o
                got = self._f.readinto(memoryview(blk)[p:p + want])
            except OSError:
                got = -1
            if got != want:
                self._fail(SR_ABORTED, U.E_FLASH, "cannot read the slave package from the "
                           "master's flash")
                return False
        self._blk_first = first
        return True

    def _refused(self, res):
        why = _REASONS.get(res, "code %d" % res)
        self._fail(SR_REFUSED, res, "slave %d refused the update (%s)" % (self.addr, why))

    def _fail(self, result, code, text):
        if _FP_BEGIN <= self.phase <= _FP_APPLY:
            # Close the slave's staging file, or drop its staged package unapplied
            # (sent by poll).
            self._ctl_op = C.FW_ABORT
        k = self.addr - 1
        if 0 <= k < C.MAX_MODULES:
            self.results[k] = result
        for j in range(C.MAX_MODULES):
            if self.results[j] == _SR_QUEUED:
                self.results[j] = SR_ABORTED
        self.error = code
        self.err_text = text
        self.phase = FP_ERROR
        self._release()

    def _release(self):
        self._close()
        b = self.bms
        if b is not None:
            b.inhibit &= ~INHIBIT

    def _close(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
