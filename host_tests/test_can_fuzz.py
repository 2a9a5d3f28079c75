"""Random frames never crash the master or a slave, and never make a slave talk out of turn."""
from hypothesis import given, settings, strategies as st

import tools  # noqa: F401
from can_helpers import LoopBus, LoopNode, ValueAfe
from slave.core import Slave
from comms import can_ids as C
from comms.can_master import CanMaster

frames = st.lists(st.tuples(st.one_of(st.integers(0, 0x7FF),
                                      st.sampled_from([C.ID_SYNC, C.ID_ASSIGN, C.ID_REQUEST,
                                                       C.ID_BAL, C.ID_CONFIG, C.ID_STATUS,
                                                       C.ID_CELLS + 5, C.ID_TEMPS, C.ID_ANNOUNCE])),
                            st.binary(min_size=0, max_size=8), st.booleans()),
                  max_size=40)


@settings(max_examples=150, deadline=None)
@given(frames)
def test_master_survives_random_frames(fs):
    bus = LoopBus()
    node = LoopNode(bus, rx_depth=100)
    m = CanMaster(node, 4, now=0)
    m.configure(64, 16, 2500)
    now = 0
    for cid, data, ext in fs:
        node.deliver(cid, data, ext)
        now += 7
        m.poll(now)
    assert all(x <= 3 for x in m.mod_state)
    m.poll(now + 2600)
    m.poll(now + 2700)
    # whatever the noise did, 2.6 s of silence leaves no module trusted
    assert m.comm_fault and all(x != 1 for x in m.mod_state)


@settings(max_examples=150, deadline=None)
@given(frames)
def test_slave_survives_random_frames(fs):
    bus = LoopBus()
    node = LoopNode(bus, rx_depth=100)
    afe = ValueAfe(16)
    s = Slave(node, afe, addr=3, cells=16, now=0)
    now = 0
    for cid, data, ext in fs:
        node.deliver(cid, data, ext)
        now += 3
        s.step(now)
    assert 0 <= afe.mask < (1 << 16)
    assert 1 <= s.cells <= 16 and 500 <= s.uv_mv < s.ov_mv <= 5000
    for cid, data in node.sent:
        assert len(data) == 8
        assert cid in (C.ID_STATUS + 2, C.ID_TEMPS + 2, C.ID_VERSION + 2) or \
            C.cells_id(3, 0) <= cid <= C.cells_id(3, 3)


fw_frames = st.lists(st.tuples(st.sampled_from([C.ID_FWCTL + 2, C.ID_FWDATA + 2, C.ID_SYNC,
                                                C.ID_FWCTL, C.ID_FWDATA + 15]),
                               st.one_of(st.binary(min_size=0, max_size=8),
                                         # well-formed looking control frames: op, session, size
                                         st.tuples(st.integers(0, 7), st.integers(0, 255),
                                                   st.integers(0, 1 << 24)).map(
                                             lambda t: bytes((t[0], t[1])) + t[2].to_bytes(4, "little")
                                             + b"\0\0"))),
                     max_size=60)


@settings(max_examples=120, deadline=None)
@given(fw_frames)
def test_slave_update_receiver_survives_random_frames(fs):
    """Garbage on the firmware-update ids: the slave keeps running, answers only
    with its own ids, never reboots, and its running firmware stays untouched."""
    from fakeflash import FakeFlash
    from bms import update as U
    from slave.fw import SlaveFw
    bus = LoopBus()
    node = LoopNode(bus, rx_depth=100)
    afe = ValueAfe(16)
    s = Slave(node, afe, addr=3, cells=16, now=0)
    flash = FakeFlash()
    resets = []
    s.fw = SlaveFw(s, U.Updater(flash), reset=lambda: resets.append(1), now=0)
    now = 0
    for cid, data in fs:
        node.deliver(cid, data, False)
        now += 3
        s.step(now)
    for _ in range(50):   # let any finish run to its end
        now += 3
        s.step(now)
    assert not resets
    assert U.Updater(flash).select_at_boot() == ""       # still the running firmware
    for cid, data in node.sent:
        assert len(data) == 8
        assert cid in (C.ID_STATUS + 2, C.ID_TEMPS + 2, C.ID_VERSION + 2, C.ID_FWACK + 2) or \
            C.cells_id(3, 0) <= cid <= C.cells_id(3, 3), hex(cid)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=8)),
                min_size=1, max_size=30))
def test_slave_update_forwarder_survives_forged_acknowledgements(forged):
    """Forged or garbled FWACK frames during a transfer: the master's forwarder
    never crashes or hangs; it ends updated or with a reason, and always
    releases the relay hold."""
    from can_fwrig import FwRig, slave_package
    from comms import slave_update as SU
    r = FwRig(n=2)
    assert r.run_until(lambda: all(r.master.mod_state[k] == 1 for k in range(2)), 5000) >= 0
    pkg, digest, sig = slave_package(version=(0, 2, 0))
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    forged = sorted(forged)
    t = 0
    k = 0
    while r.fwd.phase < SU.FP_DONE and t < 200000:
        while k < len(forged) and forged[k][0] * 10 <= t:
            r.mnode.deliver(C.ID_FWACK, forged[k][1], False)
            k += 1
        r.step()
        t += 2
    assert r.fwd.phase >= SU.FP_DONE, "forwarder hung"
    if r.fwd.phase != SU.FP_DONE:
        assert r.fwd.err_text
    r.run(200)
    assert r.bms.inhibit == 0
