"""Lease tokens: authentic ones renew, forged/replayed/foreign ones are refused."""
from store_rig import raises

from bms import lease as L
from bms.digest import hmac_sha256
from bms.store import State

SECRET = hmac_sha256(b"vendor master key", b"SN-000123")
SERIAL = "SN-000123"


def _lease():
    return L.Lease(SECRET, SERIAL, State())


def test_token_format_and_independent_mac():
    code = L.make_token(SECRET, SERIAL, 1, 30)
    assert len(code) == 17 and code[5] == "-" and code[11] == "-"
    # Recompute the MAC independently of the module's helper.
    import struct
    msg = b"BMSLEASE1|SN-000123|" + struct.pack(">I", 1) + b"|" + struct.pack(">H", 30)
    raw = struct.pack(">HH", 1, 30) + hmac_sha256(SECRET, msg)[:5]
    assert L.b32decode(code, 9) == raw
    assert L.parse_token(SECRET, SERIAL, code.lower().replace("-", " ")) == (1, 30)


def test_renewal_extends_in_operating_time():
    ls = _lease()
    st = ls.state
    assert not ls.blocked and ls.remaining_s() == -1
    assert ls.enter(L.make_token(SECRET, SERIAL, 1, 10), 0) == (1, 10)
    assert ls.remaining_s() == 10 * 86400 and ls.changed
    st.op_s += 10 * 86400 - L.WARN_S
    assert ls.warning and not ls.blocked
    st.op_s += L.WARN_S
    assert ls.blocked and ls.remaining_s() == 0
    ls.enter(L.make_token(SECRET, SERIAL, 2, 5), 0)
    assert not ls.blocked and ls.remaining_s() == 5 * 86400
    # Early renewal adds to the end, it does not restart from now.
    st.op_s += 86400
    ls.enter(L.make_token(SECRET, SERIAL, 3, 5), 0)
    assert ls.remaining_s() == 9 * 86400
    ls.enter(L.make_token(SECRET, SERIAL, 4, 0), 0)  # days=0: lease removed
    assert not ls.active and not ls.blocked


def test_replay_forgery_and_other_device_refused():
    ls = _lease()
    t1 = L.make_token(SECRET, SERIAL, 5, 30)
    ls.enter(t1, 0)
    e = raises(L.LeaseError, ls.enter, t1, 10000)
    assert "already used" in str(e)
    now = 100000
    old = L.make_token(SECRET, SERIAL, 4, 365)   # authentic but older counter
    raises(L.LeaseError, ls.enter, old, now)
    now += 10000000
    foreign = L.make_token(hmac_sha256(b"vendor master key", b"SN-000999"), "SN-000999", 6, 30)
    e = raises(L.LeaseError, ls.enter, foreign, now)
    assert "not valid" in str(e)
    # Flip one character of a genuine code: the MAC no longer matches.
    good = L.make_token(SECRET, SERIAL, 6, 30)
    c = good[10]
    forged = good[:10] + ("A" if c != "A" else "B") + good[11:]
    now += 10000000
    raises(L.LeaseError, ls.enter, forged, now)
    # Raise the days field: refused too.
    raw = bytearray(L.b32decode(good, 9))
    raw[3] = 0xFF
    now += 10000000
    raises(L.LeaseError, ls.enter, L.b32encode(bytes(raw)), now)
    assert ls.state.lease_counter == 5 and ls.remaining_s() == 30 * 86400
    now += 10000000
    assert ls.enter(good, now) == (6, 30)


def test_wrong_codes_back_off():
    ls = _lease()
    bad = "00000-00000-00000"
    raises(L.LeaseError, ls.enter, bad, 0)
    e = raises(L.LeaseError, ls.enter, L.make_token(SECRET, SERIAL, 1, 1), 500)
    assert "locked" in str(e)                   # even a good code waits out the back-off
    raises(L.LeaseError, ls.enter, bad, 1000)     # 2nd failure: 2 s
    e = raises(L.LeaseError, ls.enter, bad, 2500)
    assert "retry in 1 s" in str(e)
    assert ls.enter(L.make_token(SECRET, SERIAL, 1, 1), 3000) == (1, 1)
    raises(L.LeaseError, ls.enter, "ABC", 10000)  # wrong length


def test_beep_pattern_only_in_warning():
    ls = _lease()
    ls.start(L.WARN_S + 100)
    assert not ls.beep(0)
    ls.state.op_s += 200
    beeps = sum(1 for t in range(0, 600000, 100) if ls.beep(t))
    assert beeps == 3
