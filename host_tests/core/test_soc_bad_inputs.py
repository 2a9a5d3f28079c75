"""SOC / SOH under bad input and odd events (docs/safety.md, "SOC on bad input").

MicroPython-compatible: runs under pytest and the unix port (upy_run.py).
"""
from bms import faults as F
from bms.params import CHEM_NMC
from bms.protection import CURRENT_STALE_MS
from harness import Rig


def test_a_current_sensor_that_stops_answering_is_not_counted_on_its_last_reading():
    # docs/safety.md: the counter counts a reading for at most the stale time
    # (CURRENT_STALE_MS, while the relays still carry it); beyond, nothing.
    # Before: the last reading (50 A out) was counted for as long as the
    # sensor was dead, relays open, and SOC fell 8 % in 10 min.
    r = Rig()
    soc = r.bms.soc
    soc.set_pm(600)
    r.run(3000, 50)
    r.board.current_ma = -50000
    r.run(5000, 50)
    q0 = soc.remaining_mah
    r.board.fail_current = 10 ** 9
    r.run(600000, 50)
    assert r.bms.prot.active(F.CUR_STALE)
    assert r.board.flowing() == 0       # current_stale opened the relays
    # 50 A for the stale time and a tick is 8 mAh.
    assert q0 - soc.remaining_mah <= 50 * (CURRENT_STALE_MS + 100) // 3600 + 1, \
        (q0, soc.remaining_mah)
    assert soc.soc_pm >= 599
    # Back: counted again from the first fresh reading.
    r.board.fail_current = 0
    r.bms.request(1)                    # reset_faults: the relays close again
    r.run(5000, 50)
    q1 = soc.remaining_mah
    r.run(36000, 50)                    # 50 A for 36 s: 500 mAh
    assert 490 <= q1 - soc.remaining_mah <= 510, (q1, soc.remaining_mah)
