"""A real third-party client (pymodbus) on the simulator's PC port (a pty).

The firmware Modbus server runs inside the simulation exactly as on a board;
the simulation is paced at 20x real time in a thread while pymodbus talks
to the pty at 9600 baud.
"""
import threading

import pytest

pytest.importorskip("pymodbus")
from pymodbus.client import ModbusSerialClient  # noqa: E402

import tools  # noqa: E402,F401
from bms.measurements import ROLE_CELL, ROLE_POWER  # noqa: E402
from comms.registers import A_CELLS, A_MON, A_PARAMS  # noqa: E402
from comms.regs.monitor import MONITOR, SIZE as MON_SIZE, offsets  # noqa: E402
from tools.sim.pclink import PcLink, run_realtime  # noqa: E402
from tools.sim.simulator import Simulation  # noqa: E402


@pytest.fixture
def live():
    sim = Simulation(chem="LFP", cells=20, soc=0.6, seed=3)
    link = PcLink(sim)
    sim.run(3)
    stop = threading.Event()
    th = threading.Thread(target=run_realtime, args=(sim,), kwargs={"speed": 20.0, "stop": stop},
                          daemon=True)
    th.start()
    client = ModbusSerialClient(link.path, baudrate=9600, timeout=2, retries=1)
    assert client.connect()
    yield sim, link, client
    client.close()
    stop.set()
    th.join(5)
    link.close()


def _decode(regs):
    out = {}
    for row, o in zip(MONITOR, offsets()):
        name, typ = row[0], row[1]
        if typ in ("u32", "s32"):
            v = (regs[o] << 16) | regs[o + 1]
            if typ == "s32" and v & 0x80000000:
                v -= 1 << 32
        else:
            v = regs[o]
            if typ == "s16" and v & 0x8000:
                v -= 1 << 16
        out[name] = v
    return out


def test_pymodbus_reads_monitor_and_all_cells(live):
    sim, link, client = live
    r = client.read_holding_registers(A_MON, count=MON_SIZE, device_id=1)
    assert not r.isError(), r
    mon = _decode(r.registers)
    cells = []
    for start in range(0, 256, 125):
        n = min(125, 256 - start)
        rr = client.read_input_registers(A_CELLS + start, count=n, device_id=1)
        assert not rr.isError(), rr
        cells += rr.registers
    pack = sim.pack
    truth = [v * 1000.0 for v in pack.cell_voltages()]
    # Sensor resolution: 1 mV quantisation plus the simulated +-1 mV noise.
    assert len(truth) == 20
    for i in range(20):
        assert abs(cells[i] - truth[i]) <= 2.5, (i, cells[i], truth[i])
    assert cells[20:] == [0] * 236
    assert mon["cell_count"] == 20
    assert abs(mon["cell_max"] - max(truth)) <= 2.5
    assert abs(mon["cell_min"] - min(truth)) <= 2.5
    assert 1 <= mon["cell_max_index"] <= 20
    assert abs(mon["pack_voltage"] - pack.pack_voltage() * 1000.0) <= 5
    assert abs(mon["current"] - pack.current_a * 1000.0) <= 25  # +-20 mA shunt noise
    # Booted without a stored state, the estimator weighs the first readings:
    # on the LFP plateau 1 mV of cell voltage is ~7 per mille of SOC.
    assert abs(mon["soc"] - pack.true_soc() * 1000.0) <= 20
    assert abs(mon["t_cell_max"] - pack.cell_temp_c * 10.0) <= 1
    assert abs(mon["t_power_max"] - pack.power_temp_c * 10.0) <= 1
    assert mon["running"] == 1 and mon["mode"] == sim.bms.mode
    relays = sum(1 << i for i, s in enumerate(sim.bms.contactors.state) if s)
    assert mon["relays"] == relays
    assert ROLE_CELL == 2 and ROLE_POWER == 0


def test_pymodbus_params_device_id_and_exceptions(live):
    sim, link, client = live
    r = client.read_holding_registers(A_PARAMS, count=len(sim.params.values), device_id=1)
    assert not r.isError()
    assert list(r.registers[:4]) == [v & 0xFFFF for v in sim.params.values[:4]]
    # Writes need the password first: exception 01, nothing changes.
    w = client.write_register(A_PARAMS + 44, 0, device_id=1)
    assert w.isError() and w.exception_code == 1
    assert sim.params.values[44] == 1
    d = client.read_device_information(read_code=1, object_id=0, device_id=1)
    assert not d.isError()
    assert d.information[1] == b"MPY-BMS-SIM"
    bad = client.read_holding_registers(0x7000, count=2, device_id=1)
    assert bad.isError() and bad.exception_code == 2
    assert link.server.crc_errors == 0 and link.server.framing_errors == 0
    # Wire timing of the link: no reply before t3.5 (3.65 ms at 9600 8N1)
    # of silence after the request, and not much later either.
    assert link.first_reply_delay_ms
    assert all(3.64 <= d <= 8.0 for d in link.first_reply_delay_ms), link.first_reply_delay_ms
