"""`make sim` as a tool: named state folder, settings and log kept, --fresh, ports, piped output,
and the inverter CAN on SocketCAN or (without vcan) python-can's virtual bus.
"""
import os
import subprocess
import sys

import can
import cantools
import pytest

import tools  # noqa: F401
from bms.params import index
from tools.sim import __main__ as simcli
from tools.sim.canlink import InverterLink, ModuleBusMirror, socketcan_missing
from tools.sim.flashdir import FlashDir
from tools.sim.simulator import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = cantools.database.load_file(os.path.join(ROOT, "docs", "inverter_pylon.dbc"))


def _sim(path):
    sim = Simulation(chem="LFP", cells=16, soc=0.5)
    sim.attach_flash(path)
    sim.attach_settings()
    return sim


def test_settings_and_log_survive_a_restart(tmp_path):
    d = str(tmp_path / "state")
    sim = _sim(d)
    sim.run(2)
    sim.params.set_many([(index("ov1"), 3600)])
    sim.run(1)
    sim.log.append(sim.clock.ticks_ms(), 1, 0, 0)     # an event for the persistent log
    sim.run(1)
    before = sim.plog.records()
    assert before
    del sim
    again = _sim(d)
    assert again.params[index("ov1")] == 3600
    assert again.settings_report == []                 # loaded, nothing migrated
    assert again.plog.records()[:len(before)] == before


def test_cell_count_of_the_run_wins_over_the_stored_one(tmp_path):
    d = str(tmp_path / "state")
    sim = _sim(d)
    sim.params.set_many([(index("cell_count"), 8)])
    sim.run(1)
    again = _sim(d)
    assert again.params[index("cell_count")] == 16


def test_chemistry_of_the_run_wins_over_the_stored_one(tmp_path):
    # `make sim ARGS="--state mypack --chem NMC"` after an LFP run in mypack:
    # the simulated cells are NMC, like cell_count the chemistry describes
    # the pack itself; the stored LFP limits (ov1 3.65 V) would trip at once
    # on NMC cells at half charge and hide what the run was started for.
    d = str(tmp_path / "state")
    sim = _sim(d)
    sim.params.set_many([(index("ov1"), 3600)])
    sim.run(1)
    again = Simulation(chem="NMC", cells=16, soc=0.5)
    again.attach_flash(d)
    again.attach_settings()
    assert again.params[index("chemistry")] == 0 and again.params[index("ov1")] == 4200
    back = _sim(d)   # the same chemistry again keeps what was stored
    back.params.set_many([(index("ov1"), 3600)])
    back.run(1)
    assert _sim(d).params[index("ov1")] == 3600


def test_state_folder_is_named_and_fresh_empties_it(tmp_path, monkeypatch):
    monkeypatch.setattr(simcli, "STATE_ROOT", str(tmp_path))
    a = simcli.main.__globals__["argparse"].Namespace(
        flash=None, state=None, chem="LFP", cells=16, slaves=0, fresh=False)
    p = simcli.state_dir(a)
    assert p == str(tmp_path / "LFP-16S") and os.path.isdir(p)
    open(os.path.join(p, "marker"), "w").close()
    assert os.path.exists(os.path.join(simcli.state_dir(a), "marker"))
    a.fresh = True
    assert not os.path.exists(os.path.join(simcli.state_dir(a), "marker"))
    a.state, a.fresh = "../escape", False
    with pytest.raises(SystemExit):
        simcli.state_dir(a)


def test_fresh_with_a_flash_dir_of_ones_own_is_refused_not_claimed(tmp_path):
    # --fresh "start the state folder over"; with --flash DIR the folder was
    # left as it was while the sim printed "(fresh)" and loaded its settings.
    own = tmp_path / "mine"
    own.mkdir()
    (own / "marker").write_text("")
    a = simcli.main.__globals__["argparse"].Namespace(
        flash=str(own), state=None, chem="LFP", cells=16, slaves=0, fresh=True)
    with pytest.raises(SystemExit, match="--fresh"):
        simcli.state_dir(a)
    assert (own / "marker").exists()


def test_temporary_flash_dirs_are_removed():
    fd = FlashDir()
    path = fd.path
    assert os.path.isdir(path)
    del fd
    import gc
    gc.collect()
    assert not os.path.exists(path)


def test_make_sim_prints_every_port_and_plain_lines_when_piped(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(
        [sys.executable, "-m", "tools.sim", "--seconds", "6", "--speed", "50", "--every", "2",
         "--flash", str(tmp_path / "flash"), "--pc-link", str(tmp_path / "pc"),
         "--ttl-link", str(tmp_path / "ttl"), "--can", "simtest-nonexistent0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, r.stderr
    assert "PC port (Modbus RTU" in out and str(tmp_path / "pc") in out
    assert "TTL port (JBD read mode" in out and str(tmp_path / "ttl") in out
    assert "inverter CAN (Pylontech" in out
    # No such interface: the sim says why and falls back.
    assert "no network interface simtest-nonexistent0" in out
    assert "python-can virtual bus" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("t=")]
    assert len(lines) >= 3, out
    assert "CCL" in lines[-1] and "DCL" in lines[-1] and "bal" in lines[-1]


def test_inverter_frames_on_the_virtual_bus_decode_with_the_dbc(capsys):
    ch = "sim-inv-test"
    sim = Simulation(chem="LFP", cells=16, soc=0.6)
    link = InverterLink(sim, ch)
    assert "using python-can's virtual bus" in capsys.readouterr().out or \
        link.where.startswith("SocketCAN")
    rx = can.Bus(interface="virtual", channel=ch)
    try:
        sim.run(2.5)
        seen = {}
        while True:
            m = rx.recv(timeout=0)
            if m is None:
                break
            msg = DB.get_message_by_frame_id(m.arbitration_id)
            seen[msg.name] = msg.decode(m.data, decode_choices=False)
        assert {"BMS_Limits", "BMS_SocSoh", "BMS_Actual", "BMS_Alarms", "BMS_Request",
                "BMS_Name"} <= set(seen)
        assert seen["BMS_Limits"]["ChargeCurrentLimit"] == 80.0
        assert abs(seen["BMS_Actual"]["Voltage"] - sim.pack.pack_voltage()) < 0.1
    finally:
        rx.shutdown()
        link.close()


def test_module_bus_mirror_copies_the_internal_frames():
    from tools.sim.modular import build_modular
    sim = build_modular(2, 8, "LFP")
    mirror = ModuleBusMirror(sim, "sim-mod-test", report=lambda s: None)
    rx = can.Bus(interface="virtual", channel="sim-mod-test")
    try:
        sim.run(1.0)
        n = 0
        while rx.recv(timeout=0) is not None:
            n += 1
        assert n > 0 and n == mirror.copied
    finally:
        rx.shutdown()
        mirror.close()


VCAN = "vcan0"


@pytest.mark.skipif(socketcan_missing(VCAN) is not None,
                    reason="SocketCAN %s unavailable: %s" % (VCAN, socketcan_missing(VCAN)))
def test_inverter_frames_on_socketcan_vcan0():
    rx = can.Bus(interface="socketcan", channel=VCAN)
    sim = Simulation(chem="LFP", cells=16, soc=0.6)
    link = InverterLink(sim, VCAN)
    try:
        assert link.where == "SocketCAN %s" % VCAN
        sim.run(2.5)
        names = set()
        while True:
            m = rx.recv(timeout=0.1)
            if m is None:
                break
            names.add(DB.get_message_by_frame_id(m.arbitration_id).name)
        assert "BMS_Limits" in names and "BMS_Request" in names
    finally:
        link.close()
        rx.shutdown()


def test_live_table_draws_bars_marks_min_max_balancing_and_limits():
    from rich.console import Console
    from tools.sim import live
    sim = Simulation(chem="LFP", cells=16, soc=0.9)
    sim.pack.cells[4].soc = 0.99                       # one high cell: balancing
    sim.run(30)
    con = Console(record=True, width=200)
    con.print(live.table(sim, [("PC port", "/tmp/x")]))
    text = con.export_text()
    m = sim.bms.meas
    rows = {r[0]: r for r in live.cell_rows(sim)}
    assert "max" in rows[str(m.max_idx + 1)][3] and "min" in rows[str(m.min_idx + 1)][3]
    hi = rows[str(m.max_idx + 1)][2].count("#")
    lo = rows[str(m.min_idx + 1)][2].count("#")
    assert hi > lo                                     # bars scale with the voltage
    assert "CCL / DCL" in text and "balancing" in text and "/tmp/x" in text
    if sim.bms.balancer.count:
        assert any("bal" in r[3] for r in rows.values())
    assert live.bar(2500, 2500, 3650) == "." * live.BAR_WIDTH
    assert live.bar(3650, 2500, 3650) == "#" * live.BAR_WIDTH
    line = live.plain_line(sim)
    assert line.startswith("t=30s") and "CCL" in line
