"""Register blocks laid out as a table of rows (monitor, status).

A row is ``(name, type, unit, description, key)``; ``u32``/``s32`` rows take
two registers (high word first), every other type one.  The block module
fills every row's value into an array indexed by key (``values``), in one
function; this module places them, so that a read may start or end in the
middle of a two-register row.

Why one fill and not a function per value: a Python call costs 15-30 us on
an RP2040 (emulated), and asking for the 57 values of the monitor block one
by one took 3.7 ms, most of a reply's build.  On MicroPython the placing is
viper code (``comms.regs.pack_viper``); the bytecode loop stays for CPython
and wherever the native code does not load.
"""
import sys
from array import array

from comms.regs import codes

_loop = None
_copy = None
if sys.implementation.name == "micropython":
    try:
        from comms.regs.pack_viper import copy_loop as _copy
        from comms.regs.pack_viper import pack_loop as _loop
    except (ImportError, ValueError):   # no viper, or native code of another arch
        pass
# Values are machine words for the viper loop (it reads them 32 bits at a
# time; a u32 above 2**31 wraps and still puts the right bytes); CPython's
# 'i' refuses those, so the bytecode loop gets 64-bit ones.
_TYPE = "i" if _loop is not None else "q"


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
        self.size = a
        self.keys = max(self.key) + 1 if n else 0


def flat(n):
    """The layout of ``n`` one-register rows, row ``k`` at offset ``k`` with key ``k``."""
    lay = Layout(())
    lay.first = array("H", range(n + 1))
    lay.wide = bytearray(n)
    lay.key = array("H", range(n))
    lay.size = n
    lay.keys = n
    return lay


def values(lay):
    """The array a block fills with its rows' values, indexed by key."""
    return array(_TYPE, [0] * lay.keys)


def pack(lay, vals, off, count, out, pos):
    """Registers ``off .. off+count-1`` of the table laid out as ``lay`` into
    ``out[pos:]``, big-endian; ``vals[key]`` is each row's value.  Allocates
    nothing."""
    end = off + count
    # The viper loop writes through raw pointers: every range is checked here.
    if off < 0 or count < 0 or end > lay.size or pos < 0 or pos + 2 * count > len(out) \
            or len(vals) < lay.keys:
        raise IndexError("register range")
    _loop(vals, lay.first, lay.wide, lay.key, len(lay.wide), off, end, out, pos)
    return codes.EX_NONE


def pack_bytecode(vals, first, wide, key, n, off, end, out, pos):
    """The placing loop in bytecode (CPython; the reference for the viper one)."""
    i = 0
    while i < n and first[i + 1] <= off:     # the row holding register ``off``
        i += 1
    while i < n:
        a = first[i]
        if a >= end:
            break
        v = vals[key[i]]
        if wide[i]:
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


def copy_bytecode(dst, dpos, src, spos, n):
    for i in range(n):
        dst[dpos + i] = src[spos + i]


if _loop is None:
    _loop = pack_bytecode
    _copy = copy_bytecode


_ZERO = bytes(256)      # the source of zero() (every block's gaps share it)


def zero(dst, pos, n):
    """``dst[pos:pos+n] = 0`` without a slice (allocation-free)."""
    while n > 0:
        k = n if n < len(_ZERO) else len(_ZERO)
        copy(dst, pos, _ZERO, 0, k)
        pos += k
        n -= k


def fields(table, size, ctx, text, num, off, count, out, pos):
    """Registers ``off .. off+count-1`` of a block of fields into ``out[pos:]``:
    ``table`` rows are ``(name, offset, registers, type, ...)`` in address
    order, an ``ascii`` field's bytes are ``text(ctx, name, registers)``,
    any other field is one register, ``num(ctx, name)``; registers between
    the fields read 0.  Each field the read covers is copied at once (a
    field lookup per register took the identity block 2.3 ms and the names
    block 6.8 ms on an RP2040, emulated)."""
    end = off + count
    if off < 0 or end > size:
        raise IndexError("register range")
    zero(out, pos, 2 * count)
    for row in table:
        foff = row[1]
        if foff >= end:
            break
        n = row[2]
        a = foff if foff > off else off
        e = foff + n if foff + n < end else end
        if a < e:
            p = pos + 2 * (a - off)
            if row[3] == "ascii":
                copy(out, p, text(ctx, row[0], n), 2 * (a - foff), 2 * (e - a))
            else:
                v = num(ctx, row[0])
                out[p] = (v >> 8) & 0xFF
                out[p + 1] = v & 0xFF
    return codes.EX_NONE


def copy(dst, dpos, src, spos, n):
    """``dst[dpos:dpos+n] = src[spos:spos+n]`` without a slice (allocation-free;
    a byte loop in bytecode took 5 us a byte on an RP2040, emulated)."""
    if n < 0 or dpos < 0 or spos < 0 or dpos + n > len(dst) or spos + n > len(src):
        raise IndexError("copy range")
    _copy(dst, dpos, src, spos, n)


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
