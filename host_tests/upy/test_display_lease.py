"""Display port: the lease request (0x04) and the real SOH in the summary
(issue 16, items 1 and 4); MicroPython-compatible."""
from bms import lease as L
from bms.store import State
from comms.display import DisplayPort
from display_peer import Port, frame, le, parse
from harness import Rig


def ask(port, dp, data):
    port.feed(data)
    dp.poll()
    dp.poll()
    return port.take()


def _setup(lease=None):
    r = Rig()
    r.run(2000)
    port = Port()
    return r, port, DisplayPort(port, r.bms, r.clock, lease=lease)


def test_lease_states_and_remaining_time():
    _r, port, dp = _setup()
    cmd, p = parse(ask(port, dp, frame(0x04)))
    assert cmd == 0x84 and len(p) == 5 and p[0] == 0 and le(p, 1, 4) == 0xFFFFFFFF
    st = State()
    ls = L.Lease(b"k" * 32, "SN1", st)
    _r, port, dp = _setup(ls)
    cmd, p = parse(ask(port, dp, frame(0x04)))
    assert p[0] == 1 and le(p, 1, 4) == 0xFFFFFFFF     # configured, no lease running
    ls.start(3 * 86400 + 3600)
    st.op_s += 3600
    cmd, p = parse(ask(port, dp, frame(0x04)))
    assert p[0] == 2 and le(p, 1, 4) == 3 * 86400
    st.op_s += 3 * 86400
    cmd, p = parse(ask(port, dp, frame(0x04)))
    assert p[0] == 3 and le(p, 1, 4) == 0               # expired
    cmd, p = parse(ask(port, dp, frame(0x04, b"\x00")))
    assert cmd == 0xFF and p == b"\x02"


def test_summary_soh_is_learned_over_rated():
    r, port, dp = _setup()
    s = r.bms.soc
    s.learned_mah = s.rated_mah * 87 // 100
    cmd, p = parse(ask(port, dp, frame(0x01)))
    assert cmd == 0x81 and le(p, 10, 2) == 870
