"""Modules block and `bmsctl modules` against the modular simulator.

A master with 4 slave modules x 8 cells (real slave and master firmware on
the simulated CAN bus) and its PC port on a pty; a real pymodbus client and
the real bmsctl read the modules block.  The client runs in a thread; the
test thread steps the simulation at up to 50x real time until the client is
done (client time-outs are wall-clock, the BMS runs in virtual time).
"""
import json

import pytest

import tools  # noqa: F401
from bms.params import P_MODULE_TIMEOUT
from pymodbus.client import ModbusSerialClient
from tools.bmsctl.cli import main
from tools.sim.modular import build_modular
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import drive, run_cli  # noqa: E402

A_MODS = 0x0600      # typed from docs/modbus.md, not taken from the register code
STRIDE = 16
SLAVES = 4
CELLS = 8


@pytest.fixture
def rig():
    sim = build_modular(SLAVES, CELLS, chem="LFP", seed=3)
    link = PcLink(sim)
    sim.run(3)
    assert sim.module_states() == ["ok"] * SLAVES
    yield sim, link
    link.close()


def client(link):
    c = ModbusSerialClient(link.path, baudrate=9600, timeout=2, retries=1)
    assert c.connect()
    return c


def read(c, addr, n):
    r = c.read_holding_registers(addr, count=n, device_id=1)
    assert not r.isError(), r
    return r.registers


def regs_word(link, addr):
    out = bytearray(2)
    assert link.regs.read(addr, 1, out, 0) == 0
    return out[0] << 8 | out[1]


def s16(v):
    return v - 0x10000 if v & 0x8000 else v


def test_all_modules_ok_with_their_cell_ranges(rig):
    sim, link = rig
    c = client(link)
    try:
        head, mods, cells = drive(sim, lambda: (
            read(c, A_MODS, 16), read(c, A_MODS + 16, SLAVES * STRIDE),
            c.read_input_registers(0x0400, count=SLAVES * CELLS, device_id=1).registers))
    finally:
        c.close()
    assert head[0] == SLAVES and head[1] == CELLS and head[2] == SLAVES * CELLS
    assert head[3] == SLAVES and head[4] == 0      # all ok, no comm fault
    assert head[6] == 0 and head[7] == 0           # CAN error active, never bus-off
    assert (head[9] << 16 | head[10]) > 0
    assert head[14] == sim.params[P_MODULE_TIMEOUT]
    pack_t = sim.pack.cell_temp_c
    for k in range(SLAVES):
        m = mods[k * STRIDE:(k + 1) * STRIDE]
        assert m[0] == 1, (k, m)                   # ok
        assert m[2] == 1 + CELLS * k and m[3] == CELLS
        assert m[4] <= 12                          # at most one 1 s sweep old
        assert m[5] == 0 and m[6] == 0            # never lost, no faults
        assert m[7] & 0x0F == 1                    # slave running
        assert m[9] == 3
        for j in range(3):
            assert abs(s16(m[10 + j]) / 10.0 - pack_t) < 1.0
        assert s16(m[13]) == -32768                # 4th sensor slot absent
        assert m[14] >> 8 == 0 and m[15] & 0xFF == 1   # firmware 0.x, protocol 1
    # The module's range in the cells block holds that module's cells.
    volts = sim.pack.cell_voltages()
    for i in range(SLAVES * CELLS):
        assert abs(cells[i] - volts[i] * 1000) < 10


def test_unplugged_module_reads_lost_within_timeout_and_recovers(rig):
    sim, link = rig
    timeout = sim.params[P_MODULE_TIMEOUT]
    c = client(link)
    try:
        assert drive(sim, lambda: read(c, A_MODS + 16 + 2 * STRIDE, 1)) == [1]
        sim.unplug(3)
        t_unplug = sim.t_ms
        # Until time-out minus one sweep after the unplug it is still ok.  Read
        # through the server's own register map at exact virtual times (a
        # Modbus read takes wall-clock-paced virtual time).
        while sim.t_ms < t_unplug + timeout - 1000 - 100:
            sim.step()
            assert regs_word(link, A_MODS + 16 + 2 * STRIDE) == 1
        # By the documented bound (time-out after its last status, plus the
        # master's 20 ms check; margin 100 ms) the register reads lost.  Run
        # the simulation to that moment first: the read itself takes
        # wall-clock-paced virtual time, so it only shows the state persists.
        deadline = t_unplug + timeout + 20 + 100
        while sim.t_ms < deadline:
            sim.step()
        assert sim.module_states()[2] == "lost"
        assert regs_word(link, A_MODS + 16 + 2 * STRIDE) == 2
        m3, head = drive(sim, lambda: (read(c, A_MODS + 16 + 2 * STRIDE, STRIDE),
                                       read(c, A_MODS, 16)))
        assert m3[0] == 2                          # lost
        assert m3[5] == 1                          # lost once
        assert m3[4] * 100 >= timeout - 100       # its data is that old
        assert head[3] == SLAVES - 1 and head[4] == 1
        others = drive(sim, lambda: read(c, A_MODS + 16, SLAVES * STRIDE))
        assert [others[k * STRIDE] for k in range(SLAVES)] == [1, 1, 2, 1]
        sim.plug(3)
        assert sim.run_until(lambda s: s.module_states()[2] == "ok", 5)
        m3 = drive(sim, lambda: read(c, A_MODS + 16 + 2 * STRIDE, STRIDE))
        assert m3[0] == 1 and m3[5] == 1 and m3[4] <= 12
    finally:
        c.close()


def test_bmsctl_modules_table_and_json(rig, capsys, monkeypatch):
    from tools.bmsctl import cli
    monkeypatch.setattr(cli.console, "width", 160)
    sim, link = rig
    sim.unplug(2)
    assert sim.run_until(lambda s: s.module_states()[1] == "lost", 4)
    capsys.readouterr()
    assert run_cli(sim, link, "modules", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    h = doc["header"]
    assert h["module_count"] == SLAVES and h["modules_ok"] == SLAVES - 1
    assert h["can_state_name"] == "error_active"
    mods = doc["modules"]
    assert [m["state_name"] for m in mods] == ["ok", "lost", "ok", "ok"]
    assert [m["first_cell"] for m in mods] == [1, 9, 17, 25]
    cells = sim.master.cell_mv
    for m in mods:
        if m["state_name"] != "ok":
            continue
        own = list(cells[m["first_cell"] - 1:m["first_cell"] - 1 + CELLS])
        assert abs(m["cell_min"] - min(own)) <= 3 and abs(m["cell_max"] - max(own)) <= 3
        assert m["cell_diff"] == m["cell_max"] - m["cell_min"]
        assert len(m["temps_c"]) == 3 and m["version_text"] == "0.1.0"
    assert mods[1]["lost_count"] == 1 and mods[1]["age_s"] >= 2.0
    capsys.readouterr()
    assert run_cli(sim, link, "modules") == 0
    out = capsys.readouterr().out
    assert "Slave modules: 4, 3 ok" in out
    rows = {}
    for ln in out.splitlines():
        f = ln.split()
        if len(f) == 14 and f[0].isdigit():    # 3 temperatures
            rows[int(f[0])] = f
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2][1] == "lost" and rows[2][3] == "9-16" and rows[2][4] == "-"
    for k, rng in ((1, "1-8"), (3, "17-24"), (4, "25-32")):
        r = rows[k]
        assert r[1] == "ok" and r[3] == rng
        own = list(cells[k * CELLS - CELLS:k * CELLS])
        assert abs(float(r[4]) * 1000 - min(own)) <= 3
        assert abs(float(r[5]) * 1000 - max(own)) <= 3
        t = sim.pack.cell_temp_c
        assert all(abs(float(x) - t) < 1.0 for x in r[7:10]) and r[-1] == "0.1.0"
    assert run_cli(sim, link, "monitor", "--once", "--by-module") == 0
    out = capsys.readouterr().out
    assert "Cell voltages by module" in out
    rows = {}
    for ln in out.splitlines():
        f = ln.split()
        if len(f) == 3 + CELLS and f[0].startswith("M") and f[2].startswith("#"):
            rows[f[0]] = f
    assert sorted(rows) == ["M1", "M2", "M3", "M4"]
    assert rows["M2"][1:3] == ["lost", "#9"] and rows["M2"][3:] == ["inval"] * CELLS
    for k in (1, 3, 4):
        r = rows["M%d" % k]
        assert r[1:3] == ["ok", "#%d" % (1 + CELLS * (k - 1))]
        own = cells[CELLS * (k - 1):CELLS * k]
        for j in range(CELLS):
            assert abs(float(r[3 + j].rstrip("B")) * 1000 - own[j]) <= 3


def test_single_board_reads_module_count_zero(capsys, tmp_path):
    sim = Simulation(chem="LFP", cells=16, seed=5)
    link = PcLink(sim)
    try:
        sim.run(1)
        capsys.readouterr()
        assert run_cli(sim, link, "modules") == 0
        assert "no CAN slave modules" in capsys.readouterr().out
        dump = tmp_path / "d.json"
        assert run_cli(sim, link, "dump", "--out", str(dump)) == 0
        rows = {r["name"]: r["raw"] for r in json.loads(dump.read_text())}
        assert rows["module_count"] == 0 and rows["module4.state"] == 0
    finally:
        link.close()
