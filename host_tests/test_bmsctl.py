"""bmsctl end to end: the real CLI, pymodbus, the pty link and the firmware server.

The CLI runs in a thread; the test thread steps the simulation at 50x real
time (the client's time-outs are wall-clock) until the CLI has finished,
then checks the BMS in virtual time.
"""
import time
import json

import pytest

import tools  # noqa: F401
from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG
from bms.params import P_OV1, P_OV2, index as pidx
from tools.bmsctl.cli import main
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli  # noqa: E402


@pytest.fixture
def rig():
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    link = PcLink(sim)
    sim.run(3)
    yield sim, link
    link.close()


def test_params_set_invalid_combination_refused_with_reason(rig, capsys):
    sim, link = rig
    before = list(sim.params.values)
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "ov2=3.6V")
    out = capsys.readouterr().out
    assert rc == 1
    assert "level-2 over-voltage must be above level-1 over-voltage" in " ".join(out.split())
    assert list(sim.params.values) == before


def test_params_set_without_unlock_is_refused(rig, capsys):
    sim, link = rig
    rc = run_cli(sim, link, "params", "set", "buzzer=off")
    assert rc == 1 and "locked" in capsys.readouterr().out
    assert sim.params[pidx("buzzer")] == 1


def test_lowering_discharge_current_below_a_third_of_peak_warns(rig, capsys):
    sim, link = rig
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "dsg_oc=40A")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert sim.params[pidx("dsg_oc")] == 400
    assert "peak = 300.0 A is more than 3 x dsg_oc (40.0 A)" in out and "peak = 120.0 A" in out
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "peak=120A",
                 "short_circuit=240A")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "note:" not in out, out


def test_params_set_valid_changes_running_bms(rig, capsys):
    sim, link = rig
    assert sim.bms.contactors.state[RELAY_CHG] == 1
    cell_max = max(sim.pack.cell_voltages())
    assert cell_max > 3.26  # LFP at 60 %: the new limit is below the cells
    rc = run_cli(sim, link, "--password", "123456", "params", "set",
                 "ov1=3.25V", "ov_rec=3200", "bal_start=3.15V")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sim.params[P_OV1] == 3250 and sim.params[P_OV2] == 3750
    # The running BMS now sees every cell over its level-1 limit: after the
    # 5 s delay it opens the charge relay and keeps discharge available.
    assert sim.run_until(lambda s: s.bms.prot.active(F.OV1), 10)
    assert sim.bms.contactors.state[RELAY_CHG] == 0
    assert sim.bms.contactors.state[RELAY_DSG] == 1


def test_normal_switch_soc_and_views(rig, capsys, tmp_path):
    sim, link = rig
    assert run_cli(sim, link, "--password", "123456", "--stay-unlocked",
                   "normal", "--dsg", "off") == 0
    assert sim.run_until(lambda s: s.bms.contactors.state[RELAY_DSG] == 0, 2)
    capsys.readouterr()
    # Still unlocked (same port, --stay-unlocked).  The CLI returns only once
    # the core ran the command (command result block), so this checks the
    # value the core set, not a race against the simulation's pace.
    assert run_cli(sim, link, "soc", "set", "80%") == 0
    assert "SOC set to 80.0 %" in capsys.readouterr().out
    from bms.core import CMD_SOC_SET
    from bms.eventlog import EV_COMMAND
    assert sim.bms.log.find(EV_COMMAND, CMD_SOC_SET)[-1][4] == 800
    assert run_cli(sim, link, "monitor", "--once") == 0
    out = capsys.readouterr().out
    assert "Pack voltage" in out and "Cell voltages" in out
    dump = tmp_path / "d.json"
    assert run_cli(sim, link, "dump", "--out", str(dump)) == 0
    rows = json.loads(dump.read_text())
    byname = {r["name"]: r["raw"] for r in rows}
    assert byname["cell_count"] == 16 and byname["dsg_switch"] == 0
    assert run_cli(sim, link, "log", "--csv", str(tmp_path / "log.csv")) == 0
    assert "dsg_switch = off" in (tmp_path / "log.csv").read_text()
    png = tmp_path / "g.png"
    assert run_cli(sim, link, "graph", "--samples", "2", "--interval", "0",
                   "--out", str(png)) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert run_cli(sim, link, "alarms") == 0


def test_learned_ocv_table_shown_and_forgotten(capsys, tmp_path):
    # The battery view says how far the learned OCV table moved from the
    # chemistry's; `soc forget-ocv` (new or rebuilt cells) drops it, and the
    # services write the bare table to flash, so a restart does not bring it back.
    from bms import ocv
    from bms.soc import SIG_BIAS_W, W_PER_MV
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    sim.attach_services(flash_dir=str(tmp_path))
    link = PcLink(sim)
    sim.run(3)
    soc = sim.bms.soc
    n = ocv.row_len(soc.chem)
    assert soc.set_ocv_points(soc.chem, [-(35 * W_PER_MV) // 10] * n, [SIG_BIAS_W[soc.chem]] * n)
    soc.ocv_learned = 2
    assert run_cli(sim, link, "battery") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "moved -3.5 .. -3.5 mV" in out and "(2 rests since boot)" in out, out
    assert run_cli(sim, link, "soc", "forget-ocv") == 1      # user role
    assert "locked" in capsys.readouterr().out
    assert soc._off is not None
    assert run_cli(sim, link, "--password", "123456", "soc", "forget-ocv") == 0
    assert "learned OCV table forgotten" in capsys.readouterr().out
    assert soc._off is None and max(soc.ocv_off) == 0 == min(soc.ocv_off)
    sim.run(1)
    chem, offs, _sds = sim.services.store.load_ocv_points()
    assert chem == soc.chem and max(offs) == 0 == min(offs)
    assert run_cli(sim, link, "battery") == 0
    assert "not learned: the chemistry's table" in capsys.readouterr().out
    link.close()


def test_passwd_and_unlock(rig, capsys):
    sim, link = rig
    assert run_cli(sim, link, "--password", "123456", "passwd", "n3wpass") == 0
    assert run_cli(sim, link, "lock") == 0
    assert run_cli(sim, link, "unlock", "123456") == 1
    assert run_cli(sim, link, "unlock", "n3wpass") == 0
    assert "unlocked as user" in capsys.readouterr().out


def test_a_value_too_big_for_its_register_is_refused_not_wrapped(rig, capsys):
    # docs/modbus.md: each parameter is one 16-bit register in its row's
    # range (capacity 1..6500 Ah).  capacity=100000 (a user meaning mAh; read
    # as Ah, raw 1000000) is out of range, but its low 16 bits (16960 =
    # 1696.0 Ah) are not: the BMS took those and bmsctl only complained after.
    sim, link = rig
    before = list(sim.params.values)
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "capacity=100000")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "out of range" in out, out
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "capacity=-100Ah")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "out of range" in out, out
    assert list(sim.params.values) == before


def test_chemistry_with_a_refused_change_writes_nothing(rig, capsys):
    # README: "Every command either did what it says or exits 1 with the
    # BMS's reason"; cmd_params: "check the whole result first ... so that
    # nothing is half applied".  cur_gain may move 5 % per write (user role):
    # the BMS refuses 1.06, and the chemistry must not have changed either.
    sim, link = rig
    before = list(sim.params.values)
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "chemistry=NMC",
                 "cur_gain=1.06")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "at most 500 per write" in out, out
    assert sim.params[pidx("chemistry")] == 1 and sim.params[P_OV1] == 3650
    assert list(sim.params.values) == before
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "chemistry=NMC",
                 "ov1=4.15V")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert sim.params[pidx("chemistry")] == 0 and sim.params[P_OV1] == 4150
    assert sim.params[P_OV2] == 4300   # NMC's default, loaded with the chemistry


def test_a_new_modbus_address_or_baud_rate_is_followed_not_a_link_error(rig, capsys):
    # docs/modbus.md: the address and baud rate are the parameters modbus_addr
    # / modbus_baud; the BMS answers the write on the old ones, then uses the
    # new.  bmsctl read the result back on the old address: "link error",
    # exit 2, for a change the BMS had made.
    sim, link = rig
    rc = run_cli(sim, link, "--password", "123456", "params", "set", "modbus_addr=2")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "modbus_addr = 2" in out and "--address 2" in out, out
    assert sim.params[pidx("modbus_addr")] == 2
    rc = run_cli(sim, link, "--address", "2", "--password", "123456", "params", "set",
                 "modbus_baud=19200")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "modbus_baud = 19200" in out and "--baud 19200" in out, out
    assert sim.params[pidx("modbus_baud")] == 2


def test_readme_first_power_up_commands_work_as_written(rig, capsys):
    # README "On a board": the bmsctl lines a user copies after flashing.
    import os
    import shlex
    from sim_drive import drive
    sim, link = rig
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")).read()
    block = readme.split("## On a board", 1)[1].split("```")[1]
    lines = [ln.split("#")[0] for ln in block.splitlines() if "bin/bmsctl" in ln]
    assert lines
    for ln in lines:
        argv = shlex.split(ln)[1:]
        argv[argv.index("--port") + 1] = link.path
        rc = drive(sim, lambda: main(["--timeout", "2"] + argv))
        out = " ".join(capsys.readouterr().out.split())
        assert rc == 0, (ln, out)
