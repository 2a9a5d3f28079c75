"""Random frames never crash the master or a slave, and never make a slave talk out of turn."""
from hypothesis import given, settings, strategies as st

import tools  # noqa: F401
from can_helpers import LoopBus, LoopNode, ValueAfe
from bms.slave import Slave
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
