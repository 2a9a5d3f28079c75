"""1000 power cuts at random points during settings, state and log writes.

After every cut the board "reboots" (a new store and log on the same fake
flash): the settings and state must be exactly the last committed ones and
every log record on flash must read back intact and in order.
"""
from fakeflash import FakeFlash, PowerCut, XorShift
from store_rig import random_change

from bms import params as P
from bms.persistlog import PersistLog
from bms.store import SettingsStore, State

SESSIONS = 1000
SEGS = 4
PER_SEG = 8


def _boot(fs):
    params = P.ParamSet(P.CHEM_LFP, max_cells=16)
    store = SettingsStore(fs)
    store.load_params(params)
    state = store.load_state()
    log = PersistLog(fs, segments=SEGS, per_seg=PER_SEG, queue=16)
    return params, store, state, log


def _check_log(log, attempted, committed):
    recs = log.records()
    assert len(recs) == len(log)
    for k in range(1, len(recs)):
        assert recs[k][0] == recs[k - 1][0] + 1, "log out of order"
    for k in range(len(recs)):
        assert log.get(k) == recs[k]
    seen = {}
    for r in recs:
        seen[r[0]] = r
        assert attempted.get(r[0]) == (r[2], r[4], r[5]), "record %d not what was written" % r[0]
    lo = recs[0][0] if recs else 1 << 30
    for seq in committed:
        if seq >= lo:
            assert seq in seen, "committed record %d lost" % seq
    # The ring keeps at least (segments - 1) full segments of history.
    if committed:
        assert len(recs) >= min(len(committed), (SEGS - 1) * PER_SEG)
    return recs


def test_thousand_power_cuts():
    fs = FakeFlash()
    rng = XorShift(20240607)
    good_params = list(P.ParamSet(P.CHEM_LFP, max_cells=16).values)
    good_state = None
    attempted = {}
    committed = {}
    cuts_in_params = 0
    cuts_in_log = 0
    cuts_in_boot = 0
    for session in range(SESSIONS):
        fs.reboot()
        if rng.below(8) == 0:
            fs.cut_after(rng.below(400))  # a cut while the log repairs a torn tail
        try:
            params, store, state, log = _boot(fs)
        except PowerCut:
            cuts_in_boot += 1
            continue
        fs.cut_after(-1)
        assert list(params.values) == good_params, "session %d: settings not the committed ones" % session
        if good_state is None:
            assert state is None
        else:
            assert state is not None and state.same(good_state), "session %d: state lost" % session
        _check_log(log, attempted, committed)
        if state is None:
            state = State()
        nops = 1 + rng.below(5)
        est = 0
        plan = []
        for _ in range(nops):
            op = rng.below(3)
            plan.append(op)
            est += (900, 60, 200)[op]
        fs.cut_after(rng.below(est))
        op = -1
        try:
            for op in plan:
                if op == 0:
                    random_change(params, rng)
                    store.save_params(params)
                    good_params = list(params.values)
                elif op == 1:
                    state.soc_pm = rng.below(1001)
                    state.op_s += 1 + rng.below(600)
                    state.cycles += rng.below(2)
                    store.save_state(state)
                    good_state = state.copy()
                else:
                    pend = []
                    for _ in range(1 + rng.below(5)):
                        seq = log.next_seq
                        kind = rng.below(10)
                        a = rng.below(1000)
                        b = rng.below(100000) - 50000
                        log.append(session, kind, a, b)
                        attempted[seq] = (kind, a, b)
                        pend.append(seq)
                    log.flush()
                    for seq in pend:
                        committed[seq] = True
        except PowerCut:
            if op == 0:
                cuts_in_params += 1
            elif op == 2:
                cuts_in_log += 1
    fs.reboot()
    params, store, state, log = _boot(fs)
    assert list(params.values) == good_params
    _check_log(log, attempted, committed)
    assert fs.cuts > 700 and cuts_in_boot > 0, (fs.cuts, cuts_in_boot)               # the cuts really happened ...
    assert cuts_in_params > 100 and cuts_in_log > 100, (cuts_in_params, cuts_in_log)
    assert len(committed) > 500                  # ... and so did real progress


def test_cut_at_every_byte_of_one_settings_write():
    fs = FakeFlash()
    params = P.ParamSet(P.CHEM_LFP, max_cells=16)
    store = SettingsStore(fs)
    store.load_params(params)
    params.set(P.P_CAPACITY, 2000)
    store.save_params(params)
    before = fs.units
    params.set(P.P_CAPACITY, 3000)
    store.save_params(params)
    cost = fs.units - before
    assert cost > 700  # one whole record plus the open
    for n in range(cost + 1):
        fs2 = FakeFlash()
        p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
        s2 = SettingsStore(fs2)
        s2.load_params(p2)
        p2.set(P.P_CAPACITY, 2000)
        s2.save_params(p2)
        p2.set(P.P_CAPACITY, 3000)
        fs2.cut_after(n)
        try:
            s2.save_params(p2)
            done = True
        except PowerCut:
            done = False
        fs2.reboot()
        p3 = P.ParamSet(P.CHEM_LFP, max_cells=16)
        SettingsStore(fs2).load_params(p3)
        assert p3[P.P_CAPACITY] == (3000 if done else 2000), n
        assert done == (n == cost)
