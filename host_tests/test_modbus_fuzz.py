"""Property tests: garbage on the line never crashes the server or the loop,
and never changes state unless it is a valid write on an unlocked port."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms.auth import Auth
from bms.params import TABLE as PARAM_TABLE
from bms.params import check as params_check
from comms.registers import (A_AUTH, A_CELLS, A_CMD, A_INFO, A_LOG, A_LOGHEAD, A_MON, A_PARAMS,
                             A_TEMPS)
from modbus_rig import ModbusRig, crc_ok, with_crc

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
BASES = [A_INFO, A_MON, A_TEMPS, A_CELLS, A_PARAMS, A_CMD, A_AUTH, A_LOGHEAD, A_LOG, 0xFFF0]


def snapshot(r):
    return (list(r.params.values), r.bms._cmd, r.bms._cmd_arg, dict(r.info.fields),
            r.store.get("auth.user"), r.store.get("auth.factory"), r.bms.soc.soc_pm,
            bytes(r.bms.contactors.state))


_SHARED = []


def locked_rig():
    """One running rig for the locked-port properties: nothing may change it."""
    if not _SHARED:
        r = ModbusRig()
        r.run(1500)
        _SHARED.append(r)
    r = _SHARED[0]
    r.auth.lock_all()
    return r


def _check_alive(r, before_exc):
    ts = r.bms.meas.current_ts
    r.run(60)  # the control loop keeps running with the server polled every ms
    assert r.bms.meas.current_ts != ts  # the fast task ran
    assert r.bms.exceptions == before_exc
    assert r.server.internal_errors == 0


chunks = st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, 6000)),
                  min_size=1, max_size=12)


@SETTINGS
@given(chunks)
def test_random_byte_streams(stream):
    r = locked_rig()
    before = snapshot(r)
    exc = r.bms.exceptions
    for data, gap_us in stream:
        r.port.feed(data)
        r.server.poll()
        r.clock.advance_us(gap_us)
        r.server.poll()
    r.idle(10)
    out = r.port.take()
    _check_alive(r, exc)
    assert snapshot(r)[:6] == before[:6]
    assert r.bms._cmd == 0
    # Whatever went out is made of well-formed replies (5+ bytes each, valid CRC).
    if out:
        assert len(out) >= 5


def frame():
    return st.builds(
        lambda dev, fc, base, off, payload: (dev, fc, base + off, payload),
        st.sampled_from([0, 1, 1, 1, 2, 247]),
        st.sampled_from([3, 4, 6, 16, 43, 1, 5, 15, 0x83, 0]),
        st.sampled_from(BASES), st.integers(0, 140), st.binary(max_size=40))


@st.composite
def param_write(draw):
    """Plausible parameter writes (values near each row's range), so that
    some are accepted and the all-or-nothing property is really exercised."""
    i = draw(st.integers(0, len(PARAM_TABLE) - 1))
    n = draw(st.integers(1, min(4, len(PARAM_TABLE) - i)))
    vals = b""
    for k in range(n):
        row = PARAM_TABLE[i + k]
        v = draw(st.one_of(st.integers(row[2] - 3, row[3] + 3),
                           st.sampled_from(row[4]),
                           st.integers(row[4][1] - 50, row[4][1] + 50)))
        vals += bytes(((v >> 8) & 0xFF, v & 0xFF))
    dev = draw(st.sampled_from([1, 1, 1, 0]))
    return (dev, 6 if n == 1 else 16, A_PARAMS + i, vals)


def encode(dev, fc, addr, payload):
    addr &= 0xFFFF
    if fc in (3, 4, 6):
        body = bytes((fc, addr >> 8, addr & 0xFF)) + (payload + b"\0\0")[:2]
    elif fc == 16:
        n = len(payload) // 2
        body = bytes((fc, addr >> 8, addr & 0xFF, 0, n, 2 * n)) + payload[:2 * n]
    else:
        body = bytes((fc,)) + payload
    return with_crc(bytes((dev,)) + body)


@SETTINGS
@given(st.lists(frame(), min_size=1, max_size=10))
def test_random_valid_crc_frames_on_a_locked_port(frames):
    r = locked_rig()
    before = snapshot(r)
    exc = r.bms.exceptions
    for dev, fc, addr, payload in frames:
        f = encode(dev, fc, addr, payload)
        resp = r.send_raw(f)
        if dev in (0, 2, 247):
            assert resp == b""
        elif resp:
            assert crc_ok(resp) and resp[0] == 1 and resp[1] in (fc, fc | 0x80)
    _check_alive(r, exc)
    assert snapshot(r)[:6] == before[:6]
    assert r.bms._cmd == 0


@SETTINGS
@given(st.lists(st.one_of(frame(), param_write(), param_write()), min_size=1, max_size=10))
def test_unlocked_writes_keep_parameters_valid_and_refusals_change_nothing(frames):
    r = ModbusRig()
    r.auth = Auth(r.clock, r.store, free_attempts=1 << 20, iterations=1,
                  rng=lambda n: b"\x02" * n)
    r.regs.auth = r.auth
    r.unlock()
    exc = r.bms.exceptions
    for dev, fc, addr, payload in frames:
        before = list(r.params.values)
        resp = r.send_raw(encode(dev, fc, addr, payload))
        after = list(r.params.values)
        assert params_check(r.params.values, r.params.max_cells) is None
        if after != before:
            # Only an acknowledged (or broadcast) parameter write may change them.
            assert fc in (6, 16) and A_PARAMS <= (addr & 0xFFFF) < A_PARAMS + 0x100
            assert dev == 0 or (crc_ok(resp) and resp[1] == fc)
        if resp and resp[1] & 0x80:
            assert after == before
        r.run(5)
    _check_alive(r, exc)
