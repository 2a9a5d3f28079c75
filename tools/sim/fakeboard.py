"""Value-level simulated board: the firmware core's board interface on a Pack.

Readings are quantised like the real front ends (1 mV cells, 1 mA current,
0.1 degC) with small seeded noise, and the relay / balance outputs act on the
pack model.  Fault injection: open or shorted NTCs, a frozen AFE (stops
answering), NACK bursts, an AFE hardware trip, a current sensor stuck at a
value (``current_stuck_ma``), welded relays (``weld``, bit 1 << RELAY_*:
the pack keeps that contact closed), and an optional second current reading
(``second_current``: the AFE's coulomb counter, its own noise).  Readings go
through ``put_cell`` / ``put_temp`` like a driver's.
"""
import random

from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER, T_OK, T_OPEN, T_SHORT

TEMP_ROLES = (ROLE_POWER, ROLE_BALANCE, ROLE_CELL, ROLE_CELL)


class FakeBoard:
    def __init__(self, pack, seed=2, max_cells=None, noise_mv=1, noise_ma=20):
        self.pack = pack
        self.rng = random.Random(seed)
        self.max_cells = max_cells or pack.n
        self.temp_roles = TEMP_ROLES
        self.noise_mv = noise_mv
        self.noise_ma = noise_ma
        self.balance_no_adjacent = True
        self.relays = bytearray(5)
        self.balance = bytearray(self.max_cells)
        self.buzzer = False
        self.buzzer_changes = 0
        self.key_on = True
        # Fault injection.
        self.ntc_fault = [None] * len(TEMP_ROLES)  # None, "open", "short"
        self.temp_override = [None] * len(TEMP_ROLES)
        self.afe_dead = False
        self.nack = 0
        self.afe_trip = 0
        self.current_gain = 1.0       # shunt gain error (e.g. 1.01)
        self.current_offset_ma = 0    # shunt offset error
        self.current_stuck_ma = None  # the shunt reading frozen at this value
        self.second_current = False
        self.weld = 0
        self.voltage_response = True  # the pack model's cells sag under load

    # ---- board interface used by bms.core ----------------------------------
    def _bus(self):
        if self.nack > 0:
            self.nack -= 1
            raise OSError(5)  # EIO, as machine.I2C reports a NACK

    def read_current(self, m, now):
        self._bus()
        p = self.pack
        raw = p.current_a * 1000.0 * self.current_gain + self.current_offset_ma
        m.current_ma = int(round(raw + self.rng.uniform(-self.noise_ma, self.noise_ma)))
        if self.current_stuck_ma is not None:
            m.current_ma = self.current_stuck_ma
        m.current2_ok = self.second_current
        if self.second_current:
            m.current2_ma = int(round(p.current_a * 1000.0
                                      + self.rng.uniform(-self.noise_ma, self.noise_ma)))
        m.pack_mv = int(p.pack_voltage() * 1000.0)
        m.load_mv = int(p.load_v * 1000.0)
        m.load_ok = True

    def read_cells(self, m, now):
        self._bus()
        if self.afe_dead:
            raise OSError(110)  # ETIMEDOUT
        vs = self.pack.cell_voltages()
        for i in range(m.n_cells):
            if i < len(vs):
                mv = int(round(vs[i] * 1000.0 + self.rng.uniform(-self.noise_mv, self.noise_mv)))
                m.put_cell(i, mv)
            else:
                m.cell_ok[i] = 0
            m.cell_ts[i] = now

    def read_temps(self, m, now):
        self._bus()
        p = self.pack
        true = {ROLE_POWER: p.power_temp_c, ROLE_BALANCE: p.balance_temp_c,
                ROLE_CELL: p.cell_temp_c}
        for i, role in enumerate(TEMP_ROLES):
            f = self.ntc_fault[i]
            if f == "open":
                m.temp_status[i] = T_OPEN
                continue
            if f == "short":
                m.temp_status[i] = T_SHORT
                continue
            t = self.temp_override[i]
            if t is None:
                t = true[role]
            m.put_temp(i, int(round(t * 10.0)), T_OK)

    def set_relays(self, states):
        for i in range(len(states)):
            self.relays[i] = states[i]
        self.pack.relays = [1 if (self.relays[i] or (self.weld >> i) & 1) else 0
                            for i in range(len(self.relays))]

    def set_balance(self, flags):
        for i in range(len(flags)):
            self.balance[i] = flags[i]
        self.pack.set_bleed(self.balance)

    def set_buzzer(self, on):
        if on != self.buzzer:
            self.buzzer_changes += 1
        self.buzzer = on

    def key(self):
        return self.key_on

    def afe_fault(self):
        return self.afe_trip

    def charger_present(self):
        """Charge-port sense: a charger is connected to the charge path."""
        return self.pack.charger_a > 0

    def clear_afe_fault(self):
        self.afe_trip = 0
