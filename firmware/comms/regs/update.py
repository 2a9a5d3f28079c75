"""Firmware update window: drives ``bms.update.Updater`` (the same staging
as BLE or a local call).  Writes need the user role (or factory):

  begin     FC16 of 18 registers: size u32, SHA-256 (16 registers, first
            byte in the high byte); 34 registers: the same plus the 32-byte
            HMAC signature.  Reading returns size and SHA-256 of the transfer
            in progress, so a tool can resume it after a broken link.
  command   FC06: 1 finish (verify, unpack into the inactive slot; runs in
            the background, poll ``status``), 2 abort (also a running
            finish), 3 restart to apply (only when a package is staged).
  status    idle / receiving / staged / error / verifying / unpacking, next
            expected offset, size, progress per mille, error code
            (``bms.update.E_*``) and reason text, the slot marker (ok /
            pending / trial), active slot, finish progress per mille.
  chunk     FC16: offset u32, byte count, data (first byte in the high
            byte): at most 123 - 3 = 120 registers = 240 bytes per write.
            Chunks go in order; a retransmission is acknowledged, a gap is
            refused with exception 03 and the reason names the offset to
            resume from (also readable in ``offset``).

A refusal answers exception 03 (01 when locked, 06 while a restart is
pending) and the reason is copied to the auth block's error registers too,
so ``bmsctl`` explains update refusals like any other.

``finish`` only starts the incremental finish (``Updater.finish_start``:
size and SHA-256 of what was received are checked at once, a refusal is
exception 03); the app's loop then runs one bounded step per pass
(``Updater.poll``), so the control loop keeps running and feeding the
watchdog.  ``status`` reads verifying / unpacking meanwhile,
``finish_progress`` the per mille, and ends at staged or error (with
``error`` and ``error_text``).  A client polls the status until then.
The relays stay as they are meanwhile (the steps run between control
cycles, protection keeps running); the restart that applies the update
opens them.  A reset during the finish leaves the old firmware active: the
slot is switched only by the last step.

``UpdateWindow`` is built for a port the first time a request touches the
block (``window``): the updater behind it too (``RegisterMap.updater_of``).
The slave update window (``comms.regs.slave_update``) shares its upload
half; ``REGS`` describes both windows, so their common layout is written
down once.
"""
from micropython import const

from bms import update as U
from comms.packing import get16be as _g16, put16be as put16
from comms.regs import codes

UP_BEGIN = const(0x00)      # size u32, sha256 16 regs, [signature 16 regs]
UP_CMD = const(0x22)
UP_STATUS = const(0x23)
UP_OFFSET = const(0x24)     # u32
UP_SIZE = const(0x26)       # u32
UP_PROGRESS = const(0x28)
UP_ERROR = const(0x29)
UP_FW_STATE = const(0x2A)
UP_ACTIVE = const(0x2B)
_UP_TRIES = const(0x2C)
UP_FIN_PM = const(0x2D)
UP_ERR_TEXT = const(0x30)   # 32 regs ASCII
UP_CHUNK = const(0x80)      # offset u32, nbytes, data
UP_TEXT_REGS = const(32)
_UP_CHUNK_DATA = const(240)
SIZE = const(0x80 + 3 + 120)

# The slave update window's own registers (comms.regs.slave_update); here
# so that REGS, the one table of both windows, is a compile-time constant.
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

UC_FINISH = const(1)
UC_ABORT = const(2)
UC_RESTART = const(3)
UC_NAMES = ("", "finish", "abort", "restart")

US_IDLE = const(0)
US_RECEIVING = const(1)
US_STAGED = const(2)
US_ERROR = const(3)
US_VERIFYING = const(4)   # finish running: re-hashing, checking the archive
US_UNPACKING = const(5)   # finish running: clearing the slot, extracting, committing
US_NAMES = ("idle", "receiving", "staged", "error", "verifying", "unpacking")

# Both update windows, by offset: name, offset, registers, type, access, then
# the description in the firmware update window and in the slave update
# window (None: not in that window).  {key}: see comms.regdoc.
REGS = (
    ("begin_size", UP_BEGIN, 2, "u32", "R/W user",
     "Begin: package size in bytes (FC16 of 18 registers with sha256, 34 with signature)",
     "Begin upload: package size (FC16 of 18 registers with sha256, 34 with signature)"),
    ("begin_sha256", UP_BEGIN + 2, 16, "bytes", "R/W user", "Begin: SHA-256 of the package",
     "Begin: SHA-256 of the package"),
    ("begin_signature", UP_BEGIN + 18, 16, "bytes", "W user",
     "Begin: HMAC-SHA256(device key, 'BMSFW1' | size u32 LE | sha256), if the device has a key",
     "Begin: HMAC-SHA256 signature, checked by each slave with its own key"),
    ("command", UP_CMD, 1, "u16", "W user",
     "1 finish (verify and unpack in the background: poll status), 2 abort, "
     "3 restart to apply (only when staged)",
     "1 finish (check the upload), 2 abort (upload and forwarding), 3 start forwarding"),
    ("status", UP_STATUS, 1, "u16", "R", "Transfer: {update_states}", "Upload: {update_states}"),
    ("offset", UP_OFFSET, 2, "u32", "R", "Next byte offset expected (resume from here)",
     "Upload: next byte offset expected"),
    ("size", UP_SIZE, 2, "u32", "R", "Declared size of the transfer", "Upload: declared size"),
    ("progress", UP_PROGRESS, 1, "u16", "R", "Received, per mille",
     "Upload: received, per mille"),
    ("error", UP_ERROR, 1, "u16", "R", "Last refusal: {update_errors}",
     "Upload: last refusal (bms.update error code)"),
    ("fw_state", UP_FW_STATE, 1, "u16", "R",
     "Slot marker: {fw_states} (pending: swapped in at the next boot;"
     " staged: a slave module's, swapped in only after the master's APPLY)", None),
    ("target", SU_TARGET, 1, "u16", "R/W user", None,
     "Slave to update: 1..16, 255 = all in turn"),
    ("active_slot", UP_ACTIVE, 1, "s16", "R", "Running slot: -1 factory (root), 0 a, 1 b", None),
    ("tries", _UP_TRIES, 1, "u16", "R", "Boots of the new firmware on trial", None),
    ("finish_progress", UP_FIN_PM, 1, "u16", "R",
     "Finish (verify, check, unpack), per mille; 1000 when staged", None),
    ("error_text", UP_ERR_TEXT, UP_TEXT_REGS, "ascii", "R", "Reason for the last refusal",
     "Reason for the last refused write"),
    ("fwd_phase", SU_PHASE, 1, "u16", "R", None, "Forwarding: {fwd_phases}"),
    ("fwd_slave", SU_ADDR, 1, "u16", "R", None, "Slave being updated (or the last one)"),
    ("fwd_progress", SU_PROGRESS, 1, "u16", "R", None, "Its transfer, per mille"),
    ("fwd_bytes", SU_BYTES, 2, "u32", "R", None, "Package bytes it acknowledged"),
    ("fwd_retransmits", SU_RETX, 1, "u16", "R", None, "Segments sent again (loss, time-outs)"),
    ("fwd_error", SU_ERROR, 1, "u16", "R", None,
     "Why it stopped: bms.update error code from the slave, 16+ protocol (0: see text)"),
    ("fwd_fw_state", SU_FW, 1, "u16", "R", None,
     "Last FW state byte from the slave: bits 0-1 marker, 2-3 slot + 1, 4-7 tries"),
    ("fwd_result", SU_RESULT, 16, "u16", "R", None,
     "Result per slave (slave 1 first): {fwd_results}"),
    ("chunk_offset", UP_CHUNK, 2, "u32", "W user", "Chunk: byte offset of the data",
     "Upload chunk: byte offset"),
    ("chunk_bytes", UP_CHUNK + 2, 1, "u16", "W user", "Chunk: number of data bytes (1..240)",
     "Upload chunk: data bytes (1..240)"),
    ("chunk_data", UP_CHUNK + 3, 120, "bytes", "W user",
     "Chunk: data, two bytes per register, first byte high", "Upload chunk: data"),
    ("fwd_text", SU_TEXT, SU_TEXT_REGS, "ascii", "R", None, "Why the forwarding stopped"),
)

LOCKED = "locked: firmware update needs the user or factory role"


class UpdateWindow:
    """The update block of one register map (one port)."""

    def __init__(self, updater):
        self.up = updater
        self._data = bytearray(_UP_CHUNK_DATA)
        self._mv = memoryview(self._data)
        self.err_text = bytearray(2 * UP_TEXT_REGS)
        self._shown = None   # the Updater.last_error that err_text shows

    def _status(self):
        up = self.up
        if up is None:
            return US_IDLE
        if up._f is not None:
            return US_RECEIVING
        if up.phase:
            return US_VERIFYING if up.phase <= U.PH_CHECK else US_UNPACKING
        if up.last_error is not None:
            return US_ERROR
        if up.state == U.ST_PENDING:
            return US_STAGED
        return US_IDLE

    def reg(self, o):
        up = self.up
        if up is None:
            return 0
        if o < UP_BEGIN + 18:
            if up._f is None:
                return 0
            if o < 2:
                return (up.size >> 16) & 0xFFFF if o == 0 else up.size & 0xFFFF
            d = up._digest
            j = 2 * (o - 2)
            return (d[j] << 8) | d[j + 1]
        if o == UP_STATUS:
            return self._status()
        if o == UP_OFFSET:
            return (up.offset >> 16) & 0xFFFF
        if o == UP_OFFSET + 1:
            return up.offset & 0xFFFF
        if o == UP_SIZE:
            return (up.size >> 16) & 0xFFFF
        if o == UP_SIZE + 1:
            return up.size & 0xFFFF
        if o == UP_PROGRESS:
            return up.offset * 1000 // up.size if up.size else 0
        if o == UP_ERROR:
            return up.last_error[0] if up.last_error is not None else 0
        if o == UP_FW_STATE:
            return up.state
        if o == UP_ACTIVE:
            return up.active & 0xFFFF
        if o == _UP_TRIES:
            return up.tries
        if o == UP_FIN_PM:
            return up.finish_pm()
        if UP_ERR_TEXT <= o < UP_ERR_TEXT + UP_TEXT_REGS:
            le = up.last_error
            if le is not None and le is not self._shown:
                # A refusal in a finish step (no request to answer it): show it here.
                self._shown = le
                self._set_text("update refused (%s): %s" % (U.ERROR_NAMES[le[0]], le[1]))
            t = self.err_text
            j = 2 * (o - UP_ERR_TEXT)
            return (t[j] << 8) | t[j + 1]
        return 0

    def read(self, rm, off, count, out, pos):
        for k in range(count):
            put16(out, pos + 2 * k, self.reg(off + k))
        return codes.EX_NONE

    def _set_text(self, text):
        if isinstance(text, str):
            text = text.encode()
        t = self.err_text
        for i in range(len(t)):
            t[i] = text[i] if i < len(text) else 0

    def write(self, rm, off, count, data, pos):
        """Exception code; refusals go through ``rm.refuse`` (last-error registers)."""
        code = self._write(rm, off, count, data, pos)
        if code:
            self.err_text[:] = rm.err_text[:len(self.err_text)]
        if self.up is not None:
            self._shown = self.up.last_error
        return code

    def _write(self, rm, off, count, data, pos):
        up = self.up
        if up is None:
            return rm.refuse(codes.EX_ADDRESS, -1, "no firmware update on this board")
        if not rm.allowed(codes.ROLE_USER):
            return rm.refuse(codes.EX_FUNCTION, -1, LOCKED)
        try:
            if off == UP_BEGIN and count in (18, 34):
                size = (_g16(data, pos) << 16) | _g16(data, pos + 2)
                digest = bytes(data[pos + 4:pos + 36])
                sig = bytes(data[pos + 36:pos + 68]) if count == 34 else None
                self._set_text(b"")
                up.begin(size, digest, sig)
                return codes.EX_NONE
            if off == UP_CHUNK and 3 < count:
                o = (_g16(data, pos) << 16) | _g16(data, pos + 2)
                n = _g16(data, pos + 4)
                if n < 1 or n > 2 * (count - 3) or 2 * (count - 3) - n > 1:
                    return rm.refuse(codes.EX_VALUE, -1, "chunk: byte count does not match the data")
                buf = self._data
                p = pos + 6
                for i in range(n):
                    buf[i] = data[p + i]
                up.chunk(o, self._mv[:n])
                return codes.EX_NONE
            if off == UP_CMD and count == 1:
                c = _g16(data, pos)
                if c == UC_FINISH:
                    if up.phase:
                        return codes.EX_NONE            # already running (a resent command)
                    # No relay change: the steps run between control cycles, so
                    # protection keeps running and the load keeps its power; the
                    # restart that applies the update opens the relays.
                    self._set_text(b"")
                    up.finish_start()             # the steps run from the app's loop
                    return codes.EX_NONE
                if c == UC_ABORT:
                    up.abort()
                    up.last_error = None
                    return codes.EX_NONE
                if c == UC_RESTART:
                    if up.phase:
                        return rm.refuse(codes.EX_BUSY, -1, "restart to apply: finish still running")
                    if up.state != U.ST_PENDING:
                        return rm.refuse(codes.EX_VALUE, -1, "restart to apply: no update staged")
                    from bms.core import ACCEPTED, CMD_RESTART
                    if rm.bms.request(CMD_RESTART, 1) != ACCEPTED:
                        return rm.refuse(codes.EX_BUSY, -1, "another command is still pending")
                    return codes.EX_NONE
                return rm.refuse(codes.EX_VALUE, -1, "update command %d unknown" % c)
        except U.UpdateError as e:
            return rm.refuse(codes.EX_VALUE, -1, "update refused (%s): %s"
                             % (U.ERROR_NAMES[e.code], e.msg))
        except OSError:
            up.abort()
            up.last_error = (U.E_FLASH, "flash error")
            return rm.refuse(codes.EX_VALUE, -1, "update refused (flash): flash error")
        return rm.refuse(codes.EX_ADDRESS, -1, "update: write begin (18/34 regs), chunk or command")


def window(rm):
    """This port's update window, built on first use (with the updater)."""
    w = rm.windows.get("update")
    if w is None:
        up = rm.updater
        if up is None and rm.updater_of is not None:
            up = rm.updater_of()
        w = UpdateWindow(up)
        rm.windows["update"] = w
    return w


def read(rm, off, count, out, pos):
    return window(rm).read(rm, off, count, out, pos)


def write(rm, off, count, data, pos):
    return window(rm).write(rm, off, count, data, pos)


def doc_rows(start, col):
    """CSV rows of one window: ``col`` 5 the firmware update, 6 the slave update."""
    from comms.regdoc import row
    return [row(start + r[1], r[0], r[3], r[2], "", r[4], "", "", r[col])
            for r in REGS if r[col] is not None]


def doc(start):
    from comms.regdoc import section
    rows = doc_rows(start, 5)
    md = ("Sequence (`bmsctl update PKG`): unlock (user or factory role); FC16 of the begin "
          "registers (size, SHA-256 and, when the device has a key, the signature); FC16 "
          "chunks of up to 240 bytes in order (offset, byte count, data); command 1 finish "
          "(size and SHA-256 of what was received are checked at once, "
          "then the BMS re-reads the staged file, checks the archive and only then unpacks "
          "it into the inactive slot, in bounded steps of its main loop: poll `status` "
          "(verifying, unpacking) and `finish_progress` until it reads staged or error); "
          "command 3 restarts into it.  A refusal answers exception 03 and `error_text` "
          "(also the auth block's) gives the reason; after a gap `offset` says where to "
          "resume.  The running firmware is never written; a new one that does not reach "
          "the armed state rolls back (`firmware/bms/update.py`).\n\n")
    return "Firmware update", md + section(rows), rows
