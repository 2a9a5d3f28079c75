"""Battery data, per-cell balancing and the names block through the Modbus
path (pymodbus) and bmsctl (issue 16, item 4)."""
import pytest

import tools  # noqa: F401
from comms import registers as R
from comms.regs import balance as RBL
from comms.regs import battery as RB
from comms.regs.identity import DeviceInfo
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli, with_client  # noqa: E402

PW = "123456"


@pytest.fixture
def rig():
    sim = Simulation(chem="LFP", cells=16, capacity_ah=100.0, soc=0.6, seed=5)
    store = {}
    link = PcLink(sim, info=DeviceInfo(model="MPY-BMS-SIM", serial="SIM00001", store=store))
    sim.run(3)
    yield sim, link, store
    link.close()


def _read(sim, link, addr, n):
    return with_client(sim, link, lambda c: c.read(addr, n))


def test_soh_is_learned_over_rated_capacity(rig, capsys):
    sim, link, _ = rig
    regs = _read(sim, link, R.A_BATTERY, RB.SIZE)
    assert regs[RB.B_SOH] == 1000   # nothing learned yet
    assert (regs[RB.B_RATED] << 16) | regs[RB.B_RATED + 1] == 100000
    s = sim.bms.soc
    s.learned_mah = 91500
    s.last_learned_mah = 90000
    s.total_dsg_mah = 123456
    regs = _read(sim, link, R.A_BATTERY, RB.SIZE)
    assert regs[RB.B_SOH] == 915
    assert (regs[RB.B_LEARNED] << 16) | regs[RB.B_LEARNED + 1] == 91500
    assert (regs[RB.B_CAL_CAP] << 16) | regs[RB.B_CAL_CAP + 1] == 90000
    assert (regs[RB.B_DSG_TOTAL] << 16) | regs[RB.B_DSG_TOTAL + 1] == 123456
    assert _read(sim, link, R.monitor_address("soh"), 1)[0] == 915
    assert run_cli(sim, link, "battery") == 0
    out = capsys.readouterr().out
    assert "91.5 %" in out and "91.50 / 100.00 Ah" in out and "123.5 Ah" in out


def test_limits_and_per_cell_balancing_on_the_monitor(rig, capsys):
    sim, link, _ = rig
    bal = sim.bms.balancer
    # Cell 3 bled for one hour (4 sweeps of 250 ms per second) at 100 mA: 100 mAh.
    bal.on_count[2] = 4 * 3600
    regs = _read(sim, link, R.A_BALANCE, RBL.BL_CELLS + 16)
    assert regs[RBL.BL_CURRENT] == 100
    assert regs[RBL.BL_CELLS + 2] == 100 and regs[RBL.BL_CELLS + 3] == 0
    assert run_cli(sim, link, "--password", PW, "params", "set", "bal_current=250mA") == 0
    regs = _read(sim, link, R.A_BALANCE, RBL.BL_CELLS + 16)
    assert regs[RBL.BL_CELLS + 2] == 250
    ccl = _read(sim, link, R.A_STATUS + 1, 1)[0]   # the status block's CCL
    from bms.params import index as pidx
    assert 0 < ccl <= sim.params[pidx("chg_oc")]   # 0.1 A both
    capsys.readouterr()
    assert run_cli(sim, link, "monitor", "--once") == 0
    out = " ".join(capsys.readouterr().out.split())
    import re
    assert re.search(r"CCL / DCL \(current limits\) │ \d+\.\d A / \d+\.\d A", out), out
    assert "3: 250 mAh" in out


def test_names_need_their_role_and_persist(rig, capsys):
    sim, link, store = rig
    assert run_cli(sim, link, "name", "ble", "MyPack") == 1
    assert "locked" in capsys.readouterr().out
    assert run_cli(sim, link, "--password", PW, "name", "ble", "MyPack") == 0
    assert run_cli(sim, link, "--password", PW, "name", "device", "Garage 1") == 0
    # Battery code: the factory role.
    assert run_cli(sim, link, "--password", PW, "battery", "set", "type=LFP 16S") == 1
    assert "factory role" in capsys.readouterr().out
    assert run_cli(sim, link, "--password", "factory", "battery", "set", "type=LFP 16S",
                   "nominal=51.2V", "capacity=280Ah", "maker=EVE", "date=2026-03-01") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "LFP 16S / EVE / 2026-03-01" in out and "51.20 V, 280.0 Ah" in out
    # A restart: a new DeviceInfo on the same store has them back.
    again = DeviceInfo(store=store)
    assert again.field_text("ble_name", 16) == "MyPack"
    assert again.field_text("device_name", 16) == "Garage 1"
    assert again.num("bat_nominal") == 5120 and again.num("bat_capacity") == 2800
    assert again.field_text("bat_maker", 8) == "EVE"
    # The BLE link reads the same stored name (its own rename key) at its start.
    from comms import ble_link as BL
    from comms.regs import names as RN
    assert RN._BLE_MAX == BL._MAX_NAME
    link2 = BL.BleLink(None, sim.clock, store=store, name=b"MPY-BMS")
    assert link2.name == b"MyPack"
    assert run_cli(sim, link, "--password", PW, "name", "ble", "x" * 21) == 1
    assert "1 to 20 characters" in capsys.readouterr().out
    assert run_cli(sim, link, "info") == 0
    assert "MyPack" in capsys.readouterr().out
