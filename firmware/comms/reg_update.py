"""Modbus windows of issue 7: firmware update and the persistent event log.

Both are blocks of the one register map (``comms.registers`` dispatches to
them); they are here so the map module stays readable.  The update window
drives ``bms.update.Updater`` (the same staging as BLE or a local call), the
log window reads ``bms.persistlog.PersistLog`` from flash.

Update window (``A_UPDATE``), writes need the user role (or factory):

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
Every relay is opened first all the same: the finish is the one moment a
running system writes a lot of flash (erases stall an RP2040's XIP), and a
pack must not be left carrying current through an operator's update
session unnoticed; the next cycles reclose through precharge once fresh
data arrive.  A reset during the finish leaves the old firmware active: the
slot is switched only by the last step.

Log window (``A_PLOG``), no role needed (reading):

  count, next sequence number, index (R/W: the first record shown), then
  ``PLOG_WINDOW`` records of ``PLOG_REC_REGS`` registers each: record
  ``index + k`` at ``A_PLOG + PL_REC + PLOG_REC_REGS * k``.  Beyond the last
  record the registers read 0 (seq 0 = no record).
"""
from micropython import const

from bms import update as U
from comms.packing import get16be as _g16

# ---- update window -----------------------------------------------------------
UP_BEGIN = const(0x00)      # size u32, sha256 16 regs, [signature 16 regs]
UP_CMD = const(0x22)
UP_STATUS = const(0x23)
UP_OFFSET = const(0x24)     # u32
UP_SIZE = const(0x26)       # u32
UP_PROGRESS = const(0x28)
UP_ERROR = const(0x29)
UP_FW_STATE = const(0x2A)
UP_ACTIVE = const(0x2B)
UP_TRIES = const(0x2C)
UP_FIN_PM = const(0x2D)
UP_ERR_TEXT = const(0x30)   # 32 regs ASCII
UP_CHUNK = const(0x80)      # offset u32, nbytes, data
UP_TEXT_REGS = const(32)
UP_CHUNK_DATA = const(240)
UPDATE_SIZE = const(0x80 + 3 + 120)

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

# name, offset, registers, type, access, description ({key}: see comms.regdoc)
UPDATE_REGS = (
    ("begin_size", UP_BEGIN, 2, "u32", "R/W user",
     "Begin: package size in bytes (FC16 of 18 registers with sha256, 34 with signature)"),
    ("begin_sha256", UP_BEGIN + 2, 16, "bytes", "R/W user", "Begin: SHA-256 of the package"),
    ("begin_signature", UP_BEGIN + 18, 16, "bytes", "W user",
     "Begin: HMAC-SHA256(device key, 'BMSFW1' | size u32 LE | sha256), if the device has a key"),
    ("command", UP_CMD, 1, "u16", "W user",
     "1 finish (verify and unpack in the background: poll status), 2 abort, "
     "3 restart to apply (only when staged)"),
    ("status", UP_STATUS, 1, "u16", "R",
     "Transfer: {update_states}"),
    ("offset", UP_OFFSET, 2, "u32", "R", "Next byte offset expected (resume from here)"),
    ("size", UP_SIZE, 2, "u32", "R", "Declared size of the transfer"),
    ("progress", UP_PROGRESS, 1, "u16", "R", "Received, per mille"),
    ("error", UP_ERROR, 1, "u16", "R",
     "Last refusal: {update_errors}"),
    ("fw_state", UP_FW_STATE, 1, "u16", "R",
     "Slot marker: {fw_states} (pending: swapped in at the next boot)"),
    ("active_slot", UP_ACTIVE, 1, "s16", "R", "Running slot: -1 factory (root), 0 a, 1 b"),
    ("tries", UP_TRIES, 1, "u16", "R", "Boots of the new firmware on trial"),
    ("finish_progress", UP_FIN_PM, 1, "u16", "R",
     "Finish (verify, check, unpack), per mille; 1000 when staged"),
    ("error_text", UP_ERR_TEXT, UP_TEXT_REGS, "ascii", "R", "Reason for the last refusal"),
    ("chunk_offset", UP_CHUNK, 2, "u32", "W user", "Chunk: byte offset of the data"),
    ("chunk_bytes", UP_CHUNK + 2, 1, "u16", "W user", "Chunk: number of data bytes (1..240)"),
    ("chunk_data", UP_CHUNK + 3, 120, "bytes", "W user",
     "Chunk: data, two bytes per register, first byte high"),
)

# ---- persistent log window -----------------------------------------------------
PL_COUNT = const(0)
PL_NEXT_SEQ = const(1)      # u32
PL_INDEX = const(3)
PL_REC = const(8)
PLOG_REC_REGS = const(20)
PLOG_WINDOW = const(6)
PLOG_SIZE = const(8 + 20 * 6)

# name, offset in the record, type, description (record = bms.persistlog.FIELDS)
PLOG_FIELDS = (
    ("seq", 0, "u32", "Sequence number (0: no record here)"),
    ("boot", 2, "u16", "Boot counter at the time"),
    ("kind", 3, "u16", "Kind: bms.eventlog kinds, 16+ persistent kinds (reset, update ...)"),
    ("t_ms", 4, "u32", "Time stamp, ms ticks of that boot"),
    ("a", 6, "s32", "First argument (fault id, relay, parameter index ...)"),
    ("b", 8, "s32", "Second argument"),
    ("current_ma", 10, "s32", "Snapshot: pack current, mA"),
    ("vmax_mv", 12, "u16", "Snapshot: highest cell, mV"),
    ("vmin_mv", 13, "u16", "Snapshot: lowest cell, mV"),
    ("vmax_idx", 14, "u16", "Snapshot: highest cell index (0-based)"),
    ("vmin_idx", 15, "u16", "Snapshot: lowest cell index (0-based)"),
    ("tmax_dc", 16, "s16", "Snapshot: hottest cell sensor, 0.1 degC"),
    ("tmin_dc", 17, "s16", "Snapshot: coldest cell sensor, 0.1 degC"),
    ("soc_pm", 18, "u16", "Snapshot: SOC, per mille"),
)
# Register offset of each PersistLog record tuple element (None: not shown).
_REC_AT = (0, 2, 3, 4, 6, 8, 10, 12, 13, 14, 15, 16, 17, 18)
_WIDE = (True, False, False, True, True, True, True, False, False, False, False, False, False,
         False)

LOCKED = "locked: firmware update needs the user or factory role"


class UpdateWindow:
    """The update block of one register map (one port)."""

    def __init__(self, updater):
        self.up = updater
        self._data = bytearray(UP_CHUNK_DATA)
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
        if o == UP_TRIES:
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

    def _set_text(self, text):
        if isinstance(text, str):
            text = text.encode()
        t = self.err_text
        for i in range(len(t)):
            t[i] = text[i] if i < len(text) else 0

    def write(self, rm, off, count, data, pos):
        """Exception code; refusals go through ``rm._error`` (last-error registers)."""
        code = self._write(rm, off, count, data, pos)
        if code:
            self.err_text[:] = rm.err_text[:len(self.err_text)]
        if self.up is not None:
            self._shown = self.up.last_error
        return code

    def _write(self, rm, off, count, data, pos):
        from comms.registers import EX_ADDRESS, EX_BUSY, EX_FUNCTION, EX_NONE, EX_VALUE, ROLE_USER
        up = self.up
        if up is None:
            return rm._error(EX_ADDRESS, -1, "no firmware update on this board")
        if not rm._allowed(ROLE_USER):
            return rm._error(EX_FUNCTION, -1, LOCKED)
        try:
            if off == UP_BEGIN and count in (18, 34):
                size = (_g16(data, pos) << 16) | _g16(data, pos + 2)
                digest = bytes(data[pos + 4:pos + 36])
                sig = bytes(data[pos + 36:pos + 68]) if count == 34 else None
                self._set_text(b"")
                up.begin(size, digest, sig)
                return EX_NONE
            if off == UP_CHUNK and 3 < count:
                o = (_g16(data, pos) << 16) | _g16(data, pos + 2)
                n = _g16(data, pos + 4)
                if n < 1 or n > 2 * (count - 3) or 2 * (count - 3) - n > 1:
                    return rm._error(EX_VALUE, -1, "chunk: byte count does not match the data")
                buf = self._data
                p = pos + 6
                for i in range(n):
                    buf[i] = data[p + i]
                up.chunk(o, self._mv[:n])
                return EX_NONE
            if off == UP_CMD and count == 1:
                c = _g16(data, pos)
                if c == UC_FINISH:
                    if up.phase:
                        return EX_NONE            # already running (a resent command)
                    # No relay change: the steps run between control cycles, so
                    # protection keeps running and the load keeps its power; the
                    # restart that applies the update opens the relays.
                    self._set_text(b"")
                    up.finish_start()             # the steps run from the app's loop
                    return EX_NONE
                if c == UC_ABORT:
                    up.abort()
                    up.last_error = None
                    return EX_NONE
                if c == UC_RESTART:
                    if up.phase:
                        return rm._error(EX_BUSY, -1, "restart to apply: finish still running")
                    if up.state != U.ST_PENDING:
                        return rm._error(EX_VALUE, -1, "restart to apply: no update staged")
                    from bms.core import ACCEPTED, CMD_RESTART
                    if rm.bms.request(CMD_RESTART, 1) != ACCEPTED:
                        return rm._error(EX_BUSY, -1, "another command is still pending")
                    return EX_NONE
                return rm._error(EX_VALUE, -1, "update command %d unknown" % c)
        except U.UpdateError as e:
            return rm._error(EX_VALUE, -1, "update refused (%s): %s"
                             % (U.ERROR_NAMES[e.code], e.msg))
        except OSError:
            up.abort()
            up.last_error = (U.E_FLASH, "flash error")
            return rm._error(EX_VALUE, -1, "update refused (flash): flash error")
        return rm._error(EX_ADDRESS, -1, "update: write begin (18/34 regs), chunk or command")


class PlogWindow:
    """The persistent-log block of one register map."""

    def __init__(self, plog):
        self.plog = plog
        self.index = 0
        self._i = -1
        self._r = None

    def reg(self, o):
        pl = self.plog
        if pl is None:
            return 0
        if o == PL_COUNT:
            n = len(pl)
            return n if n < 0xFFFF else 0xFFFF
        if o == PL_NEXT_SEQ:
            return (pl.next_seq >> 16) & 0xFFFF
        if o == PL_NEXT_SEQ + 1:
            return pl.next_seq & 0xFFFF
        if o == PL_INDEX:
            return self.index
        if o < PL_REC:
            return 0
        k = (o - PL_REC) // PLOG_REC_REGS
        f = (o - PL_REC) - k * PLOG_REC_REGS
        i = self.index + k
        if i != self._i:
            self._i = i
            try:
                self._r = pl.get(i)
            except (IndexError, OSError):
                self._r = None
        r = self._r
        if r is None:
            return 0
        for j in range(len(_REC_AT)):
            at = _REC_AT[j]
            if f == at:
                return (r[j] >> 16) & 0xFFFF if _WIDE[j] else r[j] & 0xFFFF
            if _WIDE[j] and f == at + 1:
                return r[j] & 0xFFFF
        return 0

    def read(self, off, count, out, pos):
        self._i = -1   # re-read from flash once per request
        for k in range(count):
            v = self.reg(off + k)
            out[pos + 2 * k] = (v >> 8) & 0xFF
            out[pos + 2 * k + 1] = v & 0xFF

    def write(self, rm, off, count, data, pos):
        from comms.registers import EX_ADDRESS, EX_NONE
        if off == PL_INDEX and count == 1:
            self.index = _g16(data, pos)
            return EX_NONE
        return rm._error(EX_ADDRESS, -1, "persistent log: only the index is writable")
