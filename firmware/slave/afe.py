"""Adapts the AFE driver and NTC channels of a slave board to ``slave.core``.

``slave.core.Slave`` wants ``read_cells(cell_mv, n)``, ``read_temps(temp_dc, n)``
with sentinels for broken sensors, ``balance(mask)`` and ``sleep(on)``; the
drivers (branch ``drivers``: drivers.afe.Afe subclasses, drivers.ntc.Ntc)
speak flags arrays and per-channel status.  Nothing here allocates per call.
"""
from bms.measurements import T_OK, T_SHORT
from comms import can_ids as C


class SlaveAfe:
    def __init__(self, afe, ntcs, max_cells=16):
        self.afe = afe
        self.ntcs = [n[0] if isinstance(n, tuple) else n for n in ntcs]
        self.flags = bytearray(max_cells)
        self.no_adjacent = getattr(afe, "balance_no_adjacent", True)
        self._cells = 0          # cell count the AFE is configured for
        # The chip's own stack voltage (mV) for the slave's wiring check, as
        # read_stack_mv() where the AFE has it (bound once: nothing allocated
        # per sample).
        f = getattr(afe, "read_stack_mv", None)
        if f is not None:
            self.read_stack_mv = f

    def read_cells(self, cell_mv, n):
        if n != self._cells:
            # The module's cell count (its settings or the master's CONFIG):
            # the AFE must know it, because with fewer than 16 cells the top
            # cell is wired to its last input (VC16), not the next one.
            # Allocates: at start-up and when the count changes.
            try:
                self.afe.configure({"cells": n})
            except NotImplementedError:
                pass
            self._cells = n
        self.afe.read_cells(cell_mv, n)

    def read_temps(self, temp_dc, n):
        ntcs = self.ntcs
        for i in range(n):
            if i >= len(ntcs):
                temp_dc[i] = C.TEMP_ABSENT
                continue
            ch = ntcs[i]
            st = ch.read()
            if st == T_OK:
                temp_dc[i] = ch.temp_dc
            elif st == T_SHORT:
                temp_dc[i] = C.TEMP_SHORT
            else:
                temp_dc[i] = C.TEMP_OPEN

    def balance(self, mask):
        if self.no_adjacent:
            # The master alternates odd/even cells; if a command still holds
            # neighbours, keep only the lower of each pair (bleed less, never more).
            mask &= ~(mask << 1)
        f = self.flags
        for i in range(len(f)):
            f[i] = (mask >> i) & 1
        self.afe.balance(f)

    def sleep(self, on):
        try:
            self.afe.set_mode(1 if on else 0)
        except NotImplementedError:
            pass
