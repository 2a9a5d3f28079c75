"""Shared helpers for the store/log tests (MicroPython-compatible)."""
from bms import params as P


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


# A few independent parameters a random test can change without breaking a rule.
FREE = (
    (P.P_CAPACITY, 10, 65000),
    (P.P_OV_DELAY, 4000, 10000),
    (P.P_CHG_OC, 1, 5000),
    (P.P_BUZZER, 0, 1),
    (P.P_MODBUS_ADDR, 1, 247),
    (P.P_CUR_OFFSET, -5000, 5000),
)


def random_change(params, rng):
    i, lo, hi = FREE[rng.below(len(FREE))]
    params.set(i, lo + rng.below(hi - lo + 1))
