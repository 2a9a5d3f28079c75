"""Shared pieces for the SOC / balancing / heater / derating unit tests (MicroPython-compatible)."""
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER, T_OK, Measurements
from bms.params import CHEM_LFP, ParamSet

ROLES = (ROLE_POWER, ROLE_BALANCE, ROLE_CELL, ROLE_CELL)


class Snap:
    """A Measurements snapshot the test fills by hand."""

    def __init__(self, cells=16, mv=3300, temp_c=25, current_ma=0):
        self.m = Measurements(cells, ROLES)
        self.m.set_cell_count(cells)
        self.set_cells([mv] * cells)
        self.set_temps(temp_c)
        self.m.current_ma = current_ma
        self.m.current_seen = True

    def set_cells(self, mvs):
        m = self.m
        for i in range(len(mvs)):
            m.cell_mv[i] = mvs[i]
            m.cell_ok[i] = 1
        m.update_cell_stats()
        m.cells_seen = True
        return m

    def set_temps(self, cell_c, bal_c=None, power_c=None):
        m = self.m
        t = (power_c if power_c is not None else cell_c,
             bal_c if bal_c is not None else cell_c, cell_c, cell_c)
        for i in range(4):
            m.temp_dc[i] = int(t[i] * 10)
            m.temp_status[i] = T_OK
        m.update_temp_stats()
        m.temps_seen = True
        return m


def params(chem=CHEM_LFP, cells=16, **over):
    p = ParamSet(chem, max_cells=cells)
    if over:
        from bms import params as P
        p.set_many([(P.index(k), v) for k, v in over.items()])
    return p
