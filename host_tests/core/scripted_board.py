"""A value-level board for core tests: the test sets what the "hardware" reads.

MicroPython-compatible (runs under the unix port too).  ``fail_*`` counters
make the next N reads raise OSError like a NACKed bus.
"""
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER, T_OK


class ScriptedBoard:
    def __init__(self, max_cells=16, cells=16, mv=3300, temp_roles=None):
        self.max_cells = max_cells
        self.temp_roles = temp_roles or (ROLE_POWER, ROLE_BALANCE, ROLE_CELL, ROLE_CELL)
        self.cells = [mv] * max_cells
        self.temps = [250] * len(self.temp_roles)
        self.temp_status = [T_OK] * len(self.temp_roles)
        self.current_ma = 0
        self.load_mv = None  # None: follows the relays (instant precharge)
        self.relays = bytearray(5)
        self.relay_writes = 0
        self.balance = bytearray(max_cells)
        self.buzzer = False
        self.key_on = True
        self.afe = 0
        self.fail_current = 0
        self.fail_cells = 0
        self.fail_temps = 0
        self.crash = False  # a driver bug: raises something that is not OSError
        self.balance_no_adjacent = True

    def read_current(self, m, now):
        if self.crash:
            raise ValueError("driver bug")
        if self.fail_current:
            self.fail_current -= 1
            raise OSError(5)
        m.current_ma = self.current_ma
        pack = 0
        for i in range(m.n_cells):
            pack += self.cells[i]
        m.pack_mv = pack
        if self.load_mv is None:
            m.load_mv = pack if (self.relays[0] or self.relays[1]) else 0
        else:
            m.load_mv = self.load_mv
        m.load_ok = True

    def read_cells(self, m, now):
        if self.fail_cells:
            self.fail_cells -= 1
            raise OSError(5)
        for i in range(m.n_cells):
            m.cell_mv[i] = self.cells[i]
            m.cell_ok[i] = 1
            m.cell_ts[i] = now

    def read_temps(self, m, now):
        if self.fail_temps:
            self.fail_temps -= 1
            raise OSError(5)
        for i in range(len(self.temps)):
            m.temp_dc[i] = self.temps[i]
            m.temp_status[i] = self.temp_status[i]

    def set_relays(self, states):
        for i in range(len(states)):
            self.relays[i] = states[i]
        self.relay_writes += 1

    def set_balance(self, flags):
        for i in range(len(flags)):
            self.balance[i] = flags[i]

    def set_buzzer(self, on):
        self.buzzer = on

    def key(self):
        return self.key_on

    def afe_fault(self):
        return self.afe

    def clear_afe_fault(self):
        self.afe = 0
