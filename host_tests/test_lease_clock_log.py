"""Lease lock, BMS clock and the readable event log through the Modbus path:
bmsctl (pymodbus over the pty) against the simulator running the real
services poller (issue 16, items 1 and 3)."""
import csv
import datetime

import pytest

import tools  # noqa: F401
from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG
from bms.lease import make_token
from comms import registers as R
from comms.regs import lease as RLS
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli, with_client  # noqa: E402

SECRET = b"0123456789abcdef0123456789abcdef"
SERIAL = "SIM00001"
PW = "123456"


@pytest.fixture
def rig(tmp_path):
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    sim.attach_services(lease_secret=SECRET, serial=SERIAL, flash_dir=str(tmp_path))
    link = PcLink(sim)
    sim.run(3)
    yield sim, link
    link.close()


def test_lease_expiry_blocks_discharge_and_a_code_renews_it(rig, capsys):
    sim, link = rig
    lease = sim.services.lease
    lease.start(10 * 86400)   # ten operating days
    sim.run(1)
    regs = with_client(sim, link, lambda c: c.read(R.A_LEASE, RLS.SIZE))
    assert regs[RLS.L_STATE] == RLS.LS_ACTIVE
    rem = (regs[RLS.L_REMAIN] << 16) | regs[RLS.L_REMAIN + 1]
    # Operating time only runs down: what was read lies between now and the start.
    assert lease.remaining_s() <= rem < 10 * 86400
    assert run_cli(sim, link, "lease") == 0
    assert "active, 9 d 23 h" in " ".join(capsys.readouterr().out.split())
    # Expiry (our design; docs/power_lease_clock.md): discharge disabled,
    # charging still allowed.
    lease.state.lease_end_s = lease.state.op_s + 5
    assert sim.run_until(lambda s: s.bms.prot.active(F.index("lease")), 30)
    assert sim.run_until(lambda s: s.bms.contactors.state[RELAY_DSG] == 0, 2)
    assert sim.bms.contactors.state[RELAY_CHG] == 1
    assert run_cli(sim, link, "lease", "status") == 0
    assert "EXPIRED" in capsys.readouterr().out
    # A code for another device, then a good one, then its replay.
    bad = make_token(SECRET, "OTHER", 1, 30)
    assert run_cli(sim, link, "lease", "enter", bad) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "lease code refused: code not valid for this device" in out
    sim.run(3)   # the back-off after a wrong code (1 s)
    good = make_token(SECRET, SERIAL, 1, 30)
    assert run_cli(sim, link, "lease", "enter", good) == 0
    out = capsys.readouterr().out
    assert "30 days added" in out
    assert sim.run_until(lambda s: not s.bms.prot.active(F.index("lease")), 3)
    assert sim.run_until(lambda s: s.bms.contactors.state[RELAY_DSG] == 1, 5)
    assert 29 * 86400 < lease.remaining_s() <= 30 * 86400
    sim.run(3)
    assert run_cli(sim, link, "lease", "enter", good) == 1
    assert "already used" in capsys.readouterr().out


def test_lease_block_without_a_lease_configured(tmp_path, capsys):
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    link = PcLink(sim)
    sim.run(2)
    try:
        regs = with_client(sim, link, lambda c: c.read(R.A_LEASE, RLS.SIZE))
        assert regs[RLS.L_STATE] == RLS.LS_NONE
        assert run_cli(sim, link, "lease", "enter", "00000-00000-00000") == 1
        assert "no lease configured" in capsys.readouterr().out
    finally:
        link.close()


def test_clock_set_stamps_events_and_log_prints_iso_names_and_units(rig, capsys, tmp_path):
    sim, link = rig
    assert run_cli(sim, link, "clock") == 0
    assert "not set" in capsys.readouterr().out
    # Before the clock is set an event has no wall time: the log shows the
    # time since boot instead of raw ticks.
    assert run_cli(sim, link, "--password", PW, "params", "set", "ov1=3.6V") == 0
    t_set = 1780000000   # 2026-05-28T20:26:40Z
    t0 = sim.t_ms
    assert run_cli(sim, link, "--password", PW, "clock", "set", "--unix", str(t_set)) == 0
    out = capsys.readouterr().out
    assert "BMS clock 2026-05-2" in out
    assert run_cli(sim, link, "--password", PW, "params", "set", "ov1=3.62V", "buzzer=off") == 0
    now = with_client(sim, link, lambda c: c.clock())
    # The clock runs with the simulation from the moment it was set.
    assert t_set <= now <= t_set + (sim.t_ms - t0) // 1000 + 1
    capsys.readouterr()
    f = tmp_path / "log.csv"
    assert run_cli(sim, link, "log", "--csv", str(f)) == 0
    rows = list(csv.DictReader(f.open()))
    assert set(rows[0]) == {"seq", "time", "kind", "text"}   # no raw ticks or a/b integers
    texts = {r["text"]: r["time"] for r in rows}
    assert texts["ov1 = 3600 mV"].startswith("boot+0:00:")
    stamp = texts["ov1 = 3620 mV"]
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert t_set <= t <= now
    assert texts["buzzer = off"] == stamp
    assert run_cli(sim, link, "log") == 0
    out = capsys.readouterr().out
    assert stamp in out and "ov1 = 3620 mV" in out


def test_clock_refuses_a_locked_port_and_a_time_before_2020(rig, capsys):
    sim, link = rig
    assert run_cli(sim, link, "clock", "set") == 1
    assert "locked" in capsys.readouterr().out
    assert run_cli(sim, link, "--password", PW, "clock", "set", "--unix", "1500000000") == 1
    assert "before 2020" in capsys.readouterr().out
    assert not sim.bms.wall.valid


def test_flash_log_clear_with_the_factory_role(rig, capsys):
    """Item 6: --clear-log --flash erases the persistent log (factory role);
    the erase is the first record of the new log, so it is never silent."""
    from bms import persistlog as PL
    sim, link = rig
    assert run_cli(sim, link, "--password", PW, "params", "set", "buzzer=off") == 0
    sim.run(3)
    sim.services.flush_log()
    plog = sim.plog
    assert len(plog) > 3
    assert run_cli(sim, link, "--password", PW, "normal", "--clear-log", "--flash") == 1
    assert "factory role" in capsys.readouterr().out
    assert len(plog) > 3
    assert run_cli(sim, link, "--password", "factory", "normal", "--clear-log", "--flash") == 0
    assert "RAM and flash" in capsys.readouterr().out
    sim.run(1)
    kinds = [r[2] for r in plog.records()]
    assert kinds[0] == PL.PK_CLEARED
    assert len(kinds) <= 4   # the erase, then only what happened since (the command, relock)
    assert len(sim.bms.log) <= 4


def test_flash_log_gets_wall_times_from_the_clock_marks(rig, capsys, tmp_path, monkeypatch):
    """The flash log keeps ticks only; the clock marks (set, then daily) let
    bmsctl give every record after the first set its UTC time."""
    sim, link = rig
    assert run_cli(sim, link, "--password", PW, "params", "set", "buzzer=off") == 0
    t_set = 1780000000
    assert run_cli(sim, link, "--password", PW, "clock", "set", "--unix", str(t_set)) == 0
    assert run_cli(sim, link, "--password", PW, "params", "set", "buzzer=on") == 0
    sim.run(1)
    sim.services.flush_log()
    f = tmp_path / "plog.csv"
    assert run_cli(sim, link, "log", "--persistent", "--csv", str(f)) == 0
    rows = list(csv.DictReader(f.open()))
    param = [r for r in rows if r["kind_name"] == "param" and r["subject"] == "buzzer"]
    assert param[0]["time_utc"] == "" and param[-1]["time_utc"].startswith("2026-05-2")
    assert any(r["kind_name"] == "clock" for r in rows)
    capsys.readouterr()
    from rich.console import Console
    from tools.bmsctl import cli
    monkeypatch.setattr(cli, "console", Console(width=200))
    assert run_cli(sim, link, "log", "--persistent") == 0
    out = capsys.readouterr().out
    assert "clock set to 2026-05-2" in out and "buzzer = on" in out


def test_wall_times_across_a_tick_wrap_and_boots():
    from bms import persistlog as PL
    from tools.eventlog_csv import wall_times
    period = 1 << 30

    def rec(seq, boot, kind, t, a=0):
        return (seq, boot, kind, t, a, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    s0 = 200000000                       # seconds since 2020
    recs = [rec(1, 1, 5, 1000),                       # before any mark: unknown
            rec(2, 1, 12, period - 2000, s0),         # clock set just before a wrap
            rec(3, 1, 5, 3000),                       # 5 s later, after the wrap
            rec(4, 2, 5, 4000)]                       # another boot: unknown
    assert len(PL.FIELDS) == len(recs[0])
    w = wall_times(recs)
    assert w[0] is None and w[3] is None
    assert w[1] == 1577836800 + s0 and w[2] == w[1] + 5
