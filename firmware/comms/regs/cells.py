"""Cell block: cell n (1-based) at offset n - 1, mV; 0 beyond the cell
count, 0xFFFF when the reading is invalid.  Read only."""
from micropython import const

from comms.regs import codes

MAX_CELLS = const(256)
SIZE = const(256)


def read(rm, off, count, out, pos):
    m = rm.bms.meas
    n = m.n_cells
    mv = m.cell_mv
    ok = m.cell_ok
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
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row
    rows = [row(start + k, "cell%d" % (k + 1), "u16", 1, "mV", "R", "", "",
                "Cell %d voltage (0 beyond the cell count, 0xFFFF invalid)" % (k + 1))
            for k in range(MAX_CELLS)]
    md = ("Cell *n* (1-based) at `0x%04X + n - 1`, %d registers, u16 mV; 0 beyond the "
          "configured cell count, 0xFFFF when the reading is invalid.\n" % (start, MAX_CELLS))
    return "Cells", md, rows
