"""docs/home_assistant_modbus.yaml read back like Home Assistant would: pymodbus reads every
entity's address with its data type, scale and nan_value from the simulator's PC pty, and
the value is compared with the pack model.
"""
import os
import threading

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("pymodbus")
from pymodbus.client import ModbusSerialClient  # noqa: E402

import tools  # noqa: E402,F401
from tools import gen_ha  # noqa: E402
from tools.sim.pclink import PcLink, run_realtime  # noqa: E402
from tools.sim.simulator import Simulation  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAML = os.path.join(ROOT, "docs", "home_assistant_modbus.yaml")
WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2}


def load():
    with open(YAML) as f:
        return yaml.safe_load(f)["modbus"][0]


def test_yaml_is_what_the_map_generates():
    with open(YAML) as f:
        assert f.read() == gen_ha.gen_yaml(), "run `make docs`"


def decode(regs, data_type, nan_value=None):
    """Home Assistant's reading of ``regs``: None for the nan_value."""
    raw = regs[0] if len(regs) == 1 else (regs[0] << 16) | regs[1]
    if nan_value is not None and raw == int(str(nan_value), 16):
        return None
    if data_type.startswith("int"):
        bits = 16 * len(regs)
        if raw & (1 << (bits - 1)):
            raw -= 1 << bits
    return raw


@pytest.fixture
def live():
    sim = Simulation(chem="LFP", cells=16, capacity_ah=100.0, soc=0.6, seed=4)
    sim.pack.charger_a = 25.0
    sim.pack.charger_cv = 16 * 3.6
    link = PcLink(sim)
    sim.run(3)
    stop = threading.Event()
    th = threading.Thread(target=run_realtime, args=(sim,), kwargs={"speed": 5.0, "stop": stop},
                          daemon=True)
    th.start()
    client = ModbusSerialClient(link.path, baudrate=9600, timeout=2, retries=1)
    assert client.connect()
    yield sim, client
    client.close()
    stop.set()
    th.join(5)
    link.close()


def _read(client, ent):
    n = WIDTH.get(ent.get("data_type", "uint16"), 1)
    r = client.read_holding_registers(ent["address"], count=n, device_id=ent["slave"])
    assert not r.isError(), (ent["name"], r)
    v = decode(r.registers, ent.get("data_type", "uint16"), ent.get("nan_value"))
    return None if v is None else v * ent.get("scale", 1)


def test_every_entity_reads_back_like_the_pack(live):
    sim, client = live
    conf = load()
    pack = sim.pack
    bms = sim.bms
    cells = pack.cell_voltages()
    v = pack.pack_voltage()
    i = pack.current_a
    c = bms.contactors.state
    from bms.contactors import RELAY_NAMES
    relay = dict((n, bool(c[k])) for k, n in enumerate(RELAY_NAMES))
    # (expected, tolerance); None: "unavailable" (nan_value).
    expect = {
        "pack_voltage": (v, 0.1), "current": (i, 0.3), "power": (v * i, 0.02 * v * i + 10),
        "soc": (pack.true_soc() * 100, 2.0), "soh": (100.0, 0.01),
        "remaining_capacity": (pack.true_soc() * 100.0, 2.0),
        "cell_max": (max(cells), 0.006), "cell_min": (min(cells), 0.006),
        "cell_diff": (max(cells) - min(cells), 0.008),
        "t_cell_max": (pack.cell_temp_c, 1.5), "t_cell_min": (pack.cell_temp_c, 1.5),
        "t_power_max": (pack.power_temp_c, 1.5), "t_balance_max": (pack.balance_temp_c, 1.5),
        "t_ambient_max": (None, 0),                    # the simulated board has no ambient NTC
        "charge_current_limit": (80.0, 0.01), "discharge_current_limit": (120.0, 0.01),
        "charge_voltage_limit": (16 * 3.55, 0.01),
        "fault_level": (0, 0), "faults_0": (0, 0), "faults_1": (0, 0),
        "balancing_count": (bms.balancer.count, 16),
    }
    binary = {
        "alarm": False, "protection": False, "charge_allowed": True, "discharge_allowed": True,
        "relay_charge": relay["charge"], "relay_discharge": relay["discharge"],
        "relay_precharge": relay["precharge"], "relay_heater": relay["heater"],
    }
    seen = set()
    for ent in conf["sensors"]:
        key = ent["unique_id"][len(gen_ha.PREFIX):]
        want, tol = expect[key]
        got = _read(client, ent)
        if want is None:
            assert got is None, (key, got)
        else:
            assert got is not None and abs(got - want) <= tol, (key, got, want)
        seen.add(key)
    for ent in conf["binary_sensors"]:
        key = ent["unique_id"][len(gen_ha.PREFIX):]
        got = _read(client, ent)
        assert bool(int(got) & 1) == binary[key], (key, got)   # HA uses bit 0
        seen.add(key)
    assert seen == set(expect) | set(binary)


def test_validity_register_marks_the_missing_ambient_sensor(live):
    sim, client = live
    from comms.registers import A_STATUS
    r = client.read_holding_registers(A_STATUS, count=1, device_id=1)
    assert not r.isError()
    valid = r.registers[0]
    assert valid & 0x07 == 0x07          # power, balance, cell sensors present
    assert valid & 0x08 == 0              # no ambient sensor
    assert valid & 0x70 == 0x70           # cells, current, running


def test_status_block_rows_follow_the_relay_and_role_tables():
    from bms.contactors import RELAY_NAMES
    from bms.measurements import ROLE_NAMES, T_NONE_MAX
    from comms.regs import status
    names = [r[0] for r in status.STATUS]
    assert [n[len("relay_"):] for n in names if n.startswith("relay_")] == list(RELAY_NAMES)
    assert list(status.VALID_NAMES[:4]) == ["t_" + r for r in ROLE_NAMES]
    assert status._T_NONE_MAX == T_NONE_MAX
    offs = status.offsets()
    assert offs[-1] + 1 == status.SIZE
