"""Parameter files (mass production): params save / load / --dry-run and
dump / restore, all or nothing by the firmware's own rules (issue 16, item 5)."""
import json

import pytest

import tools  # noqa: F401
from bms.params import index as pidx
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli  # noqa: E402

PW = "123456"


def _rig(chem="LFP"):
    sim = Simulation(chem=chem, cells=16, soc=0.6, seed=5)
    link = PcLink(sim)
    sim.run(2)
    return sim, link


@pytest.fixture
def two():
    a = _rig()
    b = _rig()
    yield a, b
    a[1].close()
    b[1].close()


def test_save_on_one_board_load_on_another(two, capsys, tmp_path):
    (sa, la), (sb, lb) = two
    sa.params.set_many([(pidx("ov1"), 3600), (pidx("bal_start"), 3350), (pidx("buzzer"), 0),
                        (pidx("cur_gain"), 10100)])
    f = tmp_path / "pack.json"
    assert run_cli(sa, la, "params", "save", str(f)) == 0
    doc = json.loads(f.read_text())
    assert doc["params"]["ov1"] == 3600 and doc["units"]["ov1"] == "mV"
    before = list(sb.params.values)
    capsys.readouterr()
    assert run_cli(sb, lb, "--password", PW, "params", "load", str(f), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "ov1" in out and "3600 mV" in out and "dry run: 3 change(s)" in out
    assert "cur_gain left as it is" in out
    assert list(sb.params.values) == before
    assert run_cli(sb, lb, "--password", PW, "params", "load", str(f)) == 0
    assert "3 change(s) written and read back" in capsys.readouterr().out
    assert sb.params[pidx("ov1")] == 3600 and sb.params[pidx("bal_start")] == 3350
    assert sb.params[pidx("buzzer")] == 0
    assert sb.params[pidx("cur_gain")] == 10000   # calibration stays the board's own


def test_invalid_file_is_refused_whole(two, capsys, tmp_path):
    (sa, la), (sb, lb) = two
    f = tmp_path / "bad.json"
    # buzzer is fine, ov1 below its own recovery voltage is not: nothing is written.
    f.write_text(json.dumps({"format": "mpy-bms-params", "version": 1,
                             "params": {"buzzer": 0, "ov1": "3.5V"}}))
    before = list(sb.params.values)
    assert run_cli(sb, lb, "--password", PW, "params", "load", str(f)) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "refused, nothing written" in out and "over-voltage recovery" in out
    assert list(sb.params.values) == before
    f.write_text(json.dumps({"format": "mpy-bms-params", "version": 1,
                             "params": {"ov1": 3600}, "units": {"ov1": "V"}}))
    assert run_cli(sb, lb, "--password", PW, "params", "load", str(f)) == 1
    assert "ov1 is in V there, mV in this firmware" in capsys.readouterr().out


def test_dump_then_restore_brings_the_settings_back(two, capsys, tmp_path):
    (sa, la), _ = two
    sa.params.set_many([(pidx("uv1"), 2850), (pidx("heater_mode"), 1)])
    d = tmp_path / "d.json"
    assert run_cli(sa, la, "dump", "--out", str(d)) == 0
    saved = list(sa.params.values)
    assert run_cli(sa, la, "--password", PW, "normal", "--defaults", "LFP") == 0
    assert sa.params[pidx("uv1")] != 2850
    capsys.readouterr()
    assert run_cli(sa, la, "--password", PW, "restore", str(d)) == 0
    assert "heater_mode" in capsys.readouterr().out
    assert list(sa.params.values) == saved
    c = tmp_path / "d.csv"
    assert run_cli(sa, la, "dump", "--format", "csv", "--out", str(c)) == 0
    assert run_cli(sa, la, "--password", PW, "restore", str(c)) == 0
    assert "no changes" in capsys.readouterr().out


def test_a_file_for_another_chemistry_or_cell_count_is_announced(capsys, tmp_path):
    # The file describes another pack (NMC cells, 14 in series): loaded onto
    # an LFP 16S pack it would give LFP cells NMC's 4.2 V ov1, in one row of
    # a long table of changes.  The user expects to be told, before anything
    # is written (and in the dry run), what kind of pack the file is for.
    sa, la = _rig("NMC")
    sb, lb = _rig("LFP")
    try:
        sa.params.set_many([(pidx("cell_count"), 14)])
        f = tmp_path / "nmc.json"
        assert run_cli(sa, la, "params", "save", str(f)) == 0
        capsys.readouterr()
        assert run_cli(sb, lb, "--password", PW, "params", "load", str(f), "--dry-run") == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "warning" in out and "NMC 14S" in out and "LFP 16S" in out, out
        assert out.index("warning") < out.index("Changes")
        assert sb.params[pidx("chemistry")] == 1
    finally:
        la.close()
        lb.close()


def test_a_file_with_another_modbus_address_is_read_back_there(two, capsys, tmp_path):
    (sa, la), (sb, lb) = two
    sa.params.set_many([(pidx("modbus_addr"), 7), (pidx("buzzer"), 0)])
    f = tmp_path / "a7.json"
    assert run_cli(sa, la, "--address", "7", "params", "save", str(f)) == 0
    capsys.readouterr()
    assert run_cli(sb, lb, "--password", PW, "params", "load", str(f)) == 0
    assert "2 change(s) written and read back" in capsys.readouterr().out
    assert sb.params[pidx("modbus_addr")] == 7 and sb.params[pidx("buzzer")] == 0
