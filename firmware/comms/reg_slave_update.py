"""Modbus window for updating slave modules through the master (issue 7).

A second update window (``A_SLAVE_UPDATE``) laid out like the master's own
(``comms.reg_update``) so the same tool code drives both: begin, command,
status, offset, size, progress, error code and text, chunk at the same
offsets.  The upload goes into ``bms.pkgstore.PackageStore`` on the master's
flash (nothing is unpacked on the master); ``start`` hands it to
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
"""
from micropython import const

from bms import update as U
from comms import reg_update as RU
from comms.packing import get16be as _g16

SU_TARGET = const(0x2A)
SU_PHASE = const(0x50)
SU_ADDR = const(0x51)
SU_PROGRESS = const(0x52)
SU_BYTES = const(0x53)      # u32
SU_RETX = const(0x55)
SU_ERROR = const(0x56)
SU_FW = const(0x57)
SU_RESULT = const(0x58)     # 16 registers, slave 1 first
SU_TEXT = const(0x100)      # 64 registers ASCII
SU_TEXT_REGS = const(64)
SIZE = const(0x140)

SC_START = const(3)
TARGET_ALL = const(0xFF)

# Mirrors of comms.slave_update (a single board need not import it);
# host_tests/upy/test_can_fwupdate.py checks that they agree.
PHASE_NAMES = ("idle", "begin", "sending", "finishing", "applying", "rebooting", "confirming",
               "done", "error")
RESULT_NAMES = ("none", "queued", "updating", "updated", "refused", "rolled_back", "no_answer",
                "aborted")

# The master window's offsets (comms.reg_update.UP_*), as literal copies so
# REGS is a compile-time constant; host_tests/test_const_tables.py checks them.
_UP_BEGIN = const(0x00)
_UP_CMD = const(0x22)
_UP_STATUS = const(0x23)
_UP_OFFSET = const(0x24)
_UP_SIZE = const(0x26)
_UP_PROGRESS = const(0x28)
_UP_ERROR = const(0x29)
_UP_ERR_TEXT = const(0x30)
_UP_TEXT_REGS = const(32)
_UP_CHUNK = const(0x80)


# name, offset, registers, type, access, description ({key}: see comms.regdoc)
REGS = (
    ("begin_size", _UP_BEGIN, 2, "u32", "R/W user",
     "Begin upload: package size (FC16 of 18 registers with sha256, 34 with signature)"),
    ("begin_sha256", _UP_BEGIN + 2, 16, "bytes", "R/W user", "Begin: SHA-256 of the package"),
    ("begin_signature", _UP_BEGIN + 18, 16, "bytes", "W user",
     "Begin: HMAC-SHA256 signature, checked by each slave with its own key"),
    ("command", _UP_CMD, 1, "u16", "W user",
     "1 finish (check the upload), 2 abort (upload and forwarding), 3 start forwarding"),
    ("status", _UP_STATUS, 1, "u16", "R", "Upload: {update_states}"),
    ("offset", _UP_OFFSET, 2, "u32", "R", "Upload: next byte offset expected"),
    ("size", _UP_SIZE, 2, "u32", "R", "Upload: declared size"),
    ("progress", _UP_PROGRESS, 1, "u16", "R", "Upload: received, per mille"),
    ("error", _UP_ERROR, 1, "u16", "R", "Upload: last refusal (bms.update error code)"),
    ("target", SU_TARGET, 1, "u16", "R/W user", "Slave to update: 1..16, 255 = all in turn"),
    ("error_text", _UP_ERR_TEXT, _UP_TEXT_REGS, "ascii", "R",
     "Reason for the last refused write"),
    ("fwd_phase", SU_PHASE, 1, "u16", "R", "Forwarding: {fwd_phases}"),
    ("fwd_slave", SU_ADDR, 1, "u16", "R", "Slave being updated (or the last one)"),
    ("fwd_progress", SU_PROGRESS, 1, "u16", "R", "Its transfer, per mille"),
    ("fwd_bytes", SU_BYTES, 2, "u32", "R", "Package bytes it acknowledged"),
    ("fwd_retransmits", SU_RETX, 1, "u16", "R", "Segments sent again (loss, time-outs)"),
    ("fwd_error", SU_ERROR, 1, "u16", "R",
     "Why it stopped: bms.update error code from the slave, 16+ protocol (0: see text)"),
    ("fwd_fw_state", SU_FW, 1, "u16", "R",
     "Last FW state byte from the slave: bits 0-1 marker, 2-3 slot + 1, 4-7 tries"),
    ("fwd_result", SU_RESULT, 16, "u16", "R",
     "Result per slave (slave 1 first): {fwd_results}"),
    ("chunk_offset", _UP_CHUNK, 2, "u32", "W user", "Upload chunk: byte offset"),
    ("chunk_bytes", _UP_CHUNK + 2, 1, "u16", "W user", "Upload chunk: data bytes (1..240)"),
    ("chunk_data", _UP_CHUNK + 3, 120, "bytes", "W user", "Upload chunk: data"),
    ("fwd_text", SU_TEXT, SU_TEXT_REGS, "ascii", "R", "Why the forwarding stopped"),
)


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
        from comms.registers import EX_ADDRESS, EX_FUNCTION, EX_NONE, EX_VALUE, ROLE_USER
        if self.up is None or self.fwd is None:
            return rm._error(EX_ADDRESS, -1, "no slave modules to update on this board")
        if not rm._allowed(ROLE_USER):
            return rm._error(EX_FUNCTION, -1, RU.LOCKED)
        if off == SU_TARGET and count == 1:
            t = _g16(data, pos)
            if t != TARGET_ALL and not 1 <= t <= 16:
                return rm._error(EX_VALUE, -1, "target: slave 1..16 or 255 (all)")
            self.target = t
            return EX_NONE
        if off == RU.UP_CMD and count == 1:
            c = _g16(data, pos)
            now = rm.bms.clock.ticks_ms() if rm.bms is not None else 0
            try:
                if c == RU.UC_FINISH:
                    if self.fwd.busy():
                        return rm._error(EX_VALUE, -1, "a slave update is running: abort first")
                    self.up.finish()
                    return EX_NONE
                if c == RU.UC_ABORT:
                    self.up.abort()
                    self.up.last_error = None
                    self.fwd.abort(now)
                    return EX_NONE
                if c == SC_START:
                    self.fwd.start(self.target, now)
                    return EX_NONE
            except U.UpdateError as e:
                return rm._error(EX_VALUE, -1, "slave update refused (%s): %s"
                                 % (U.ERROR_NAMES[e.code], e.msg))
            return rm._error(EX_VALUE, -1, "slave update command %d unknown" % c)
        if off == RU.UP_BEGIN and self.fwd.busy():
            return rm._error(EX_VALUE, -1, "a slave update is running: abort first")
        return RU.UpdateWindow._write(self, rm, off, count, data, pos)
