"""A value-level board for core tests: the test sets what the "hardware" reads.

MicroPython-compatible (runs under the unix port too).  ``fail_*`` counters
make the next N reads raise OSError like a NACKed bus.

Readings go into the snapshot through ``put_cell`` / ``put_temp`` like a
driver's (range-checked: an impossible value is an invalid reading).
Further injections: ``cell_bad`` (indices whose reading is invalid),
``connected`` (cells physically there: the pack voltage sums them, also
beyond ``cell_count``), ``weld`` (bit mask of relays that stay closed
whatever they are told; with ``readback`` their readback shows it),
``current2`` (a second current reading, None = none), ``zero_error_ma`` (added to
every raw current reading: the shunt amplifier's offset).  ``current_ma`` is
what flows while its path is closed: the board reports 0 while the level-2
relay, or the relay of that direction (charge; discharge or precharge), is
physically open, so a relay that opens stops the current unless it is welded.  ``voltage_response``
is False: cells here jump as the test says, not as a current would move
them, so the core's voltage-response check stays off unless a test turns it on.
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
        self.crash_cells = False  # the same in the cell driver
        self.balance_no_adjacent = True
        self.cell_bad = []
        self.connected = cells
        self.weld = 0
        self.readback = False
        self.current2 = None
        self.zero_error_ma = 0  # the shunt's raw reading with nothing flowing (offset)
        self.voltage_response = False
        self.charger = None  # None: no charger sense on this board
        self.flicker = None  # (cell index, [values...]): one value per cell read, cycled
        self._flick = 0

    def read_current(self, m, now):
        if self.crash:
            raise ValueError("driver bug")
        if self.fail_current:
            self.fail_current -= 1
            raise OSError(5)
        m.current_ma = self.flowing() + self.zero_error_ma
        if self.current2 is None:
            m.current2_ok = False
        else:
            m.current2_ma = self.current2
            m.current2_ok = True
        pack = 0
        for i in range(self.connected):
            pack += self.cells[i]
        m.pack_mv = pack
        if self.load_mv is None:
            m.load_mv = pack if (self.phys(0) or self.phys(1)) else 0
        else:
            m.load_mv = self.load_mv
        m.load_ok = True

    def read_cells(self, m, now):
        if self.crash_cells:
            raise ValueError("cell driver bug")
        if self.fail_cells:
            self.fail_cells -= 1
            raise OSError(5)
        fl = self.flicker
        if fl is not None:
            self.cells[fl[0]] = fl[1][self._flick % len(fl[1])]
            self._flick += 1
        bad = self.cell_bad
        for i in range(m.n_cells):
            if i in bad:
                m.cell_mv[i] = 0
                m.cell_ok[i] = 0
            else:
                m.put_cell(i, self.cells[i])
            m.cell_ts[i] = now

    def read_temps(self, m, now):
        if self.fail_temps:
            self.fail_temps -= 1
            raise OSError(5)
        for i in range(len(self.temps)):
            m.put_temp(i, self.temps[i], self.temp_status[i])

    def set_relays(self, states):
        for i in range(len(states)):
            self.relays[i] = states[i]
        self.relay_writes += 1

    def flowing(self):
        """``current_ma`` if its path is closed (see the module docstring), else 0."""
        i = self.current_ma
        if not self.phys(3) or (i > 0 and not self.phys(2)) or \
                (i < 0 and not (self.phys(0) or self.phys(1))):
            return 0
        return i

    def phys(self, i):
        """What relay ``i``'s contacts really do (a welded one stays closed)."""
        return 1 if (self.relays[i] or (self.weld >> i) & 1) else 0

    def relay_faults(self):
        if not self.readback:
            return 0
        f = 0
        for i in range(len(self.relays)):
            if self.phys(i) != self.relays[i]:
                f |= 1 << i
        return f

    def charger_present(self):
        return bool(self.charger)

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
