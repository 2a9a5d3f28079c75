"""Slave firmware update window: modules updated through the master.

Laid out like the master's own update window (``comms.regs.update``, whose
``REGS`` describes both) so the same tool code drives both: begin, command,
status, offset, size, progress, error code and text, chunk at the same
offsets.  The upload goes into ``bms.pkgstore.PackageStore`` on the
master's flash (nothing is unpacked on the master); ``start`` hands it to
``comms.slave_update.SlaveUpdater``, which forwards it over CAN in the
background.  Writes need the user role.

  command  FC06: 1 finish (check size and SHA-256 of the upload), 2 abort
           (the upload and any forwarding), 3 start forwarding to ``target``
  target   R/W: slave address 1..16, or 255 = every slave in turn
  forward  phase, slave being updated, its progress per mille, package bytes
           it acknowledged, segments retransmitted, error code, the FW state
           byte it reported last (FWACK), then one result per slave
  text     at 0x100: why the forwarding stopped (64 registers ASCII)

``start`` refuses (exception 03, reason in the error text) while relays are
closed, without a verified upload, for a missing or unhealthy slave, or
while a forwarding is running.  Slave versions are in the modules block.
The window (and the forwarder behind it, ``RegisterMap.fwd_of``) is built
the first time a request touches the block.
"""
from micropython import const

from bms import update as U
from comms.packing import get16be as _g16
from comms.regs import codes
from comms.regs import update as RU
from comms.regs.update import (SU_ADDR, SU_BYTES, SU_ERROR, SU_FW, SU_PHASE, SU_PROGRESS,  # noqa: F401
                               SU_RESULT, SU_RETX, SU_TARGET, SU_TEXT, SU_TEXT_REGS)

SIZE = const(0x140)
SC_START = const(3)
TARGET_ALL = const(0xFF)

# Mirrors of comms.slave_update (a single board need not import it);
# host_tests/upy/test_can_fwupdate.py checks that they agree.
PHASE_NAMES = ("idle", "begin", "sending", "finishing", "applying", "rebooting", "confirming",
               "done", "error")
RESULT_NAMES = ("none", "queued", "updating", "updated", "refused", "rolled_back", "no_answer",
                "aborted")


class SlaveUpdateWindow(RU.UpdateWindow):
    """Upload (the update window's begin / chunk) plus forwarding control."""

    def __init__(self, store, fwd):
        RU.UpdateWindow.__init__(self, store)
        self.fwd = fwd
        self.target = 1

    def _status(self):
        st = self.up
        if st is None:
            return RU.US_IDLE
        if st._f is not None:
            return RU.US_RECEIVING
        if st.last_error is not None:
            return RU.US_ERROR
        return RU.US_STAGED if st.staged else RU.US_IDLE

    def reg(self, o):
        if self.up is None:
            return 0
        if o < RU.UP_BEGIN + 18:
            st = self.up
            if st._f is None:
                return 0
            if o < 2:
                return (st.size >> 16) & 0xFFFF if o == 0 else st.size & 0xFFFF
            j = 2 * (o - 2)
            return (st.digest[j] << 8) | st.digest[j + 1]
        if o < SU_TARGET or RU.UP_ERR_TEXT <= o < RU.UP_ERR_TEXT + RU.UP_TEXT_REGS:
            return RU.UpdateWindow.reg(self, o)
        if o == SU_TARGET:
            return self.target
        f = self.fwd
        if f is None:
            return 0
        if o == SU_PHASE:
            return f.phase
        if o == SU_ADDR:
            return f.addr
        if o == SU_PROGRESS:
            return f.progress_pm()
        if o == SU_BYTES:
            return (f.bytes_sent() >> 16) & 0xFFFF
        if o == SU_BYTES + 1:
            return f.bytes_sent() & 0xFFFF
        if o == SU_RETX:
            return f.retransmits if f.retransmits < 0xFFFF else 0xFFFF
        if o == SU_ERROR:
            return f.error
        if o == SU_FW:
            return f.last_fw
        if SU_RESULT <= o < SU_RESULT + 16:
            return f.results[o - SU_RESULT]
        if SU_TEXT <= o < SU_TEXT + SU_TEXT_REGS:
            t = f.err_text
            j = 2 * (o - SU_TEXT)
            hi = ord(t[j]) if j < len(t) else 0
            lo = ord(t[j + 1]) if j + 1 < len(t) else 0
            return (hi << 8) | lo
        return 0

    def _write(self, rm, off, count, data, pos):
        if self.up is None or self.fwd is None:
            return rm.refuse(codes.EX_ADDRESS, -1, "no slave modules to update on this board")
        if not rm.allowed(codes.ROLE_USER):
            return rm.refuse(codes.EX_FUNCTION, -1, RU.LOCKED)
        if off == SU_TARGET and count == 1:
            t = _g16(data, pos)
            if t != TARGET_ALL and not 1 <= t <= 16:
                return rm.refuse(codes.EX_VALUE, -1, "target: slave 1..16 or 255 (all)")
            self.target = t
            return codes.EX_NONE
        if off == RU.UP_CMD and count == 1:
            c = _g16(data, pos)
            now = rm.bms.clock.ticks_ms() if rm.bms is not None else 0
            try:
                if c == RU.UC_FINISH:
                    if self.fwd.busy():
                        return rm.refuse(codes.EX_VALUE, -1, "a slave update is running: abort first")
                    self.up.finish()
                    return codes.EX_NONE
                if c == RU.UC_ABORT:
                    self.up.abort()
                    self.up.last_error = None
                    self.fwd.abort(now)
                    return codes.EX_NONE
                if c == SC_START:
                    self.fwd.start(self.target, now)
                    return codes.EX_NONE
            except U.UpdateError as e:
                return rm.refuse(codes.EX_VALUE, -1, "slave update refused (%s): %s"
                                 % (U.ERROR_NAMES[e.code], e.msg))
            return rm.refuse(codes.EX_VALUE, -1, "slave update command %d unknown" % c)
        if off == RU.UP_BEGIN and self.fwd.busy():
            return rm.refuse(codes.EX_VALUE, -1, "a slave update is running: abort first")
        return RU.UpdateWindow._write(self, rm, off, count, data, pos)


def window(rm):
    """This port's slave update window, built on first use (with the forwarder)."""
    w = rm.windows.get("slave_update")
    if w is None:
        fwd = rm.fwd_of() if rm.fwd_of is not None else None
        w = SlaveUpdateWindow(fwd.store if fwd is not None else None, fwd)
        rm.windows["slave_update"] = w
    return w


def read(rm, off, count, out, pos):
    return window(rm).read(rm, off, count, out, pos)


def write(rm, off, count, data, pos):
    return window(rm).write(rm, off, count, data, pos)


def doc(start):
    from comms.regdoc import section
    rows = RU.doc_rows(start, 6)
    md = ("Sequence (`bmsctl update --slave N|all PKG`): unlock; upload the slave "
          "package like a master update (begin, chunks, command 1 finish: size and "
          "SHA-256 are checked, nothing is unpacked on the master); write `target`; "
          "command 3 starts forwarding it over CAN in the background (refused while "
          "charge/discharge relays are closed; they are then held open until the end). "
          "Poll `fwd_phase`, `fwd_progress` and `fwd_result`; `fwd_text` says why it "
          "stopped.  Each slave checks signature, SHA-256 and archive itself, reboots "
          "into the new slot and confirms it once back in normal operation, or rolls "
          "back (`docs/can_internal.md`, slave firmware update).\n\n")
    return "Slave firmware update (through the master)", md + section(rows), rows
