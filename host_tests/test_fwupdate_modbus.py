"""Firmware update and persistent event log over Modbus, end to end.

The real ``bmsctl`` (pymodbus) talks to the firmware Modbus server on the
simulator's pty; the simulated board has a flash directory with the
persistent log and the ``bms.update.Updater`` (HMAC key configured).
"""
import csv
import json
import os

import pytest

import tools  # noqa: F401
from bms import update as U
from bms.params import P_OV1, index as pidx
from comms import registers as R
from comms.regs import codes as RX
from comms.regs import update as RU
from tools.bmsctl.cli import main
from tools.fwpkg import tar_of, write
from tools.sim.pclink import PcLink
from tools.sim.simulator import Simulation

import sim_drive  # noqa: E402

KEY = b"device-key-0123456789abcdef"
FILES = {"main.py": b"print('new firmware 9.9.9')\n" * 40,
         "bms/version.py": b"VERSION = '9.9.9'\n" + b"# pad\n" * 300}


def make_pkg(tmp_path, key=KEY, name="fw.tar"):
    pkg = tar_of(FILES)
    path = tmp_path / name
    write(path, pkg, key)
    return path, pkg


@pytest.fixture
def rig(tmp_path):
    sim = Simulation(chem="LFP", cells=16, soc=0.6, seed=5, flash_dir=str(tmp_path / "flash"),
                     update_key=KEY)
    link = PcLink(sim)
    sim.run(1)
    yield sim, link
    link.close()


def run_cli(sim, link, *argv):
    return sim_drive.run_cli(sim, link, *argv, rate=100000)


def _flat(out):
    return " ".join(out.split())


def untouched(sim):
    up = sim.updater
    assert up.state == U.ST_OK and up.active == U.ROOT_SLOT
    assert U.Updater(sim.fs, key=KEY).state == U.ST_OK   # nothing pending on flash
    assert not os.path.exists(os.path.join(sim.fs.path, "fw", "a", "main.py"))


def test_update_good_package_staged_then_restart_applies(rig, tmp_path, capsys):
    sim, link = rig
    path, pkg = make_pkg(tmp_path)
    assert len(pkg) > 4 * 240   # several chunks
    rc = run_cli(sim, link, "--password", "123456", "update", str(path), "--restart")
    out = _flat(capsys.readouterr().out)
    assert rc == 0, out
    assert "staged" in out and "restart requested" in out
    assert sim.updater.state == U.ST_PENDING
    sim.run(0.2)
    assert sim.bms.restart_requested
    # The finish ran in steps between control cycles: the relays stayed closed
    # until the restart command (which opens them before resetting).
    from bms.contactors import RELAY_DSG
    from bms.core import CMD_RESTART
    from bms.eventlog import EV_COMMAND, EV_RELAY
    restart = [e[0] for e in sim.log.find(EV_COMMAND, CMD_RESTART)]
    opened = [e[0] for e in sim.log.find(EV_RELAY, RELAY_DSG) if e[4] == 0]
    assert restart and not [t for t in opened if t < restart[0]], (opened, restart)
    assert run_cli(sim, link, "update", "x", "--status") == 0
    assert "pending" in capsys.readouterr().out
    # The next boot: boot.py's selection swaps to the staged slot with the new files.
    up = U.Updater(sim.fs, key=KEY)
    assert up.state == U.ST_PENDING
    slot = up.select_at_boot()
    assert slot == "/fw/a" and up.state == U.ST_TRIAL and up.event == U.U_SWAPPED
    with sim.fs.open("/fw/a/bms/version.py", "rb") as f:
        assert f.read() == FILES["bms/version.py"]


@pytest.mark.parametrize("case,reason", [
    ("corrupt", "sha256 mismatch"),
    ("truncated", "truncated: got"),
    ("wrong_key", "bad signature"),
    ("unsigned", "signature required"),
])
def test_bad_package_refused_with_reason_firmware_untouched(rig, tmp_path, capsys, case, reason):
    sim, link = rig
    path, pkg = make_pkg(tmp_path, key=b"another-key" if case == "wrong_key" else KEY)
    sim_drive.spoil_package(path, pkg, case)
    rc = run_cli(sim, link, "--password", "123456", "update", str(path), "--no-verify")
    out = _flat(capsys.readouterr().out)
    assert rc == 1, out
    assert "refused" in out and reason in out, out
    untouched(sim)
    # The reason stays readable in the update window.
    assert run_cli(sim, link, "update", "x", "--status") == 0
    assert reason in _flat(capsys.readouterr().out)


def test_local_check_refuses_corrupt_file_before_sending(rig, tmp_path, capsys):
    sim, link = rig
    path, pkg = make_pkg(tmp_path)
    path.write_bytes(pkg[:-1] + b"X")
    rc = run_cli(sim, link, "--password", "123456", "update", str(path))
    out = _flat(capsys.readouterr().out)
    assert rc == 1 and "is corrupt" in out and "nothing sent" in out
    assert sim.updater.offset == 0
    untouched(sim)


def test_update_without_unlock_refused(rig, tmp_path, capsys):
    sim, link = rig
    path, _pkg = make_pkg(tmp_path)
    rc = run_cli(sim, link, "update", str(path))
    out = _flat(capsys.readouterr().out)
    assert rc == 1 and "locked" in out, out
    assert sim.updater._f is None
    untouched(sim)


def test_update_resumes_a_broken_transfer(rig, tmp_path, capsys):
    sim, link = rig
    path, pkg = make_pkg(tmp_path)
    meta = json.loads((tmp_path / "fw.tar.sig").read_text())
    # An earlier run stopped after 1000 bytes (link lost).
    sim.updater.begin(len(pkg), bytes.fromhex(meta["sha256"]), bytes.fromhex(meta["signature"]))
    sim.updater.chunk(0, pkg[:1000])
    rc = run_cli(sim, link, "--password", "123456", "update", str(path))
    out = _flat(capsys.readouterr().out)
    assert rc == 0, out
    assert "resuming the transfer at byte 1000" in out
    assert sim.updater.state == U.ST_PENDING


def test_window_gap_refused_with_resume_offset_and_bad_counts(tmp_path):
    from bms.digest import sha256
    from tools.sim.flashdir import FlashDir
    fs = FlashDir(str(tmp_path))
    up = U.Updater(fs)
    sim = Simulation(chem="LFP", cells=8, soc=0.5, seed=2)
    rm = R.RegisterMap(sim.bms).attach_update(up, None)
    pkg = bytes(range(256)) * 4
    h = sha256()
    h.update(pkg)
    regs = bytearray()
    for v in [0, len(pkg)]:
        regs += bytes((v >> 8, v & 0xFF))
    regs += h.digest()
    assert rm.write(R.A_UPDATE + RU.UP_BEGIN, 18, regs, 0) == RX.EX_NONE

    def chunk(off, data, nbytes=None):
        b = bytes(((off >> 24) & 0xFF, (off >> 16) & 0xFF, (off >> 8) & 0xFF, off & 0xFF))
        n = len(data) if nbytes is None else nbytes
        b += bytes((n >> 8, n & 0xFF)) + data + (b"\0" if len(data) & 1 else b"")
        return rm.write(R.A_UPDATE + RU.UP_CHUNK, len(b) // 2, b, 0)

    assert chunk(0, pkg[:240]) == RX.EX_NONE
    assert chunk(480, pkg[480:720]) == RX.EX_VALUE        # gap
    assert b"expected offset 240" in bytes(rm.err_text)
    out = bytearray(8)
    rm.read(R.A_UPDATE + RU.UP_STATUS, 3, out, 0)
    assert out[0:2] == b"\0\x01" and (out[4] << 8 | out[5]) == 240   # receiving, offset 240
    assert chunk(240, pkg[240:300], nbytes=100) == RX.EX_VALUE   # count does not match data
    assert chunk(0, pkg[:240]) == RX.EX_NONE              # retransmission acknowledged
    assert chunk(240, pkg[240:480]) == RX.EX_NONE


def test_persistent_log_shows_overvoltage_trip_snapshot(rig, tmp_path, capsys):
    sim, link = rig
    sim.params.set_many([(P_OV1, 3250), (pidx("ov_rec"), 3200), (pidx("bal_start"), 3150)])
    assert sim.run_until(lambda s: s.bms.prot.active(0), 10)   # OV1
    vmax = sim.bms.meas.max_mv
    out_csv = tmp_path / "plog.csv"
    rc = run_cli(sim, link, "log", "--persistent", "--csv", str(out_csv))
    assert rc == 0, capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    trips = [r for r in rows if r["kind_name"] == "fault_set" and r["subject"] == "ov1"]
    assert len(trips) == 1, rows
    t = trips[0]
    assert int(t["vmax_mv"]) > 3250 and abs(int(t["vmax_mv"]) - vmax) <= 5
    assert int(t["vmin_mv"]) <= int(t["vmax_mv"])
    assert 0 <= int(t["vmax_idx"]) < 16
    assert 500 <= int(t["soc_pm"]) <= 700
    assert int(t["tmax_dc"]) > 0
    # Same records as the flash holds (the CSV is the eventlog_csv format); the
    # simulation kept running while bmsctl read, so the flash may hold more by now.
    flash = sim.plog.records()
    assert [int(r["seq"]) for r in rows] == [r[0] for r in flash[:len(rows)]]
    assert [int(v) for v in t.values() if v.lstrip("-").isdigit()] == \
        [v for v in flash[int(t["seq"]) - 1] if isinstance(v, int)]
    capsys.readouterr()
    assert run_cli(sim, link, "log", "--persistent") == 0
    assert "ov1" in capsys.readouterr().out


class _LossyClient:
    """BmsClient stand-in on a RegisterMap: loses some requests and some replies."""

    def __init__(self, rm, lose, device_loop=None):
        self.rm = rm
        self.lose = lose     # {write number: "request" | "reply"}
        self.n = 0
        self.device_loop = device_loop   # the BMS's main loop runs between requests

    def read(self, addr, count):
        if self.device_loop is not None:
            self.device_loop()
        out = bytearray(2 * count)
        assert self.rm.read(addr, count, out, 0) == 0
        return [(out[2 * i] << 8) | out[2 * i + 1] for i in range(count)]

    def write(self, addr, values):
        from tools.bmsctl.client import BmsError
        self.n += 1
        what = self.lose.get(self.n)
        if what == "request":
            raise BmsError("write 0x%04X: no answer" % addr)
        data = bytearray()
        for v in values:
            data += bytes(((v >> 8) & 0xFF, v & 0xFF))
        code = self.rm.write(addr, len(values), data, 0)
        if what == "reply":
            raise BmsError("write 0x%04X: no answer" % addr)
        if code:
            raise BmsError("refused: %s" % bytes(self.rm.err_text).split(b"\0")[0].decode(), code)


@pytest.mark.parametrize("finish_lost", [None, "request", "reply"])
def test_lost_requests_and_replies_are_resent_and_acknowledged(tmp_path, finish_lost):
    from tools.bmsctl import update_cmd
    from tools.sim.flashdir import FlashDir
    fs = FlashDir(str(tmp_path / "flash"))
    up = U.Updater(fs, key=KEY)
    sim = Simulation(chem="LFP", cells=8, soc=0.5, seed=2)
    rm = R.RegisterMap(sim.bms).attach_update(up, None)
    path, pkg = make_pkg(tmp_path)
    lose = {3: "request", 5: "reply", 6: "reply"}
    n_chunks = (len(pkg) + update_cmd.CHUNK - 1) // update_cmd.CHUNK
    fin = 1 + n_chunks + 3 + 1                    # begin, chunks, 3 resent, finish
    if finish_lost:
        lose[fin] = lose[fin + 1] = finish_lost   # request lost: the status says
                                                  # "receiving", sent again (twice)
    c = _LossyClient(rm, lose, device_loop=up.poll)
    msg = update_cmd.main(str(path), update_cmd.ModbusTransport(c, sleep=lambda s: None),
                          quiet=True)
    assert "staged" in msg and up.state == U.ST_PENDING
    with fs.open("/fw/a/main.py", "rb") as f:
        assert f.read() == FILES["main.py"]
    assert c.n == fin + (2 if finish_lost == "request" else 0), c.n
