"""The full-charge request (docs/parameters.md full_chg_days; inverter CAN 0x35C
bit 3): after full_chg_days of operation without a full anchor the BMS asks the
inverter for a full charge, until a full anchor (OV1, or a charge ended at the
voltage limit with the current tapered) calibrates SOC again.

MicroPython-compatible: runs under pytest and the unix port (upy_run.py).
"""
from bms import faults as F
from bms import params as P
from harness import Rig

DAY_MS = 86400 * 1000


def _days(r, days):
    # Minute steps: the request counts operating time, not samples.
    r.run(days * DAY_MS, step=60000)


def test_a_full_charge_is_requested_after_the_set_days_and_ends_at_a_full_anchor():
    r = Rig(full_chg_days=2)
    r.run(3000)
    _days(r, 1)
    assert not r.bms.full_charge_request
    _days(r, 1)
    r.run(2000)
    assert r.bms.full_charge_request
    # A full anchor: OV1 calibrates SOC to full.
    r.board.cells[3] = r.params[P.P_OV1] + 20
    r.run(r.params[P.P_OV_DELAY] + 2000)
    assert r.bms.prot.active(F.OV1)
    assert not r.bms.full_charge_request
    r.board.cells[3] = 3300
    _days(r, 1)
    assert not r.bms.full_charge_request   # counted from the anchor again


def test_no_request_when_the_days_are_0_and_lfp_asks_weekly_by_default():
    r = Rig(full_chg_days=0)
    r.run(3000)
    _days(r, 30)
    assert not r.bms.full_charge_request
    lfp = Rig()
    assert lfp.params[P.P_FULL_CHG_DAYS] == 7
    lfp.run(3000)
    _days(lfp, 6)
    assert not lfp.bms.full_charge_request
    _days(lfp, 1)
    lfp.run(2000)
    assert lfp.bms.full_charge_request
