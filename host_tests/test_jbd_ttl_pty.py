"""A JBD client on the simulator's TTL pty, checked field by field against the pack model.

The client below is written from the protocol description (docs/display_protocol.md,
"JBD read mode"), not from comms.jbd: it frames requests, checks the checksum,
and decodes the 0x03 / 0x04 / 0x05 answers the way open JBD clients do
(big-endian, 10 mV / 10 mA / 10 mAh, NTCs in 0.1 K with NTC 0 the MOS sensor,
protection bits 0..12).  It talks to the pty at 9600 8N1 through pyserial
while the simulation runs at 20x real time in a thread.
"""
import struct
import threading

import pytest

serial = pytest.importorskip("serial")

import tools  # noqa: E402,F401
from tools.sim.pclink import run_realtime  # noqa: E402
from tools.sim.ptylink import TtlLink  # noqa: E402
from tools.sim.simulator import Simulation  # noqa: E402


class JbdClient:
    def __init__(self, path):
        self.s = serial.Serial(path, 9600, bytesize=8, parity="N", stopbits=1, timeout=3)

    @staticmethod
    def _chk(data):
        return (0x10000 - sum(data)) & 0xFFFF

    def request(self, cmd):
        body = bytes([cmd, 0])
        c = self._chk(body)
        return bytes([0xDD, 0xA5]) + body + bytes([c >> 8, c & 0xFF, 0x77])

    def ask(self, cmd):
        self.s.reset_input_buffer()
        self.s.write(self.request(cmd))
        head = self.s.read(4)
        assert len(head) == 4 and head[0] == 0xDD and head[1] == cmd, head
        status, n = head[2], head[3]
        rest = self.s.read(n + 3)
        assert len(rest) == n + 3 and rest[-1] == 0x77, rest
        data = rest[:n]
        assert (rest[n] << 8 | rest[n + 1]) == self._chk(bytes([status, n]) + data)
        assert status == 0, status
        return data

    def basic(self):
        d = self.ask(0x03)
        v, i, rem, full, cycles, _date, bal_lo, bal_hi, prot = \
            struct.unpack_from(">HhHHHHHHH", d, 0)
        ver, rsoc, fet, cells, ntc = d[18], d[19], d[20], d[21], d[22]
        temps = [struct.unpack_from(">H", d, 23 + 2 * k)[0] / 10.0 - 273.1 for k in range(ntc)]
        return {
            "voltage": v / 100.0, "current": i / 100.0, "remaining_ah": rem / 100.0,
            "full_ah": full / 100.0, "cycles": cycles, "balance": bal_lo | bal_hi << 16,
            "protection": prot, "version": ver, "soc": rsoc, "charge_fet": bool(fet & 1),
            "discharge_fet": bool(fet & 2), "cells": cells,
            "mos_temp": temps[0] if temps else None, "battery_temps": temps[1:],
        }

    def cells(self):
        d = self.ask(0x04)
        return [v / 1000.0 for v in struct.unpack(">%dH" % (len(d) // 2), d)]

    def hardware(self):
        return self.ask(0x05).decode("ascii")

    def close(self):
        self.s.close()


@pytest.fixture
def live(tmp_path):
    sim = Simulation(chem="LFP", cells=16, capacity_ah=100.0, soc=0.6, seed=5)
    link = TtlLink(sim, symlink=str(tmp_path / "bms-ttl"), protocol="jbd")
    sim.pack.charger_a = 20.0
    sim.pack.charger_cv = 16 * 3.6
    sim.run(3)
    stop = threading.Event()
    th = threading.Thread(target=run_realtime, args=(sim,), kwargs={"speed": 20.0, "stop": stop},
                          daemon=True)
    th.start()
    client = JbdClient(str(tmp_path / "bms-ttl"))
    yield sim, link, client
    client.close()
    stop.set()
    th.join(5)
    link.close()


def test_jbd_client_reads_every_field_like_the_pack(live):
    sim, link, c = live
    b = c.basic()
    pack = sim.pack
    assert abs(b["voltage"] - pack.pack_voltage()) < 0.1
    assert abs(b["current"] - 20.0) < 0.3                     # + = charging
    assert abs(b["full_ah"] - 100.0) < 0.01
    assert abs(b["remaining_ah"] - pack.true_soc() * 100.0) < 2.0
    assert abs(b["soc"] - pack.true_soc() * 100.0) <= 2
    assert b["cycles"] == 0
    assert b["protection"] == 0
    assert b["charge_fet"] and b["discharge_fet"]
    assert b["cells"] == 16
    flags = sim.bms.balancer.flags
    assert b["balance"] == sum(1 << k for k in range(16) if flags[k])
    assert b["version"] > 0
    # NTC 0: the power board as MOS temperature; then the two cell sensors.
    assert abs(b["mos_temp"] - pack.power_temp_c) < 1.5
    assert len(b["battery_temps"]) == 2
    for t in b["battery_temps"]:
        assert abs(t - pack.cell_temp_c) < 1.5
    cells = c.cells()
    truth = pack.cell_voltages()
    assert len(cells) == 16
    # Charging at 20 A the cells move a little between two requests.
    assert max(abs(a - t) for a, t in zip(cells, truth)) < 0.005
    assert c.hardware() == "MPY-BMS"


def test_jbd_client_sees_a_dead_ntc_as_a_protection(live):
    sim, link, c = live
    sim.board.ntc_fault[2] = "open"                    # a cell NTC opens
    deadline = 50
    b = c.basic()
    while (b["charge_fet"] or b["protection"] == 0) and deadline:
        deadline -= 1
        b = c.basic()
    assert not b["charge_fet"] and not b["discharge_fet"]
    assert b["protection"] & (1 << 11)                 # front-end / sensor error


def test_stale_link_of_a_killed_sim_is_replaced_and_files_are_kept(tmp_path):
    sim = Simulation(chem="LFP", cells=16)
    name = tmp_path / "bms-ttl"
    name.symlink_to(tmp_path / "pts-gone")            # left by a killed sim
    link = TtlLink(sim, symlink=str(name), protocol="display")
    try:
        assert name.resolve() == type(name)(link.path).resolve()
    finally:
        link.close()
    assert not name.exists() and not name.is_symlink()
    plain = tmp_path / "not-a-link"
    plain.write_text("keep me")
    with pytest.raises(FileExistsError):
        TtlLink(sim, symlink=str(plain))
    assert plain.read_text() == "keep me"


def test_display_mode_ignores_jbd_requests(tmp_path):
    sim = Simulation(chem="LFP", cells=16)
    link = TtlLink(sim, protocol="display")
    try:
        c = JbdClient(link.path)
        c.s.timeout = 0.2
        c.s.write(c.request(0x03))
        sim.run(1)
        assert c.s.read(7) == b""
        c.close()
    finally:
        link.close()


def test_links_of_a_killed_sim_process_are_replaced(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pc, ttl = tmp_path / "pc", tmp_path / "ttl"
    p = subprocess.Popen(
        [sys.executable, "-m", "tools.sim", "--board", "fake", "--seconds", "600", "--plain",
         "--flash", str(tmp_path / "flash"), "--pc-link", str(pc), "--ttl-link", str(ttl)],
        cwd=root, env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (ttl.is_symlink() and pc.is_symlink()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ttl.is_symlink() and pc.is_symlink()
    finally:
        os.kill(p.pid, signal.SIGKILL)        # no cleanup runs
        p.wait(10)
    assert ttl.is_symlink()                   # left behind, pointing at a dead pty
    sim = Simulation(chem="LFP", cells=16)
    link = TtlLink(sim, symlink=str(ttl))
    try:
        assert os.readlink(str(ttl)) == link.path
        c = JbdClient(str(ttl))
        c.s.write(c.request(0x05))
        sim.run(0.5)
        head = c.s.read(4)
        assert head[:2] == bytes([0xDD, 0x05])
        c.close()
    finally:
        link.close()
