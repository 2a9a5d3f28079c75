"""Charge/discharge limits for external devices (inverter CAN, special charger).

The interface every limits source offers (``bms.derating`` offers it too,
and ``limits_for`` returns the core's derating whenever it has one):

  update(now)   recompute from the Bms (cheap, allocation-free)
  cvl_mv        charge voltage limit, pack mV
  dvl_mv        discharge voltage limit, pack mV
  ccl_ma        charge current limit, mA, >= 0 (0: do not charge)
  dcl_ma        discharge current limit, mA, >= 0 (0: do not discharge)

``FaultLimits`` serves a core without derating: it only knows "full
limit" or "zero", from the parameters and the active faults.  Its choices:

* CVL = cells x ``ov_rec``: the voltage at which the BMS would let charging
  resume after an over-voltage trip, so a CV-charging inverter never drives a
  cell into the level-1 cut-off of a balanced pack.  DVL = cells x ``uv_rec``.
* CCL / DCL = 80 % of the charge / discharge over-current settings: below
  the 90 % over-current alarm, so an inverter running at its limit raises no
  alarm and can never trip the protection.
* Any active fault whose reaction opens the charge path (R_CHG or R_L2)
  makes CCL 0; one that opens the discharge path (R_DSG or R_L2) makes DCL 0,
  and so does the core's ``inhibit`` (relays held open).  So do the user's charge/discharge switches, the sleep request and a core
  that has not started (``running`` false).
"""
from micropython import const

from bms.faults import R_CHG, R_DSG, R_L2
from bms.params import (P_CELL_COUNT, P_CHG_OC, P_CHG_SWITCH, P_DSG_OC, P_DSG_SWITCH,
                        P_KEY_ENABLE, P_OV_REC, P_UV_REC)

LIMIT_PCT = const(80)


class FaultLimits:
    def __init__(self, bms):
        self.bms = bms
        self.cvl_mv = 0
        self.dvl_mv = 0
        self.ccl_ma = 0
        self.dcl_ma = 0

    def update(self, now=0):
        b = self.bms
        p = b.params
        n = p[P_CELL_COUNT]
        self.cvl_mv = n * p[P_OV_REC]
        self.dvl_mv = n * p[P_UV_REC]
        block = b.prot.reaction | getattr(b, "inhibit", 0)
        run = b.running and not b.sleep_requested and not getattr(b, "waking", False)
        chg = run and p[P_CHG_SWITCH] and not (block & (R_CHG | R_L2))
        dsg = run and p[P_DSG_SWITCH] and not (block & (R_DSG | R_L2))
        if dsg and p[P_KEY_ENABLE] and not b.board.key():
            dsg = False
        # 0.1 A -> mA at LIMIT_PCT percent: * 100 * LIMIT_PCT / 100.
        self.ccl_ma = p[P_CHG_OC] * LIMIT_PCT if chg else 0
        self.dcl_ma = p[P_DSG_OC] * LIMIT_PCT if dsg else 0


def limits_for(bms):
    """The limits source for ``bms``: its derating object once it has one."""
    d = getattr(bms, "derating", None)
    if d is not None:
        return d
    return FaultLimits(bms)
