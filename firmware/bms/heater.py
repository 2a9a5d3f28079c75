"""Heater relay decision with hysteresis (the phone app's heating modes).

On below ``heat_on``, off above ``heat_off`` (the rule set keeps off above
on, so it cannot chatter).  Modes: off; during charging only (also when the
cold charge inhibit is what stops charging, so the pack can warm up); during
discharging only; keep heating whenever cold; forced (on regardless of
temperature, still cut at ``heat_off`` + 10 degC as a runaway guard).
"""
from bms.measurements import ROLE_CELL, T_NONE_MIN
from bms.params import (HEATER_CHARGE, HEATER_DISCHARGE, HEATER_FORCED, HEATER_KEEP,
                        P_HEAT_OFF, P_HEAT_ON, P_HEATER_MODE)


class Heater:
    def __init__(self, params):
        self.params = params
        self.on = False

    def step(self, m, charging_wanted, discharging):
        p = self.params
        mode = p[P_HEATER_MODE]
        t = m.tmin[ROLE_CELL]
        if t == T_NONE_MIN:
            self.on = False  # no valid cell temperature: never heat blind
            return False
        hot = m.tmax[ROLE_CELL]
        on_dc = p[P_HEAT_ON] * 10
        off_dc = p[P_HEAT_OFF] * 10
        if mode == HEATER_FORCED:
            self.on = hot < off_dc + 100
            return self.on
        want = (mode == HEATER_KEEP or (mode == HEATER_CHARGE and charging_wanted)
                or (mode == HEATER_DISCHARGE and discharging))
        if not want:
            self.on = False
        elif self.on:
            self.on = t < off_dc
        else:
            self.on = t < on_dc
        return self.on
