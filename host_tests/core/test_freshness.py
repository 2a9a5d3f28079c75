# What "a reading is fresh" means, from docs/safety.md (Stale / missing cell
# data: no complete sweep for 1.5 s; Stale current data: no reading for 0.5 s;
# NTC: no temperature data for 3 s).  Protection, the coulomb counter, the
# estimator, the heater and the status block's validity bits all ask
# Measurements, so the limits live in one place.
from bms.measurements import (CELL_STALE_MS, CURRENT_STALE_MS, ROLE_CELL, ROLE_POWER,
                              TEMP_STALE_MS, Measurements)


def _m(ts):
    m = Measurements(4, (ROLE_POWER, ROLE_CELL))
    m.current_ts = ts
    m.cells_ts = ts
    m.temps_ts = ts
    return m


def test_the_documented_stale_limits():
    assert (CURRENT_STALE_MS, CELL_STALE_MS, TEMP_STALE_MS) == (500, 1500, 3000)


def test_a_reading_never_taken_is_not_fresh_even_at_its_zero_timestamp():
    m = _m(0)
    assert not m.current_fresh(0) and not m.cells_fresh(0) and not m.temps_fresh(0)


def test_fresh_up_to_the_limit_and_stale_one_ms_after():
    for ts in (0, 1000, (1 << 30) - 200):     # across the tick counter's wrap too
        m = _m(ts)
        m.current_seen = m.cells_seen = m.temps_seen = True
        for fresh, limit in ((m.current_fresh, CURRENT_STALE_MS), (m.cells_fresh, CELL_STALE_MS),
                             (m.temps_fresh, TEMP_STALE_MS)):
            assert fresh(ts)
            assert fresh((ts + limit) & ((1 << 30) - 1))
            assert not fresh((ts + limit + 1) & ((1 << 30) - 1))


def test_each_kind_of_reading_ages_on_its_own():
    m = _m(0)
    m.current_seen = m.cells_seen = m.temps_seen = True
    m.current_ts = 2000
    assert m.current_fresh(2400)
    assert not m.cells_fresh(2400)      # 0 + 1500 < 2400
    assert m.temps_fresh(2400)
