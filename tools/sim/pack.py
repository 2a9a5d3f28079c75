"""Physical pack model for the simulator (host side, floats are fine here).

Per cell: OCV(SOC) curve per chemistry (with a small temperature term),
series resistance plus one RC pair (polarisation, so voltage relaxes after a
load step like a real cell), capacity spread, self-discharge, passive balance
bleed.  Thermal: one lumped node per cell group, a power-board node heated by
I^2*R of the relays/shunt, a balance-board node heated by bleed resistors,
all cooling to ambient.

The circuit: a charger (CC/CV, optionally ignoring the BMS) on the charge
path, a load (constant current) on the discharge path, relays from the BMS
gate both; level-2 relay gates everything; the precharge relay charges the
load capacitance through a resistor.  A short circuit is a very low
resistance on the discharge path.

Deterministic: every random choice comes from ``random.Random(seed)``.
"""
import bisect
import math
import random

# SOC (0..1) -> OCV (V) at 25 degC.  LFP has its notorious flat plateau.
OCV_TABLES = {
    "NMC": ([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0],
            [3.00, 3.30, 3.45, 3.56, 3.63, 3.69, 3.75, 3.83, 3.92, 4.00, 4.08, 4.13, 4.19]),
    "LFP": ([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0],
            [2.50, 2.90, 3.05, 3.18, 3.23, 3.26, 3.28, 3.29, 3.30, 3.31, 3.33, 3.34, 3.37, 3.42, 3.60]),
    "LTO": ([0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0],
            [1.80, 2.05, 2.15, 2.25, 2.30, 2.36, 2.45, 2.55, 2.75]),
    "NA": ([0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0],
           [1.70, 2.20, 2.45, 2.80, 3.05, 3.30, 3.62, 3.75, 3.92]),
}
# dOCV/dT in V/K (small, entropic), and per-chemistry cell resistance scale.
DVDT = {"NMC": -0.0002, "LFP": -0.0001, "LTO": -0.0001, "NA": -0.0002}
CHEM_BY_INDEX = ("NMC", "LFP", "LTO", "NA")


def ocv(chem, soc, temp_c=25.0):
    xs, ys = OCV_TABLES[chem]
    s = min(max(soc, 0.0), 1.0)
    j = bisect.bisect_right(xs, s)
    if j <= 0:
        v = ys[0]
    elif j >= len(xs):
        v = ys[-1]
    else:
        x0, x1 = xs[j - 1], xs[j]
        v = ys[j - 1] + (ys[j] - ys[j - 1]) * (s - x0) / (x1 - x0)
    # Beyond the table the cell runs away (over-charge / over-discharge).
    if soc > 1.0:
        v += (soc - 1.0) * 8.0
    elif soc < 0.0:
        v += soc * 8.0
    return v + DVDT[chem] * (temp_c - 25.0)


def soc_at_ocv(chem, v):
    """The SOC whose OCV (25 degC) is ``v`` volts, by bisection (0..1)."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if ocv(chem, mid) < v:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class Cell:
    def __init__(self, chem, capacity_ah, soc, r0_ohm, r1_ohm, tau_s, self_dis_per_day):
        self.chem = chem
        self.capacity_as = capacity_ah * 3600.0
        self.soc = soc
        self.r0 = r0_ohm
        self.r1 = r1_ohm
        self.tau = tau_s
        self.v1 = 0.0  # RC polarisation voltage
        self.self_dis = self_dis_per_day / 86400.0
        self.temp_c = 25.0
        self.bleed_a = 0.0
        self.open_wire = False

    def cold_factor(self):
        # Resistance rises in the cold (roughly doubling by -10 degC): the
        # ohmic R0 and the polarisation R1 alike (charge transfer slows at
        # least as fast as conduction; published EIS data shows it faster).
        return 1.0 + max(0.0, 25.0 - self.temp_c) * 0.04

    def step(self, current_a, dt):
        i = current_a - self.bleed_a
        self.soc += (i * dt) / self.capacity_as - self.self_dis * dt
        a = math.exp(-dt / self.tau)
        self.v1 = self.v1 * a + self.r1 * self.cold_factor() * current_a * (1.0 - a)

    def voltage(self, current_a):
        return (ocv(self.chem, self.soc, self.temp_c) + current_a * self.r0 * self.cold_factor()
                + self.v1)


class Pack:
    """The whole pack plus its wiring, charger and load."""

    def __init__(self, chem="LFP", cells=16, capacity_ah=100.0, soc=0.5, seed=1,
                 spread=0.02, soc_spread=0.0, ambient_c=25.0, balance_ma=40.0):
        self.rng = random.Random(seed)
        self.chem = chem
        self.n = cells
        r0 = {"NMC": 0.0012, "LFP": 0.0008, "LTO": 0.0006, "NA": 0.0012}[chem] * 100.0 / capacity_ah
        self.cells = []
        for _ in range(cells):
            cap = capacity_ah * (1.0 + self.rng.uniform(-spread, spread))
            s = soc + self.rng.uniform(-soc_spread, soc_spread)
            self.cells.append(Cell(chem, cap, s, r0 * self.rng.uniform(0.9, 1.1), r0 * 0.8,
                                   60.0, 0.0005))
        self.capacity_ah = capacity_ah
        self.ambient_c = ambient_c
        self.cell_temp_c = ambient_c
        self.power_temp_c = ambient_c
        self.balance_temp_c = ambient_c
        self.balance_ma = balance_ma
        # Circuit inputs (set by scenarios).
        self.charger_a = 0.0          # charger CC current when connected
        self.charger_cv = None        # CV voltage (per pack) or None = ignore, keeps pushing
        self.load_a = 0.0             # load current (discharge) when connected
        self.short = False
        self.short_a = 2000.0
        self.load_cap_f = 0.004       # inverter input capacitance
        self.precharge_ohm = 50.0
        self.load_v = 0.0
        self.heater_w = 150.0
        # Outputs of the last step.
        self.current_a = 0.0          # + charging
        self.relays = [0, 0, 0, 0, 0]  # dsg, pre, chg, l2, heater (bms.contactors order)
        self.time_s = 0.0

    # --- physics ---------------------------------------------------------
    def pack_ocv(self):
        return sum(c.voltage(0.0) for c in self.cells)

    def pack_voltage(self):
        return sum(c.voltage(self.current_a) for c in self.cells)

    def step(self, dt):
        dsg, pre, chg, l2, heat = self.relays
        v_pack = self.pack_voltage()
        i = 0.0
        if l2:
            if chg and self.charger_a > 0:
                ic = self.charger_a
                if self.charger_cv is not None:
                    # CV phase: current tapers as the pack approaches the set point.
                    ocv_now = self.pack_ocv()
                    r_tot = sum(c.r0 for c in self.cells) * 4.0
                    ic = max(0.0, min(ic, (self.charger_cv - ocv_now) / r_tot))
                i += ic
            if dsg:
                self.load_v = v_pack
                if self.short:
                    i -= self.short_a
                else:
                    i -= self.load_a
            elif pre:
                # Load capacitance charges through the precharge resistor.
                ipre = (v_pack - self.load_v) / self.precharge_ohm
                self.load_v += ipre * dt / self.load_cap_f
                self.load_v = min(self.load_v, v_pack)
                i -= ipre
            else:
                self.load_v *= math.exp(-dt / 5.0)
        else:
            self.load_v *= math.exp(-dt / 5.0)
        self.current_a = i
        for c in self.cells:
            c.temp_c = self.cell_temp_c
            c.step(i, dt)
        # Thermal: lumped nodes with first-order cooling to ambient.
        r_cells = sum(c.r0 for c in self.cells)
        heater = self.heater_w if (heat and l2) else 0.0
        self.cell_temp_c += dt * ((i * i * r_cells + heater) / (self.n * 900.0 * 2.0)
                                  - (self.cell_temp_c - self.ambient_c) / 3600.0)
        self.power_temp_c += dt * ((i * i * 0.0005) / 400.0
                                   - (self.power_temp_c - self.ambient_c) / 600.0)
        bleed_w = sum(c.bleed_a * c.voltage(0.0) for c in self.cells)
        self.balance_temp_c += dt * (bleed_w / 30.0 - (self.balance_temp_c - self.ambient_c) / 300.0)
        self.time_s += dt

    def set_bleed(self, flags):
        for k, c in enumerate(self.cells):
            c.bleed_a = self.balance_ma / 1000.0 if (k < len(flags) and flags[k]) else 0.0

    def cell_voltages(self):
        return [c.voltage(self.current_a) for c in self.cells]

    def true_soc(self):
        return sum(c.soc for c in self.cells) / self.n


def demo_cycle(pack, t_s):
    """Charge, rest, discharge, rest: the live demos' 12-minute loop
    (``make sim``, host or emulated chip), so every page moves."""
    t = int(t_s) % 720
    if t < 240:
        pack.charger_a, pack.charger_cv, pack.load_a = 40.0, pack.n * 3.45, 0.0
    elif t < 300:
        pack.charger_a, pack.load_a = 0.0, 0.0
    elif t < 600:
        pack.charger_a, pack.load_a = 0.0, 60.0 if (t // 30) % 2 else 25.0
    else:
        pack.charger_a, pack.load_a = 0.0, 0.0
