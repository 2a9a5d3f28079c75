"""Slave firmware update through the master, end to end on the modular simulator.

bmsctl (pymodbus) uploads a slave package to the master over the pty; the
master forwards it over the simulated CAN bus (exact frame timing,
MCP2515 buffer depths) to the real slave code with its own flash and
Updater; the slave reboots, confirms or rolls back.  python-can (through
tools.sim.pycan_bridge) plays a slave byte by byte to check the master's
side, and cantools decodes the frames with docs/bms_internal.dbc.
"""
import json
import os

import can
import cantools
import pytest

import tools
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_PRE
from bms.params import P_CHG_SWITCH, P_DSG_SWITCH
from comms import can_ids as C
from comms import slave_update as SU
from tools.fwpkg import tar_of, write
from tools.sim.modular import build_modular
from tools.sim.pclink import PcLink
from tools.sim.pycan_bridge import SimBus

import sim_drive  # noqa: E402

KEY = b"slave-fleet-key-0123456789"
DBC = os.path.join(tools.ROOT, "docs", "bms_internal.dbc")


def make_pkg(tmp_path, version=(0, 2, 0), key=None, defect=None, name="slave.tar"):
    text = "FW_VERSION = (%d, %d, %d)\n" % version
    if defect:
        text += "SIM_DEFECT = '%s'\n" % defect
    files = {"comms/can_ids.py": (text + "# slave firmware\n" * 120).encode(),
             "slave/core.py": b"# slave logic\n" * 200}
    pkg = tar_of(files)
    path = tmp_path / name
    write(path, pkg, key)
    return path, pkg


def open_relays(sim):
    sim.params.set(P_CHG_SWITCH, 0)
    sim.params.set(P_DSG_SWITCH, 0)
    sim.run(0.5)
    cs = sim.bms.contactors.state
    assert not (cs[RELAY_CHG] or cs[RELAY_DSG] or cs[RELAY_PRE])


def rig(tmp_path, skip=(), key=None, **kw):
    sim = build_modular(slaves=3, cells=4, chem="LFP", flash_dir=str(tmp_path / "flash"))
    sim.enable_slave_update(key=key, skip=skip, confirm_sweeps=3, **kw)
    sim.run(3)
    assert sim.module_states() == ["ok", "ok", "ok"]
    return sim


def watch_relays(sim):
    """Record every relay state seen while a slave update is running."""
    seen = {"closed_while_busy": 0, "busy_steps": 0, "send_steps": 0, "not_ok_while_sending": 0}

    def hook(s):
        if s.slave_fw.phase == SU.FP_SEND:
            seen["send_steps"] += 1
            if any(x != "ok" for x in s.module_states()):
                seen["not_ok_while_sending"] += 1
        if s.slave_fw.busy():
            seen["busy_steps"] += 1
            cs = s.bms.contactors.state
            if cs[RELAY_CHG] or cs[RELAY_DSG] or cs[RELAY_PRE]:
                seen["closed_while_busy"] += 1
    sim.hooks.append(hook)
    return seen


def cli(sim, link, *argv):
    return sim_drive.run_cli(sim, link, *argv, rate=100000)


def _flat(out):
    return " ".join(out.split())


def test_bmsctl_updates_one_slave_through_the_master(tmp_path, capsys):
    sim = rig(tmp_path)
    link = PcLink(sim)
    try:
        path, pkg = make_pkg(tmp_path, version=(0, 2, 0))
        # Relays closed: refused with a clear reason, nothing sent on the bus.
        rc = cli(sim, link, "--password", "123456", "update", "--slave", "2", str(path))
        out = _flat(capsys.readouterr().out)
        assert rc == 1 and "relays closed" in out, out
        assert sim.slave_fw.frames_sent == 0
        open_relays(sim)
        seen = watch_relays(sim)
        rc = cli(sim, link, "--password", "123456", "update", "--slave", "2", str(path))
        out = _flat(capsys.readouterr().out)
        assert rc == 0, out
        assert "slave 2: updated" in out and "slave 2 0.2.0" in out, out
        assert "slave 1 0.1.0" in out and "slave 3 0.1.0" in out
        assert sim.slave_firmware(2) == ("ok", 0, (0, 2, 0))
        assert sim.slave_firmware(1) == ("ok", -1, (0, 1, 0))
        assert sim.slave_firmware(3) == ("ok", -1, (0, 1, 0))
        assert not os.path.exists(os.path.join(sim.slave_fs[0].path, "fw", "a"))
        assert seen["busy_steps"] > 1000 and seen["closed_while_busy"] == 0
        assert sim.bms.inhibit == 0
        # The slave kept reporting while receiving: every module stayed ok during the transfer.
        assert seen["send_steps"] > 1000 and seen["not_ok_while_sending"] == 0
        assert sim.master.mod_lost_count[0] == 0 and sim.master.mod_lost_count[2] == 0
        assert cli(sim, link, "update", "--slave", "2", "x", "--status") == 0
        st = _flat(capsys.readouterr().out)
        assert "done" in st and "updated" in st
        sim.run(3)
        assert sim.module_states() == ["ok", "ok", "ok"]
    finally:
        link.close()


@pytest.mark.parametrize("case,reason", [
    ("corrupt", "sha256 mismatch"),
    ("truncated", "truncated: got"),
    ("wrong_key", "slave 1 refused the update (signature"),
    ("unsigned", "slave 1 refused the update (signature"),
])
def test_bad_slave_package_refused_slave_keeps_its_firmware(tmp_path, capsys, case, reason):
    sim = rig(tmp_path, key=KEY)
    open_relays(sim)
    link = PcLink(sim)
    try:
        path, pkg = make_pkg(tmp_path, key=b"another-key" if case == "wrong_key" else KEY)
        sim_drive.spoil_package(path, pkg, case)
        rc = cli(sim, link, "--password", "123456", "update", "--slave", "1", str(path),
                 "--no-verify")
        out = _flat(capsys.readouterr().out)
        assert rc == 1, out
        assert reason in out, out
        for a in (1, 2, 3):
            assert sim.slave_firmware(a) == ("ok", -1, (0, 1, 0))
        assert not os.path.exists(os.path.join(sim.slave_fs[0].path, "fw", "a"))
        assert sim.bms.inhibit == 0
    finally:
        link.close()


def _drop(node, can_id_base, every):
    orig = node.deliver
    n = [0]

    def deliver(cid, data, ext):
        if can_id_base <= cid < can_id_base + C.MAX_MODULES:
            n[0] += 1
            if n[0] % every == 0:
                return
        orig(cid, data, ext)
    node.deliver = deliver
    return n


def test_frame_loss_on_the_bus_completes_by_retransmission(tmp_path):
    sim = rig(tmp_path)
    open_relays(sim)
    path, pkg = make_pkg(tmp_path, version=(0, 3, 1))
    st = sim.pkgstore
    meta = json.loads((tmp_path / "slave.tar.sig").read_text())
    st.begin(len(pkg), bytes.fromhex(meta["sha256"]))
    st.chunk(0, pkg)
    st.finish()
    lost_data = _drop(sim.nodes[2], C.ID_FWDATA, 17)
    lost_ack = _drop(sim.master_node, C.ID_FWACK, 6)
    sim.slave_fw.start(3, sim.clock.ticks_ms())
    assert sim.run_until(lambda s: not s.slave_fw.busy(), 120)
    assert sim.slave_fw.phase == SU.FP_DONE, sim.slave_fw.err_text
    assert lost_data[0] // 17 >= 20 and lost_ack[0] // 6 >= 5
    assert sim.slave_fw.retransmits > 0
    sim.run(3)
    assert sim.slave_firmware(3) == ("ok", 0, (0, 3, 1))
    v = sim.master.mod_version
    assert (v[8], v[9], v[10]) == (0, 3, 1)


def test_slave_that_does_not_confirm_rolls_back(tmp_path):
    sim = rig(tmp_path, trial_timeout_ms=5000)
    open_relays(sim)
    path, pkg = make_pkg(tmp_path, version=(0, 9, 0), defect="afe")
    meta = json.loads((tmp_path / "slave.tar.sig").read_text())
    st = sim.pkgstore
    st.begin(len(pkg), bytes.fromhex(meta["sha256"]))
    st.chunk(0, pkg)
    st.finish()
    sim.slave_fw.start(1, sim.clock.ticks_ms())
    assert sim.run_until(lambda s: not s.slave_fw.busy(), 200)
    assert sim.slave_fw.phase == SU.FP_ERROR
    assert sim.slave_fw.results[0] == SU.SR_ROLLED_BACK
    assert "rolled back" in sim.slave_fw.err_text
    assert sim.boots[0] == 5      # factory, 3 tries of the new slot, rollback boot
    sim.run(4)
    assert sim.slave_firmware(1) == ("ok", -1, (0, 1, 0))
    assert sim.module_states() == ["ok", "ok", "ok"]


# ---- python-can plays slave 3's update receiver: the master's frames byte by byte ----
def _fw_frames(pc, sim, seconds, want):
    """Run the simulation until ``want(msg)`` accepts a frame python-can received."""
    end = sim.t_ms + int(seconds * 1000)
    while sim.t_ms < end:
        sim.step()
        while True:
            msg = pc.recv(timeout=0)
            if msg is None:
                break
            if want(msg):
                return msg
    raise AssertionError("no such frame in %.1f s" % seconds)


def _ack(pc, op, result, nxt, fw, session):
    pc.send(can.Message(arbitration_id=0x412, is_extended_id=False,
                        data=[op, result, nxt & 0xFF, (nxt >> 8) & 0xFF, (nxt >> 16) & 0xFF,
                              nxt >> 24, fw, session]))


def test_master_side_byte_level_with_python_can(tmp_path):
    sim = rig(tmp_path, skip=(3,))
    open_relays(sim)
    pc = SimBus(sim.bus)
    db = cantools.database.load_file(DBC)
    path, pkg = make_pkg(tmp_path)
    import hashlib
    digest = hashlib.sha256(pkg).digest()
    st = sim.pkgstore
    st.begin(len(pkg), digest)
    st.chunk(0, pkg)
    st.finish()
    stream = digest + pkg
    sim.slave_fw.start(3, sim.clock.ticks_ms())
    n = len(pkg)
    begin = _fw_frames(pc, sim, 1, lambda m: m.arbitration_id == 0x402)
    assert bytes(begin.data) == bytes([1, n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, n >> 24,
                                       0, 16, 1])
    d = db.decode_message(0x402, bytes(begin.data))
    assert (d["Op"], d["Arg"], d["P1"], d["P2"], d["Session"]) == ("begin", n, 0, 16, 1)
    _ack(pc, 1, 0, 0, 0, 1)     # accepted, factory slot, marker ok
    # First block: 16 segments, seq 0..15, 7 stream bytes each, at least 4 ms apart.
    seen = []
    for _ in range(16):
        m = _fw_frames(pc, sim, 1, lambda m: m.arbitration_id == 0x422)
        seen.append(m)
    for i, m in enumerate(seen):
        assert bytes(m.data) == bytes([i]) + stream[7 * i:7 * i + 7]
        dec = db.decode_message(0x422, bytes(m.data))
        assert dec["Seq"] == i
        assert dec["Data"] == int.from_bytes(stream[7 * i:7 * i + 7], "little")
    gaps = [b.timestamp - a.timestamp for a, b in zip(seen, seen[1:])]
    assert min(gaps) >= 0.0039
    # Report a gap at segment 5 (byte 35): the master goes back and resends seq 5 next.
    _ack(pc, 6, 0, 35, 0, 1)
    m = _fw_frames(pc, sim, 1, lambda m: m.arbitration_id == 0x422)
    assert m.data[0] == 5 and bytes(m.data[1:]) == stream[35:42]
    assert sim.slave_fw.next_seg >= 6 and sim.slave_fw.base == 5
    # Then refuse with result 5 (sha256): the master stops, with the reason.
    _ack(pc, 6, 5, 42, 0, 1)
    sim.run(0.1)
    assert sim.slave_fw.phase == SU.FP_ERROR
    assert sim.slave_fw.results[2] == SU.SR_REFUSED
    assert "slave 3 refused the update (sha256 mismatch" in sim.slave_fw.err_text
    # ... and tells the slave to close its staging: ABORT of session 1.
    ab = _fw_frames(pc, sim, 1, lambda m: m.arbitration_id == 0x402)
    assert bytes(ab.data) == bytes([3, 0, 0, 0, 0, 0, 0, 1])
    assert sim.bms.inhibit == 0
    pc.shutdown()


def test_firmware_fw_frames_decode_with_cantools():
    db = cantools.database.load_file(DBC)
    b = bytearray(8)
    C.fwctl_pack(b, C.FW_BEGIN, 123456, C.FWF_SIGNED, 16, 77)
    d = db.decode_message(C.ID_FWCTL + 4, bytes(b))
    assert d == {"Op": "begin", "Arg": 123456, "P1": 1, "P2": 16, "Session": 77}
    C.fwack_pack(b, C.FW_DATA, C.FWR_BUSY, 0x01020304, C.fw_state_byte(2, 1, 3), 9)
    d = db.decode_message(C.ID_FWACK + 15, bytes(b))
    assert d == {"Op": "data", "Result": 0x20, "Next": 0x01020304, "FwMarker": "trial",
                 "FwSlot": 2, "FwTries": 3, "Session": 9}
    assert db.get_message_by_name("M16_FWACK").frame_id == 0x41F
    assert db.get_message_by_name("M01_FWDATA").frame_id == 0x420
    # No id of the transfer collides with another message of the protocol.
    ids = [m.frame_id for m in db.messages]
    assert len(ids) == len(set(ids))
    assert min(i for i in ids if "FW" in db.get_message_by_frame_id(i).name) > max(
        i for i in ids if "FW" not in db.get_message_by_frame_id(i).name)


def test_staged_slave_package_not_swapped_in_by_a_power_cycle_after_a_master_restart(tmp_path):
    # docs/can_internal.md: the update refuses to start unless the relays are
    # open and the master holds them open during it; the staged package is
    # swapped in by the reset that follows APPLY.  Here the master restarts
    # between slave 2's FINISH and its APPLY: the relays close again, the pack
    # is in use, and then slave 2 is power-cycled.  It must come back on the
    # firmware it ran, not on the staged one that nobody applied.
    sim = rig(tmp_path)
    open_relays(sim)
    path, pkg = make_pkg(tmp_path, version=(0, 4, 0))
    meta = json.loads((tmp_path / "slave.tar.sig").read_text())
    st = sim.pkgstore
    st.begin(len(pkg), bytes.fromhex(meta["sha256"]))
    st.chunk(0, pkg)
    st.finish()
    node = sim.nodes[1]
    orig = node.deliver

    def deliver(cid, data, ext):
        if cid == C.ID_FWCTL + 1 and data[0] == C.FW_APPLY:
            return    # the master lost power before its APPLY reached the bus
        orig(cid, data, ext)
    node.deliver = deliver
    sim.slave_fw.start(2, sim.clock.ticks_ms())
    applying = SU.FP_NAMES.index("applying")
    assert sim.run_until(lambda s: s.slave_fw.phase == applying, 120)
    # The master comes back: no update running, nothing holds the relays open.
    sim.slave_fw = SU.SlaveUpdater(sim.master, sim.pkgstore, sim.bms)
    sim.master.fw = sim.slave_fw
    sim.bms.inhibit = 0
    sim.run(0.5)
    node.deliver = orig                   # (after the APPLY already on the wire)
    staged = sim.slave_firmware(2)
    sim.params.set(P_CHG_SWITCH, 1)
    sim.params.set(P_DSG_SWITCH, 1)
    assert sim.run_until(lambda s: s.bms.contactors.state[RELAY_DSG], 10)
    sim.power(2, False)
    sim.run(0.2)
    sim.power(2, True)
    sim.run(3)
    assert sim.slave_firmware(2) == ("ok", -1, (0, 1, 0))
    assert sim.boots[1] == 2
    assert sim.module_states() == ["ok", "ok", "ok"]
    # Before the power cycle the module showed the package as staged (not pending).
    assert staged == ("staged", -1, (0, 1, 0)), staged
