"""No silent success: every bmsctl command that asks the BMS for a change
either did it or exits non-zero with the BMS's reason (issue 16, item 8).

Every writing command runs against the locked port (nothing may change, exit
1, the reason "locked" printed), and the commands the core can still refuse
after taking them (calibrations, chemistry already set, a lease code) run
against those cases.  ``test_every_command_is_covered`` keeps the list
honest: a new subcommand fails it until it is classed here.
"""
import json

import pytest

import tools  # noqa: F401
from bms.params import index as pidx
from tools.bmsctl.cli import COMMANDS
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli  # noqa: E402

PW = "123456"

# Commands that change something on the BMS, each with arguments that would
# work once unlocked.
WRITES = {
    "params set": ["params", "set", "buzzer=off"],
    "params load": ["params", "load", "{file}"],
    "restore": ["restore", "{file}"],
    "normal --chg": ["normal", "--chg", "off"],
    "normal --dsg": ["normal", "--dsg", "off"],
    "normal --chemistry": ["normal", "--chemistry", "NMC"],
    "normal --defaults": ["normal", "--defaults", "LFP"],
    "normal --reset-faults": ["normal", "--reset-faults"],
    "normal --clear-log": ["normal", "--clear-log"],
    "normal --sleep": ["normal", "--sleep"],
    "normal --wake": ["normal", "--wake"],
    "normal --restart": ["normal", "--restart"],
    "calibrate zero": ["calibrate", "zero"],
    "calibrate current": ["calibrate", "current", "50"],
    "soc set": ["soc", "set", "50%"],
    "clock set": ["clock", "set"],
    "passwd": ["passwd", "newpass1"],
    "battery set": ["battery", "set", "type=LFP 16S", "nominal=51.2V"],
    "name ble": ["name", "ble", "MyPack"],
    "name device": ["name", "device", "Garage"],
}
# Read-only commands, or commands whose refusal cases are tested elsewhere
# (unlock/lock: test_bmsctl; update: test_fwupdate_modbus; lease: below).
OTHERS = {"info", "monitor", "alarms", "graph", "log", "dump", "modules", "unlock", "lock",
          "update", "lease", "params", "normal", "calibrate", "soc", "clock", "restore",
          "passwd", "battery", "name"}


@pytest.fixture
def rig(tmp_path):
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    link = PcLink(sim)
    sim.run(3)
    yield sim, link
    link.close()


def _state(sim, link):
    b = sim.bms
    info = link.regs.info
    return (list(sim.params.values), b.sleep_requested, b.restart_requested,
            len(b.log.find(6)), b.wall.sets,   # 6: EV_COMMAND
            {k: bytes(v) for k, v in info.fields.items()}, dict(info.nums),
            dict(sim.auth.store))


def test_every_command_is_covered():
    heads = {argv[0] for argv in WRITES.values()}
    assert set(COMMANDS) <= heads | OTHERS, sorted(set(COMMANDS) - heads - OTHERS)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_locked_port_refuses_every_write(rig, capsys, tmp_path, name):
    sim, link = rig
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"format": "mpy-bms-params", "version": 1,
                             "params": {"buzzer": 0, "ov1": 3600}}))
    argv = [a.replace("{file}", str(f)) for a in WRITES[name]]
    before = _state(sim, link)
    rc = run_cli(sim, link, *argv)
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1, out
    assert "locked" in out, out
    sim.run(0.2)
    assert _state(sim, link) == before


def test_zero_calibration_under_load_is_refused(rig, capsys):
    sim, link = rig
    sim.pack.load_a = 20.0
    sim.run(2)
    off = sim.params[pidx("cur_offset")]
    rc = run_cli(sim, link, "--password", PW, "calibrate", "zero")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1, out
    assert "refused" in out and "zero calibration needs no current" in out
    assert sim.params[pidx("cur_offset")] == off


def test_current_calibration_at_rest_is_refused_and_under_load_prints_the_gain(rig, capsys):
    sim, link = rig
    sim.pack.load_a = 0.0
    sim.run(2)
    rc = run_cli(sim, link, "--password", PW, "calibrate", "current", "10")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "current too small to calibrate" in out, out
    assert sim.params[pidx("cur_gain")] == 10000
    sim.pack.load_a = 20.0
    sim.run(2)
    # The meter says 2 % more than the BMS reads: the gain must move up.
    true_a = abs(sim.bms.meas.current_ma) * 1.02 / 1000.0
    rc = run_cli(sim, link, "--password", PW, "calibrate", "current", "%.3f" % true_a)
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    gain = sim.params[pidx("cur_gain")]
    assert 10150 <= gain <= 10250
    assert "gain now %.4f" % (gain / 10000.0) in out


def test_same_chemistry_is_not_reported_as_loaded(rig, capsys):
    sim, link = rig
    sim.params.set_many([(pidx("ov1"), 3600)])   # a custom limit that defaults would undo
    rc = run_cli(sim, link, "--password", PW, "normal", "--chemistry", "LFP")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1, out
    assert "already LFP" in out and "loaded" not in out.replace("reloads", "")
    assert sim.params[pidx("ov1")] == 3600


def test_soc_out_of_range_and_unparsable_are_usage_errors(rig, capsys):
    sim, link = rig
    soc = sim.bms.soc.soc_pm
    assert run_cli(sim, link, "--password", PW, "soc", "set", "150%") == 1
    assert run_cli(sim, link, "--password", PW, "soc", "set", "half") == 1
    assert sim.bms.soc.soc_pm == soc


def test_unlock_without_a_terminal_is_an_error_not_a_traceback(rig, capsys, monkeypatch):
    sim, link = rig
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    rc = run_cli(sim, link, "unlock")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "no terminal" in out


def test_password_write_relocks_unless_asked(rig, capsys):
    sim, link = rig
    assert run_cli(sim, link, "--password", PW, "params", "set", "buzzer=off") == 0
    assert sim.params[pidx("buzzer")] == 0
    assert run_cli(sim, link, "params", "set", "buzzer=on") == 1   # locked again
    assert run_cli(sim, link, "--password", PW, "--stay-unlocked",
                   "params", "set", "buzzer=on") == 0
    assert run_cli(sim, link, "params", "set", "buzzer=off") == 0   # still unlocked
    assert sim.params[pidx("buzzer")] == 0


def test_flash_log_clear_needs_the_factory_role(rig, capsys):
    sim, link = rig
    rc = run_cli(sim, link, "--password", PW, "normal", "--clear-log", "--flash")
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "factory role" in out, out


def test_sleep_and_wake_do_what_they_say(rig, capsys):
    from bms.contactors import RELAY_CHG, RELAY_DSG
    sim, link = rig
    assert run_cli(sim, link, "--password", PW, "normal", "--sleep") == 0
    assert "sleep: relays open" in capsys.readouterr().out
    assert sim.bms.sleep_requested
    assert sim.run_until(lambda s: not s.bms.contactors.state[RELAY_DSG]
                         and not s.bms.contactors.state[RELAY_CHG], 2)
    assert run_cli(sim, link, "--password", PW, "normal", "--wake") == 0
    assert not sim.bms.sleep_requested
    assert sim.run_until(lambda s: s.bms.contactors.state[RELAY_DSG] == 1, 5)
    assert run_cli(sim, link, "--password", PW, "normal", "--sleep", "--wake") == 1
