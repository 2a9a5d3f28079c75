"""State of charge by coulomb counting, with the manual's full/empty calibration.

Integer arithmetic only: charge is kept as whole mAh plus a residual in
mA*ms, so nothing overflows MicroPython's small ints (and so nothing
allocates) for any pack up to 6500 Ah.  Charging is counted at the charge
efficiency (charge put in that the cells do not store).  Reaching the level-1
over-voltage cut-off sets 100 %, the under-voltage cut-off sets 0 %
(TOPBMS "SOC calibration": discharge to UV, then charge to OV).
"""
from micropython import const

from bms.params import P_CAPACITY

MAH_MS = const(3600000)  # mA*ms in one mAh
CHG_EFF_PM = const(995)  # charge efficiency, per mille


class Soc:
    def __init__(self, params, soc_pm=500):
        self.params = params
        self.capacity_mah = params[P_CAPACITY] * 100
        self.remaining_mah = self.capacity_mah * soc_pm // 1000
        self._res = 0
        self.cycles = 0
        self._throughput_mah = 0  # discharged since the last cycle count
        self.soc_pm = soc_pm
        self._pver = params.version

    def _refresh_capacity(self):
        cap = self.params[P_CAPACITY] * 100
        if cap != self.capacity_mah:
            # Keep the fraction, not the absolute charge, when capacity is re-set.
            self.remaining_mah = cap * self.soc_pm // 1000
            self.capacity_mah = cap
        self._pver = self.params.version

    def integrate(self, current_ma, dt_ms):
        if self._pver != self.params.version:
            self._refresh_capacity()
        if current_ma > 0:
            q = (current_ma * dt_ms) // 1000 * CHG_EFF_PM
        else:
            q = current_ma * dt_ms
        r = self._res + q
        whole = r // MAH_MS
        self._res = r - whole * MAH_MS
        if whole:
            rem = self.remaining_mah + whole
            if whole < 0:
                t = self._throughput_mah - whole
                if t >= self.capacity_mah:
                    t -= self.capacity_mah
                    self.cycles += 1
                self._throughput_mah = t
            if rem < 0:
                rem = 0
            elif rem > self.capacity_mah:
                rem = self.capacity_mah
            self.remaining_mah = rem
            self.soc_pm = rem * 1000 // self.capacity_mah if self.capacity_mah else 0

    def set_pm(self, soc_pm):
        if soc_pm < 0 or soc_pm > 1000:
            raise ValueError("soc 0..1000 per mille")
        self.soc_pm = soc_pm
        self.remaining_mah = self.capacity_mah * soc_pm // 1000
        self._res = 0

    def calibrate_full(self):
        self.set_pm(1000)

    def calibrate_empty(self):
        self.set_pm(0)
