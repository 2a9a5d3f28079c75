"""`make sim ARGS="--target rp2040"`: the board image on the emulated chip
with its PC port on a pty (a Modbus client reads the monitor block) and its
USB REPL on another, where mpremote runs the diag workflow as on a board."""
import os
import subprocess
import sys
import time

import pytest

from rp2_rig import uf2

import tools  # noqa: F401
from tools.bmsctl.client import BmsClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(path, proc, s=60):
    t0 = time.monotonic()
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() - t0 > s:
            out = proc.stdout.read() if proc.poll() is not None else ""
            pytest.fail("sim did not open %s: %s" % (path, out))
        time.sleep(0.2)


@pytest.fixture
def live(tmp_path):
    uf2("pico")       # built once, before the sim needs it
    pc, usb = str(tmp_path / "pc"), str(tmp_path / "usb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.sim", "--target", "rp2040",
                             "--pc-link", pc, "--usb-link", usb, "--seconds", "120"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(pc, proc)
        _wait_for(usb, proc)
        yield pc, usb, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_pc_tool_and_mpremote_reach_the_emulated_chip(live):
    pc, usb, proc = live
    c = BmsClient(pc, timeout=5.0, retries=3)
    try:
        mon = c.monitor()
    finally:
        c.close()
    assert mon["cell_count"] == 16
    assert 40000 < mon["pack_voltage"] < 60000
    mp = os.path.join(os.path.dirname(sys.executable), "mpremote")
    r = subprocess.run([mp, "connect", usb, "exec",
                        "import diag, app; print('FAILED', app.APP.failed); diag.snap()"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED []" in r.stdout, r.stdout
    assert "mode" in r.stdout.lower(), r.stdout
