"""Register blocks laid out as a table of rows (monitor, status).

A row is ``(name, type, unit, description, key)``; ``u32``/``s32`` rows take
two registers (high word first), every other type one.  The block module
supplies ``value(ctx, key)``; this module places the values, so that a read
may start or end in the middle of a two-register row.
"""
from comms.packing import put16be as put16
from comms.regs import codes


def wide(typ):
    return typ == "u32" or typ == "s32"


def read(rows, value, ctx, off, count, out, pos):
    """Registers ``off .. off+count-1`` of ``rows`` into ``out[pos:]``."""
    end = off + count
    a = 0                        # register offset of row i
    for i in range(len(rows)):
        row = rows[i]
        w = wide(row[1])
        if a < end and a + (2 if w else 1) > off:
            v = value(ctx, row[4])
            if w:
                if a >= off:
                    put16(out, pos + 2 * (a - off), (v >> 16) & 0xFFFF)
                if a + 1 < end:
                    put16(out, pos + 2 * (a + 1 - off), v & 0xFFFF)
            else:
                put16(out, pos + 2 * (a - off), v & 0xFFFF)
        a += 2 if w else 1
        if a >= end:
            break
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
