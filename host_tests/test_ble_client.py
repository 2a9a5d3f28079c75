"""tools/bleclient over the BLE framing to a live BleLink: bmsctl's BmsClient
works unchanged over Bluetooth (monitor, cells, params, password gate), plus
ChangeBlueName and live notifications.  No radio, no bleak needed.
"""
import pytest

from bms.auth import CH_BLE, CH_MODBUS
from bms.params import P_BAL_DIFF
from comms import ble_link as BL
from comms.modbus_pdu import ModbusPdu
from comms.registers import RegisterMap
from tools.bleclient import BleModbusClient, Central, LoopbackTransport, decode_live
from tools.bmsctl.client import BmsClient, BmsError
from tools.sim.simulator import Simulation
from ble_peer import make_auth


@pytest.fixture(params=[23, 185])
def rig(request):
    sim = Simulation(chem="LFP", cells=16, soc=0.7)
    sim.run(2)
    auth = make_auth(sim.clock)
    regs = RegisterMap(sim.bms, auth, channel=CH_BLE)
    link = BL.BleLink(ModbusPdu(regs, sim.clock), sim.clock, live=BL.monitor_live(regs),
                      auth=auth)
    t = LoopbackTransport(link, mtu=request.param)
    mb = BleModbusClient(t)
    return sim, auth, link, t, mb, BmsClient("ble", client=mb).connect()


def test_monitor_and_cells_match_the_sim(rig):
    sim, _auth, _link, _t, _mb, bms = rig
    mon = bms.monitor()
    m = sim.bms.meas
    assert mon["cell_count"] == 16
    assert mon["soc"] == sim.bms.soc.soc_pm
    assert mon["cell_max"] == m.max_mv
    cells = bms.cells()
    assert cells == [m.cell_mv[i] for i in range(16)]
    assert len(bms.params()) > 50


def test_writes_need_the_ble_password(rig):
    sim, auth, _link, _t, _mb, bms = rig
    with pytest.raises(BmsError):
        bms.set_params({P_BAL_DIFF: 12})
    bms.unlock("123456")   # challenge-response: the password never goes over the air
    # While the published default is the password, Bluetooth refuses writes ...
    with pytest.raises(BmsError, match="default password"):
        bms.set_params({P_BAL_DIFF: 12})
    # ... except changing that password.
    bms.passwd("secret77")
    bms.set_params({P_BAL_DIFF: 12})
    assert sim.params[P_BAL_DIFF] == 12
    assert auth.role(CH_MODBUS) == 0


def test_ble_refuses_the_plaintext_unlock_and_replayed_answers(rig):
    from comms import registers as R
    from comms.regs import auth as RA
    sim, auth, _link, _t, _mb, bms = rig
    regs = [0x3132, 0x3334, 0x3536, 0, 0, 0, 0, 0]   # "123456" in the clear
    with pytest.raises(BmsError, match="plaintext"):
        bms.write(R.A_AUTH + RA.AU_UNLOCK, regs)
    # Record one exchange, then replay its answer: refused (the nonce is single use).
    sent = []
    orig = bms.write

    def spy(addr, values):
        if addr == R.A_AUTH + RA.AU_RESPONSE:
            sent.append(list(values))
        return orig(addr, values)
    bms.write = spy
    bms.unlock("123456")
    bms.write = orig
    bms.lock()
    with pytest.raises(BmsError):
        bms.write(R.A_AUTH + RA.AU_RESPONSE, sent[0])
    bms.write(R.A_AUTH + RA.AU_CHAL_REQ, [1])   # even with a fresh challenge outstanding
    with pytest.raises(BmsError, match="wrong password"):
        bms.write(R.A_AUTH + RA.AU_RESPONSE, sent[0])
    assert auth.role(1) == 0


def test_rename_and_live(rig):
    sim, _auth, link, t, mb, bms = rig
    assert mb.rename("Garage") == "locked: unlock first"
    bms.unlock("123456")
    bms.passwd("secret77")   # Bluetooth changes nothing else while the default is set
    assert mb.rename("Garage") == "ok" and link.name == b"Garage"
    assert mb.subscribe(500) == 500
    for _ in range(30):
        sim.step()
        link.poll()
        t.pump()
    assert 2 <= len(t.live) <= 4
    v = decode_live(t.live[-1])
    assert v["cell_count"] == 16 and abs(v["soc"] - sim.bms.soc.soc_pm) <= 2


def test_central_rejects_corrupted_notifications():
    c = Central(23)
    _seq, chunks = c.encode(BL.T_MODBUS, bytes(range(40)))
    bad = bytearray(chunks[-1])
    bad[-1] ^= 1
    for ch in chunks[:-1]:
        assert c.feed(ch) is None
    assert c.feed(bytes(bad)) is None and c.errors == 1
    for ch in chunks:
        r = c.feed(ch)
    assert r[1] == BL.T_MODBUS and r[2] == bytes(range(40))
