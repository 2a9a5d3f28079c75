"""Register blocks laid out as a table of rows (monitor, status).

A row is ``(name, type, unit, description, key)``; ``u32``/``s32`` rows take
two registers (high word first), every other type one.  The block module
supplies ``value(ctx, key)``; this module places the values, so that a read
may start or end in the middle of a two-register row.
"""
from array import array

from comms.regs import codes


def wide(typ):
    return typ == "u32" or typ == "s32"


class Layout:
    """Where each row of a table sits, worked out once (at import): walking
    the row tuples and comparing type names for every read took 60 us a row
    on an RP2040 (emulated), 3.7 ms of a 61-register monitor read."""

    def __init__(self, rows):
        n = len(rows)
        self.first = array("H", [0] * (n + 1))   # register offset of row i; [n]: the size
        self.wide = bytearray(n)
        self.key = array("H", [r[4] for r in rows])
        a = 0
        for i in range(n):
            self.first[i] = a
            w = wide(rows[i][1])
            self.wide[i] = 1 if w else 0
            a += 2 if w else 1
        self.first[n] = a


def read(lay, value, ctx, off, count, out, pos):
    """Registers ``off .. off+count-1`` of the table laid out as ``lay`` into
    ``out[pos:]``; ``value(ctx, key)`` gives a row's value."""
    end = off + count
    first = lay.first
    wd = lay.wide
    key = lay.key
    n = len(wd)
    i = 0
    while i < n and first[i + 1] <= off:     # the row holding register ``off``
        i += 1
    while i < n:
        a = first[i]
        if a >= end:
            break
        v = value(ctx, key[i])
        if wd[i]:
            if a >= off:
                p = pos + 2 * (a - off)
                out[p] = (v >> 24) & 0xFF
                out[p + 1] = (v >> 16) & 0xFF
            if a + 1 < end:
                p = pos + 2 * (a + 1 - off)
                out[p] = (v >> 8) & 0xFF
                out[p + 1] = v & 0xFF
        else:
            p = pos + 2 * (a - off)
            out[p] = (v >> 8) & 0xFF
            out[p + 1] = v & 0xFF
        i += 1
    return codes.EX_NONE


def offsets(rows):
    """Register offset of each row (host tools, tests)."""
    out = []
    a = 0
    for row in rows:
        out.append(a)
        a += 2 if wide(row[1]) else 1
    return out


def doc(title, rows, start):
    from comms.regdoc import row, section
    offs = offsets(rows)
    out = [row(start + offs[i], r[0], r[1], 2 if wide(r[1]) else 1, r[2], "R", "", "", r[3])
           for i, r in enumerate(rows)]
    return title, section(out), out
