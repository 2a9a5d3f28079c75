# Seeded randomised property test of the protection: invariants A, B, C of
# safety_props.py (derived from docs/faults.md and docs/safety.md), over a
# bounded number of episodes in `make test`; SAFETY_EPISODES=N runs more,
# SAFETY_SEED=S starts elsewhere.  Its own suite shows that the checker
# catches a deliberately broken protection.
# MicroPython-compatible: runs under pytest and the unix port.
from bms import faults as F
from bms.protection import Protection
from safety_props import episodes_from_env, run_episode

EPISODES = 6
EPISODE_MS = 30000


def _seed0():
    try:
        import os
        v = os.getenv("SAFETY_SEED")
    except (ImportError, AttributeError):
        v = None
    return int(v) if v else 1000


def test_random_episodes_keep_invariants_a_b_c():
    n = episodes_from_env(EPISODES)
    s0 = _seed0()
    for seed in range(s0, s0 + n):
        v, trace = run_episode(seed, EPISODE_MS)
        assert not v, (seed, v, trace[-10:])


def _broken(run, patch_name, patched):
    """Run ``run()`` with Protection.``patch_name`` replaced; always restores it."""
    orig = getattr(Protection, patch_name)
    setattr(Protection, patch_name, patched)
    try:
        return run()
    finally:
        setattr(Protection, patch_name, orig)


def _find_violation(kind, hook=None, seeds=40):
    for seed in range(1000, 1000 + seeds):
        v, _t = run_episode(seed, EPISODE_MS, hook)
        for x in v:
            if x.startswith(kind):
                return x
    return None


def test_checker_catches_a_level2_protection_that_never_trips():
    orig_set = Protection._set

    def never_ov2_uv2(self, i, v, now):
        if i == F.OV2 or i == F.UV2:
            return   # the deliberately broken protection: ov2 / uv2 never trip
        orig_set(self, i, v, now)

    found = _broken(lambda: _find_violation("A: ov2") or _find_violation("A: uv2"),
                    "_set", never_ov2_uv2)
    assert found is not None


def test_checker_catches_an_overcurrent_protection_that_never_trips():
    orig_set = Protection._set

    def never_oc(self, i, v, now):
        if i in (F.CHG_OC, F.DSG_OC, F.PEAK, F.SHORT):
            return
        orig_set(self, i, v, now)

    found = _broken(lambda: _find_violation("A: "), "_set", never_oc)
    assert found is not None


def test_checker_catches_latches_lost_on_reboot():
    def forget(self, ids, now):
        return   # restore does nothing: a restart clears every latch

    found = _broken(lambda: _find_violation("C: "), "restore", forget)
    assert found is not None
