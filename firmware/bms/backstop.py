"""Protection policy for the AFE's own hardware protections (the backstop).

The chip trips only *beyond* the firmware limits: cell OV/UV at the level-2
limits plus a margin and a longer delay, charge / discharge over-current
above the firmware over-current limits, so the firmware's graded reaction
always comes first.  Short circuit is the exception: only hardware catches
it in microseconds, so it uses the ``short_circuit`` parameter itself.

The chip's own steps move these (BQ76952: OCC / OCD1 in 2 mV across the
shunt from a 4 mV floor, rounded up; SCD from a table): for small limits on
small shunts the over-current backstop is looser than 125 % (chg_oc 20 A on
100 uOhm: OCC at 40 A).  ``HwBoard.backstop_slack()`` lists what moved
(docs/safety.md).

The result is plain numbers in the keys of ``drivers.afe`` ``configure``;
drivers never read the parameter table.  ``drivers.hwboard.HwBoard``
follows a ``Backstop`` (``attach_backstop``): it re-reads ``conf()`` only
when ``version`` moved, i.e. after a parameter change.
"""
from micropython import const

from bms.params import (P_CHG_OC, P_CHG_OC_DELAY, P_OV2, P_OV2_DELAY, P_PEAK, P_PEAK_DELAY, P_SC,
                        P_UV2, P_UV2_DELAY)

_OV_MARGIN_MV = const(50)        # above level-2 over-voltage
_UV_MARGIN_MV = const(50)        # below level-2 under-voltage
_V_DELAY_EXTRA_MS = const(1000)  # firmware level-2 acts first
_OC_PERCENT = const(125)         # hardware OCC / OCD1 at 125 % of the firmware limit
_OC_DELAY_EXTRA_MS = const(100)
_SCD_DELAY_US = const(200)


def afe_backstop(params, cells=True):
    """Hardware backstop thresholds from the parameter table; ``cells=False``
    (a master whose AFE measures no cells: CAN modules do) leaves out the
    cell OV/UV protections, which open cell inputs would trip."""
    conf = {
        "occ_ma": params[P_CHG_OC] * 100 * _OC_PERCENT // 100,
        "occ_delay_ms": params[P_CHG_OC_DELAY] + _OC_DELAY_EXTRA_MS,
        "ocd1_ma": params[P_PEAK] * 100 * _OC_PERCENT // 100,
        "ocd1_delay_ms": params[P_PEAK_DELAY] + _OC_DELAY_EXTRA_MS,
        "scd_ma": params[P_SC] * 100,
        "scd_delay_us": _SCD_DELAY_US,
    }
    if cells:
        conf["cov_mv"] = params[P_OV2] + _OV_MARGIN_MV
        conf["cov_delay_ms"] = params[P_OV2_DELAY] + _V_DELAY_EXTRA_MS
        conf["cuv_mv"] = params[P_UV2] - _UV_MARGIN_MV
        conf["cuv_delay_ms"] = params[P_UV2_DELAY] + _V_DELAY_EXTRA_MS
    return conf


class Backstop:
    """The backstop a board follows: ``version`` changes with the parameters,
    ``conf()`` gives the thresholds (allocates; only after a change)."""

    def __init__(self, params, cells=True):
        self.params = params
        self.cells = cells

    @property
    def version(self):
        return self.params.version

    def conf(self):
        return afe_backstop(self.params, self.cells)
