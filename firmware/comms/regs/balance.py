"""Per-cell balancing block, read only: the balancer's state, the
balancing current setting, and per cell the charge bled off since boot.

Register 2 + i is cell i + 1: its bleed time (``Balancer.on_count``, in
sweep intervals) times ``bal_current``, in mAh (saturates at 65535).  Which
cells bleed right now is the monitor's balance_0..15 masks."""
from micropython import const

from bms.params import P_BAL_CURRENT
from comms.regs import codes

BL_STATE = const(0)
BL_CURRENT = const(1)
BL_CELLS = const(2)
MAX_CELLS = const(256)   # comms.regs.cells.MAX_CELLS
SIZE = const(258)


def read(rm, off, count, out, pos):
    # One loop, no call per register: three calls a cell (the bleed time,
    # the mAh, the placing) took 5 ms for 125 registers on an RP2040
    # (emulated).  Whole seconds / 36 before the current, so the product
    # stays a small int for years of balancing.
    b = rm.bms
    bal = b.balancer
    ma = b.params[P_BAL_CURRENT]
    n = b.meas.n_cells
    on = bal.on_count
    per = bal.period_ms
    p = pos
    for o in range(off, off + count):
        v = 0
        if o == BL_STATE:
            v = bal.state
        elif o == BL_CURRENT:
            v = ma
        elif o - BL_CELLS < n:
            v = (on[o - BL_CELLS] * per // 1000 // 36) * ma // 100
            if v > 0xFFFF:
                v = 0xFFFF
        out[p] = (v >> 8) & 0xFF
        out[p + 1] = v & 0xFF
        p += 2
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + BL_STATE, "bal_state", "u16", 1, "enum", "R", "", "",
                "Balancer state: {bal_states}"),
            row(start + BL_CURRENT, "bal_current", "u16", 1, "mA", "R", "", "",
                "Balancing current setting (parameter bal_current)"),
            row(start + BL_CELLS, "cell1_balanced", "u16", 1, "mAh", "R", "", "",
                "Charge bled from cell 1 since boot; cell i at +i-1 (up to 256 cells)")]
    return "Per-cell balancing", section(rows), rows
