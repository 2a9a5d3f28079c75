"""Heater relay and the low-temperature charge inhibit (the phone app's heating modes).

Modes (``heater_mode``): 0 off; 1 while charging: only while a charger is
present (``charging_wanted`` = charge switch on and the core's
``charger_present``: board sense, load side above the pack, charge current
within 10 s, or a comms hint), including while the cold charge inhibit is
what keeps the charger off, so the pack can warm up - never from the pack
alone; 2 while discharging; 3 keep heating whenever cold; 4 forced (on
regardless of temperature, for a user who knows the pack is cold where the
NTC is not).

Floor: no mode heats while the lowest cell is at or below ``uv_rec`` (forced
included), and UV1 / UV2 stop it through their R_HEAT reaction: the heater
never drains a pack towards UV2.

Against chatter (a known field failure: limits toggling a relay thousands of
times):
* hysteresis: on below ``heat_on``, off at or above ``heat_off`` (the
  parameter rules keep off above on);
* minimum on time MIN_ON_MS and minimum off time MIN_OFF_MS for every
  temperature- or demand-driven change, and a demand (cold and charging /
  discharging) must last DEMAND_MS before the heater switches on, so a
  precharge pulse or a brief load does not start it.  Safety reasons switch off at once:
  no valid cell temperature (never heat blind), the protection's R_HEAT
  reaction, the runaway guard (hottest cell ``_GUARD_DC`` above ``heat_off``;
  also in forced mode), the voltage floor (every mode), and the user
  choosing "off".  A cell NTC that is invalid counts as no temperature, and
  so do temperatures not read for the core's TEMP_STALE_MS (3 s: the AFE
  whose die temperature is read with the NTCs stopped answering); cell
  voltages not read for CELL_STALE_MS (1.5 s) fail the voltage floor.

Low-temperature charge inhibit (``charge_inhibit``): engages as soon as the
coldest cell is at or below ``lt_chg`` and releases only when it has been at
or above ``lt_chg_rec`` *and* the heater has been off for WARM_HOLD_MS, so
charging never starts on a pack whose sensor near the heater is warm but
whose cells are not.  The core adds it to the charge-block mask; the
derating module makes the charge current limit 0 while it holds.
"""
from micropython import const

from bms.faults import R_HEAT
from bms.measurements import ROLE_CELL, T_NONE_MIN
from bms.params import (HEATER_CHARGE, HEATER_DISCHARGE, HEATER_FORCED, HEATER_KEEP,
                        HEATER_OFF, P_HEAT_OFF, P_HEAT_ON, P_HEATER_MODE, P_LT_CHG,
                        P_LT_CHG_REC, P_UV_REC)
from bms.ticks import cap_age, ticks_diff

MIN_ON_MS = const(60000)
DEMAND_MS = const(10000)    # a demand must last this long to switch on
MIN_OFF_MS = const(60000)
WARM_HOLD_MS = const(5000)     # as long as the lt_chg fault's clear delay
_GUARD_DC = const(100)       # 10 degC above heat_off: runaway guard

_R_OK = const(0)
_R_NO_TEMP = const(1)
_R_BLOCKED = const(2)
_R_GUARD = const(3)
_R_EMPTY = const(4)
REASON_NAMES = ("ok", "no_temperature", "blocked", "guard", "empty")


class Heater:
    def __init__(self, params):
        self.params = params
        self.on = False
        self.charge_inhibit = False
        self.reason = _R_OK
        self.switches = 0
        self._t_change = 0
        self._changed_once = False
        self._warm_since = 0
        self._warm = False
        self._demand = False
        self._demand_since = 0

    def _held(self, now, ms):
        return self._changed_once and ticks_diff(now, self._t_change) < ms

    def _set(self, on, now):
        if on != self.on:
            self.on = on
            self._t_change = now
            self._changed_once = True
            self.switches += 1

    def step(self, m, charging_wanted, discharging, now=0, block=0, temps_fresh=True,
             cells_fresh=True):
        """Decide the heater and the charge inhibit; returns ``on``.
        ``temps_fresh`` / ``cells_fresh``: the temperatures / cell voltages
        were read recently (the core's TEMP_STALE_MS / CELL_STALE_MS); stale
        ones are no temperature / no voltage floor."""
        p = self.params
        if self._changed_once:
            # The last switch's time within an hour of now: a week-old one
            # must not read as recent (tick differences wrap at 6.2 days).
            self._t_change = cap_age(now, self._t_change)
        mode = p[P_HEATER_MODE]
        t = m.tmin[ROLE_CELL]
        hot = m.tmax[ROLE_CELL]
        self._decide(m, mode, t, hot, charging_wanted, discharging, now, block,
                     temps_fresh, cells_fresh)
        self._inhibit(t, now)
        return self.on

    def _decide(self, m, mode, t, hot, charging_wanted, discharging, now, block,
                temps_fresh, cells_fresh):
        p = self.params
        # Safety first: these switch off at once, no minimum on time.
        reason = _R_OK
        if t == T_NONE_MIN or m.bad_temps[ROLE_CELL] or not temps_fresh:
            reason = _R_NO_TEMP
        elif block & R_HEAT:
            reason = _R_BLOCKED
        elif hot >= p[P_HEAT_OFF] * 10 + _GUARD_DC:
            reason = _R_GUARD
        elif (not m.cells_seen or not cells_fresh or m.bad_cells
              or m.min_mv <= p[P_UV_REC]):
            reason = _R_EMPTY  # the floor: every mode, forced included
        self.reason = reason
        if reason != _R_OK or mode == HEATER_OFF:
            self._demand = False
            self._set(False, now)
            return
        if mode == HEATER_FORCED:
            want = True
        else:
            demand = (mode == HEATER_KEEP or (mode == HEATER_CHARGE and charging_wanted)
                      or (mode == HEATER_DISCHARGE and discharging))
            if self.on:
                want = demand and t < p[P_HEAT_OFF] * 10
            else:
                want = demand and t < p[P_HEAT_ON] * 10
        if want and not self.on and mode != HEATER_FORCED:
            if not self._demand:
                self._demand = True
                self._demand_since = now
            if ticks_diff(now, self._demand_since) < DEMAND_MS:
                return
        elif not want:
            self._demand = False
        if want != self.on and not self._held(now, MIN_ON_MS if self.on else MIN_OFF_MS):
            self._set(want, now)

    def cold_check(self, m, now):
        """Fast-task part of the inhibit: engage before any charge relay can close."""
        self._inhibit(m.tmin[ROLE_CELL], now)
        return self.charge_inhibit

    def _inhibit(self, t, now):
        p = self.params
        if t == T_NONE_MIN:
            # No cell temperature: the protection's sensor fault blocks charging.
            self._warm = False
            return
        if t <= p[P_LT_CHG] * 10:
            self.charge_inhibit = True
            self._warm = False
            return
        if not self.charge_inhibit:
            return
        if t >= p[P_LT_CHG_REC] * 10 and not self.on:
            if not self._warm:
                self._warm = True
                self._warm_since = now
            elif ticks_diff(now, self._warm_since) >= WARM_HOLD_MS:
                self.charge_inhibit = False
                self._warm = False
        else:
            self._warm = False
