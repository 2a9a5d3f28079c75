"""Persistent event log window: reads ``bms.persistlog.PersistLog`` from
flash; no role needed (the index is the only writable register).

  count, next sequence number, index (R/W: the first record shown), then
  ``PLOG_WINDOW`` records of ``PLOG_REC_REGS`` registers each: record
  ``index + k`` at offset ``PL_REC + PLOG_REC_REGS * k``.  Beyond the last
  record the registers read 0 (seq 0 = no record).
"""
from micropython import const

from comms.packing import get16be as _g16, put16be as put16
from comms.regs import codes, rows

PL_COUNT = const(0)
_PL_NEXT_SEQ = const(1)      # u32
PL_INDEX = const(3)
PL_REC = const(8)
PLOG_REC_REGS = const(20)
PLOG_WINDOW = const(6)
SIZE = const(8 + 20 * 6)

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


class PlogWindow:
    """The persistent-log block of one register map."""

    def __init__(self, plog):
        self.plog = plog
        self.index = 0
        self._img = bytearray(2 * SIZE)

    def read(self, rm, off, count, out, pos):
        # The block as an image, only the records the read covers taken
        # from flash (in one pass, each segment file opened once), then the
        # read's registers copied: a flash read and a field lookup per
        # register took 33 ms for 125 registers on an RP2040 (emulated).
        end = off + count
        if off < 0 or end > SIZE:
            raise IndexError("register range")
        img = self._img
        rows.zero(img, 0, len(img))
        pl = self.plog
        if pl is not None:
            n = len(pl)
            put16(img, 2 * PL_COUNT, n if n < 0xFFFF else 0xFFFF)
            put16(img, 2 * _PL_NEXT_SEQ, (pl.next_seq >> 16) & 0xFFFF)
            put16(img, 2 * (_PL_NEXT_SEQ + 1), pl.next_seq & 0xFFFF)
            put16(img, 2 * PL_INDEX, self.index)
            k0 = (off - PL_REC) // PLOG_REC_REGS if off > PL_REC else 0
            k1 = (end - 1 - PL_REC) // PLOG_REC_REGS + 1 if end > PL_REC else 0
            if k1 > k0:
                try:
                    recs = pl.window(self.index + k0, k1 - k0)
                except OSError:
                    recs = ()
                for k in range(len(recs)):
                    r = recs[k]
                    if r is not None:
                        _place(img, PL_REC + (k0 + k) * PLOG_REC_REGS, r)
        rows.copy(out, pos, img, 2 * off, 2 * count)
        return codes.EX_NONE

    def write(self, rm, off, count, data, pos):
        if off == PL_INDEX and count == 1:
            self.index = _g16(data, pos)
            return codes.EX_NONE
        return rm.refuse(codes.EX_ADDRESS, -1, "persistent log: only the index is writable")


def _place(img, at, r):
    """Record tuple ``r`` as registers from register ``at`` of ``img``."""
    for j in range(len(_REC_AT)):
        p = 2 * (at + _REC_AT[j])
        v = r[j]
        if _WIDE[j]:
            put16(img, p, (v >> 16) & 0xFFFF)
            put16(img, p + 2, v & 0xFFFF)
        else:
            put16(img, p, v & 0xFFFF)


def window(rm):
    """This port's log window, built on first use."""
    w = rm.windows.get("plog")
    if w is None:
        w = PlogWindow(rm.plog_source)
        rm.windows["plog"] = w
    return w


def read(rm, off, count, out, pos):
    return window(rm).read(rm, off, count, out, pos)


def write(rm, off, count, data, pos):
    return window(rm).write(rm, off, count, data, pos)


def doc(start):
    from comms.regdoc import row, section
    rows = [
        row(start + PL_COUNT, "plog_count", "u16", 1, "", "R", "", "",
            "Records on flash (record 0 is the oldest)"),
        row(start + _PL_NEXT_SEQ, "plog_next_seq", "u32", 2, "", "R", "", "",
            "Sequence number of the next record"),
        row(start + PL_INDEX, "plog_index", "u16", 1, "", "R/W", "", "",
            "Index of the first record shown in the window (no role needed)"),
    ]
    for name, off, typ, desc in PLOG_FIELDS:
        rows.append(row(start + PL_REC + off, "window0." + name, typ,
                        2 if typ in ("u32", "s32") else 1, "", "R", "", "",
                        desc + " (record index+k at +%d*k, k < %d)"
                        % (PLOG_REC_REGS, PLOG_WINDOW)))
    md = ("Write `plog_index`, then read up to %d records of %d registers from the window; "
          "the snapshot is taken when the event is logged (for a fault: at the trip).  "
          "`bmsctl log --persistent [--csv FILE]` reads it all.\n\n"
          % (PLOG_WINDOW, PLOG_REC_REGS))
    return "Persistent event log", md + section(rows), rows
