"""bmsctl fits a terminal (issue 16, item 9): params get grouped by the
vendor's Param pages at 80 columns with enum names; graph with a title, a
legend and the BMS's own time."""
import pytest

import tools  # noqa: F401
from tools.bmsctl import cli
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

from sim_drive import run_cli  # noqa: E402


@pytest.fixture
def rig(monkeypatch):
    from rich.console import Console
    monkeypatch.setattr(cli, "console", Console(width=80, force_terminal=False))
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5)
    link = PcLink(sim)
    sim.run(2)
    yield sim, link
    link.close()


def test_params_get_grouped_with_enum_names_in_80_columns(rig, capsys):
    sim, link = rig
    assert run_cli(sim, link, "params", "get") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    for page in ("Pack", "Cell voltage", "Current", "Temperature", "Balancing", "Switches",
                 "Heater", "Sleep", "Calibration", "Communication"):
        assert any(x.strip() == page for x in lines), page
    # Table rows start with the name after two spaces; wrapped descriptions
    # continue far to the right.
    row = {x.split()[0]: x for x in lines if x.startswith("  ") and not x.startswith("   ")
           and x.split()[0].isidentifier()}
    assert " LFP " in row["chemistry"] and "NMC/LFP/LTO/NA" in row["chemistry"]
    assert " off " in row["heater_mode"]
    assert " on " in row["buzzer"] and "off/on" in row["buzzer"]
    assert "9600" in row["modbus_baud"]
    assert "3650 mV" in row["ov1"]
    # Every parameter is on some page.
    from bms.params import TABLE
    for r in TABLE:
        assert r[0] in row, r[0]


def test_params_set_takes_enum_names(rig, capsys):
    sim, link = rig
    from bms.params import index
    assert run_cli(sim, link, "--password", "123456", "params", "set",
                   "heater_mode=while charging") == 0
    assert sim.params[index("heater_mode")] == 1
    assert "heater_mode = while charging" in capsys.readouterr().out


def test_graph_has_title_legend_and_bms_time(rig, capsys, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sim, link = rig
    plt.close("all")
    assert run_cli(sim, link, "--password", "123456", "clock", "set", "--unix",
                   "1780000000") == 0
    png = tmp_path / "g.png"
    assert run_cli(sim, link, "graph", "--samples", "3", "--interval", "0.05",
                   "--out", str(png)) == 0
    fig = plt.figure(plt.get_fignums()[-1])
    title = fig._suptitle.get_text()
    assert "MPY-BMS-SIM" in title and "2026-05-28 20:26" in title
    ax1, ax2 = fig.axes[:2]
    labels = [t.get_text() for t in ax1.get_legend().get_texts()]
    assert labels[:2] == ["cell 1", "cell 2"] and len(labels) == 16
    assert ax2.get_legend() is not None
    assert "BMS clock" in ax2.get_xlabel()
    plt.close("all")


def test_log_shows_a_latch_restored_from_flash_as_such_not_as_a_value(rig, capsys):
    # bms.protection.restore logs a latch kept over a restart with the value
    # -1 ("restored from flash"): the log printed it as a measurement of the
    # fault's signal, "ov2 (-0.001 V)", a cell at -1 mV.
    from bms import faults as F
    sim, link = rig
    sim.bms.prot.restore([F.OV2], sim.clock.ticks_ms())
    sim.run(1)
    assert run_cli(sim, link, "log") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "-0.001 V" not in out
    assert "ov2 (restored from flash)" in out, out
    # A temperature trip at -0.1 degC is logged as -1 too: that one is a value.
    from tools.bmsctl.client import describe_event
    assert describe_event("fault_set", F.index("lt_chg"), -1) == "lt_chg (-0.1 degC)"
