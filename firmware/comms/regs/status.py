"""Status block: what a generic Modbus client (Home Assistant, Node-RED, a PLC)
needs and cannot derive from the monitor block by itself, read only.

* validity flags: which temperature roles have valid sensors and whether the
  cell and current data are complete, so "no ambient sensor" is a cleared
  bit, not -3276.8 degC (the monitor's max/min fields keep their documented
  sentinels for the PC tool).  A bit means valid *now*, by the core's own
  rule for its stale faults (bms.core, Measurements.*_fresh): the data was read within
  CURRENT_STALE_MS / CELL_STALE_MS / TEMP_STALE_MS and every reading of it
  is valid.  The snapshot holds the last good value of a sensor that stopped
  answering (bms.measurements), so "ever read" would show a dead shunt's
  last current as valid for good;
* the limits an inverter gets (CCL / DCL / CVL / DVL) and whether each
  direction is allowed, the same values as the Pylontech CAN frame 0x351;
* pack power, and one 0/1 register per relay and for "any alarm" /
  "any protection", which a client can show without bit masking.

Every row is a compile-time constant: (name, type, unit, description, source).
"""
from micropython import const

from bms import faults as F
from comms.regs import codes, rows

V_T_POWER = const(0x01)
V_T_BALANCE = const(0x02)
V_T_CELL = const(0x04)
V_T_AMBIENT = const(0x08)
V_CELLS = const(0x10)
V_CURRENT = const(0x20)
V_RUNNING = const(0x40)
VALID_NAMES = ("t_power", "t_balance", "t_cell", "t_ambient", "cells", "current", "running")

_S_VALID = const(0)
_S_CCL = const(1)
_S_DCL = const(2)
_S_CVL = const(3)
_S_DVL = const(4)
_S_CHG_OK = const(5)
_S_DSG_OK = const(6)
_S_POWER = const(7)
_S_ALARM = const(8)
_S_PROT = const(9)
_S_RELAY = const(0x10)     # + relay index (bms.contactors.RELAY_NAMES)

_T_NONE_MAX = const(-32768)  # bms.measurements.T_NONE_MAX

STATUS = (
    ("valid", "bits", "bits", "Data validity, 1 = valid now (fresh, every reading of it valid; "
     "a held last value is not): {valid_bits}", _S_VALID),
    ("charge_current_limit", "u16", "0.1A", "Charge current limit (CCL), as in CAN 0x351",
     _S_CCL),
    ("discharge_current_limit", "u16", "0.1A", "Discharge current limit (DCL), as in CAN 0x351",
     _S_DCL),
    ("charge_voltage_limit", "u16", "0.1V", "Charge voltage limit (CVL), as in CAN 0x351",
     _S_CVL),
    ("discharge_voltage_limit", "u16", "0.1V", "Discharge voltage limit (DVL), as in CAN 0x351",
     _S_DVL),
    ("charge_allowed", "u16", "bool", "1: the charge current limit is above 0", _S_CHG_OK),
    ("discharge_allowed", "u16", "bool", "1: the discharge current limit is above 0", _S_DSG_OK),
    ("power", "s32", "W", "Pack power, positive = charging", _S_POWER),
    ("alarm_active", "u16", "bool", "1: any warning-level fault is active", _S_ALARM),
    ("protection_active", "u16", "bool", "1: any protection (level >= protection) is active",
     _S_PROT),
    ("relay_discharge", "u16", "bool", "1: discharge relay / MOS closed", _S_RELAY + 0),
    ("relay_precharge", "u16", "bool", "1: precharge relay closed", _S_RELAY + 1),
    ("relay_charge", "u16", "bool", "1: charge relay / MOS closed", _S_RELAY + 2),
    ("relay_level2", "u16", "bool", "1: level-2 protect relay closed", _S_RELAY + 3),
    ("relay_heater", "u16", "bool", "1: heater relay closed", _S_RELAY + 4),
)
SIZE = const(16)        # registers of STATUS (s32 takes two); a test checks it
_LAYOUT = rows.Layout(STATUS)


def _valid(b):
    """The bits, by the conditions bms.core sets current_stale, cell_stale and
    temp_sensor on (a held value is no valid reading)."""
    m = b.meas
    now = b.clock.ticks_ms()
    v = 0
    if m.temps_fresh(now):
        bad = m.bad_temps
        for r in range(4):
            # tmax stays a held value while a sensor of the role reads nothing.
            if m.tmax[r] != _T_NONE_MAX and bad[r] == 0:
                v |= 1 << r
    if m.cells_fresh(now) and m.bad_cells == 0 and not b.unmonitored:
        v |= V_CELLS
    if m.current_fresh(now):
        v |= V_CURRENT
    if b.running:
        v |= V_RUNNING
    return v


def _power_w(m):
    mv = m.pack_mv if m.pack_mv else m.sum_mv
    i = m.current_ma
    # 10 mV x 0.1 A steps: stays a small int (< 2**30) up to 1000 V x 1000 A.
    da = i // 100 if i >= 0 else -((-i) // 100)
    return (mv // 10) * da // 1000 if da >= 0 else -((mv // 10) * (-da) // 1000)


def _any(prot, lo, hi):
    if prot.level < lo:      # nothing active that high (level 0: nothing at all)
        return 0
    st = prot.state
    lvl = prot.f_level
    for i in range(F.N_FAULTS):
        if st[i] and lo <= lvl[i] <= hi:
            return 1
    return 0


_VALS = rows.values(_LAYOUT)


def _fill(b, v):
    """Every source's value into ``v`` (one function: see ``comms.regs.rows``)."""
    v[_S_VALID] = _valid(b)
    lim = b.limits
    v[_S_CCL] = lim.ccl_ma // 100
    v[_S_DCL] = lim.dcl_ma // 100
    v[_S_CVL] = lim.cvl_mv // 100
    v[_S_DVL] = lim.dvl_mv // 100
    v[_S_CHG_OK] = 1 if lim.ccl_ma > 0 else 0
    v[_S_DSG_OK] = 1 if lim.dcl_ma > 0 else 0
    v[_S_POWER] = _power_w(b.meas)
    v[_S_ALARM] = _any(b.prot, F.L_WARN, F.L_WARN)
    v[_S_PROT] = _any(b.prot, F.L_PROT, 9)
    st = b.contactors.state
    for k in range(5):
        v[_S_RELAY + k] = 1 if k < len(st) and st[k] else 0


def read(rm, off, count, out, pos):
    _fill(rm.bms, _VALS)
    return rows.pack(_LAYOUT, _VALS, off, count, out, pos)


write = codes.read_only


def offsets():
    return rows.offsets(STATUS)


def doc(start):
    return rows.doc("Status (validity, inverter limits, power, relays)", STATUS, start)
