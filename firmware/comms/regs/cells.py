"""Cell block: cell n (1-based) at offset n - 1, mV; 0 beyond the cell
count, 0xFFFF when the reading is invalid.  Read only."""
import sys

from micropython import const

from comms.regs import codes

MAX_CELLS = const(256)
SIZE = const(256)


def read(rm, off, count, out, pos):
    m = rm.bms.meas
    n = m.n_cells
    mv = m.cell_mv
    ok = m.cell_ok
    if off < 0 or off + count > SIZE or pos < 0 or pos + 2 * count > len(out) \
            or n > len(mv) or n > len(ok):
        raise IndexError("register range")   # the viper loop has raw pointers
    _loop(mv, ok, n, off, count, out, pos)
    return codes.EX_NONE


def read_bytecode(mv, ok, n, off, count, out, pos):
    # Inline, not put16: a call per register was half of a 16-register
    # read on an RP2040 (emulated).
    p = pos
    for i in range(off, off + count):
        v = 0
        if i < n:
            v = mv[i] if ok[i] else 0xFFFF
        out[p] = v >> 8
        out[p + 1] = v & 0xFF
        p += 2


# Viper on MicroPython (the bytecode loop took 18 us a register on an
# RP2040, emulated: 2.3 ms for a 125-register read), as comms.regs.rows.
_loop = read_bytecode
if sys.implementation.name == "micropython":
    try:
        from comms.regs.pack_viper import cells_loop as _loop
    except (ImportError, ValueError):
        pass


write = codes.read_only


def doc(start):
    from comms.regdoc import row
    rows = [row(start + k, "cell%d" % (k + 1), "u16", 1, "mV", "R", "", "",
                "Cell %d voltage (0 beyond the cell count, 0xFFFF invalid)" % (k + 1))
            for k in range(MAX_CELLS)]
    md = ("Cell *n* (1-based) at `0x%04X + n - 1`, %d registers, u16 mV; 0 beyond the "
          "configured cell count, 0xFFFF when the reading is invalid.\n" % (start, MAX_CELLS))
    return "Cells", md, rows
