"""The register packing loop of ``comms.regs.rows`` as viper code.

Apart from ``rows`` because it is native code: a ``.mpy`` of it loads only
on the architecture it was compiled for, and ``rows`` falls back to its
bytecode loop when it does not load (as ``comms.crc16_viper``).
"""
import micropython


@micropython.viper
def pack_loop(vals, first, wide, key, n: int, off: int, end: int, out, pos: int):
    # Raw pointers, no bounds checks: ``rows.pack`` checks every range first.
    v = ptr32(vals)       # noqa: F821 - viper's buffer casts
    f = ptr16(first)      # noqa: F821
    w = ptr8(wide)        # noqa: F821
    k = ptr16(key)        # noqa: F821
    o = ptr8(out)         # noqa: F821
    i = 0
    while i < n:
        a = f[i]
        if a >= end:
            break
        if f[i + 1] > off:
            x = v[k[i]]
            if w[i]:
                if a >= off:
                    p = pos + 2 * (a - off)
                    o[p] = (x >> 24) & 0xFF
                    o[p + 1] = (x >> 16) & 0xFF
                if a + 1 < end:
                    p = pos + 2 * (a + 1 - off)
                    o[p] = (x >> 8) & 0xFF
                    o[p + 1] = x & 0xFF
            else:
                p = pos + 2 * (a - off)
                o[p] = (x >> 8) & 0xFF
                o[p + 1] = x & 0xFF
        i += 1


@micropython.viper
def copy_loop(dst, dpos: int, src, spos: int, n: int):
    # Raw pointers, no bounds checks: ``rows.copy`` checks both ranges first.
    d = ptr8(dst)         # noqa: F821
    s = ptr8(src)         # noqa: F821
    i = 0
    while i < n:
        d[dpos + i] = s[spos + i]
        i += 1


@micropython.viper
def cells_loop(mv, ok, n: int, off: int, count: int, out, pos: int):
    # comms.regs.cells: checks the ranges (mv, ok hold ``n`` cells at least).
    v = ptr16(mv)         # noqa: F821
    k = ptr8(ok)          # noqa: F821
    o = ptr8(out)         # noqa: F821
    p = pos
    i = off
    end = off + count
    while i < end:
        x = 0
        if i < n:
            x = v[i] if k[i] else 0xFFFF
        o[p] = x >> 8
        o[p + 1] = x & 0xFF
        p += 2
        i += 1
