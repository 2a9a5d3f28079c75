"""The firmware's CAN tables and packers against docs/bms_internal.dbc (cantools)."""
import os
import random

import cantools
import pytest

import tools
from comms import can_ids as C
from comms.can_master import CanMaster, MS_OK
from can_helpers import LoopBus, LoopNode

DBC = os.path.join(tools.ROOT, "docs", "bms_internal.dbc")


@pytest.fixture(scope="module")
def db():
    return cantools.database.load_file(DBC)


def _instances(name, base, count, stride):
    if count == 1:
        return [(name, base, 0, 0)]
    out = []
    for k in range(count):
        if name == "CELLS":
            a, f = k // C.CELL_FRAMES + 1, k % C.CELL_FRAMES
            out.append(("M%02d_CELLS_%d" % (a, f), base + k, a, f))
        else:
            out.append(("M%02d_%s" % (k + 1, name), base + k * stride, k + 1, 0))
    return out


def test_every_layout_row_matches_the_dbc(db):
    seen = set()
    for name, base, count, stride, dlc, sender, sigs in C.LAYOUT:
        for mname, fid, addr, frame in _instances(name, base, count, stride):
            msg = db.get_message_by_name(mname)
            assert msg.frame_id == fid, mname
            assert not msg.is_extended_frame
            assert msg.length == dlc, mname
            assert msg.senders == [sender], mname
            by_name = {s.name: s for s in msg.signals}
            assert len(by_name) == len(sigs), mname
            for sname, start, length, signed, scale, offset, unit in sigs:
                if name == "CELLS":
                    sname = "Cell%02d" % (frame * 4 + "ABCD".index(sname[-1]) + 1)
                s = by_name[sname]
                assert (s.start, s.length, s.is_signed, s.byte_order) == \
                    (start, length, bool(signed), "little_endian"), (mname, sname)
                assert s.scale == scale and s.offset == offset, (mname, sname)
                assert (s.unit or "") == unit, (mname, sname)
            seen.add(fid)
    # nothing in the DBC the firmware does not know about
    assert seen == {m.frame_id for m in db.messages}


def test_named_ids(db):
    assert db.get_message_by_name("SYNC").frame_id == C.ID_SYNC
    assert db.get_message_by_name("ASSIGN").frame_id == C.ID_ASSIGN
    assert db.get_message_by_name("REQUEST").frame_id == C.ID_REQUEST
    assert db.get_message_by_name("ANNOUNCE").frame_id == C.ID_ANNOUNCE
    for a in (1, 7, 16):
        assert db.get_message_by_name("M%02d_STATUS" % a).frame_id == C.ID_STATUS + a - 1
        assert db.get_message_by_name("M%02d_BAL" % a).frame_id == C.ID_BAL + a - 1
        assert db.get_message_by_name("M%02d_CONFIG" % a).frame_id == C.ID_CONFIG + a - 1
        assert db.get_message_by_name("M%02d_TEMPS" % a).frame_id == C.ID_TEMPS + a - 1
        assert db.get_message_by_name("M%02d_VERSION" % a).frame_id == C.ID_VERSION + a - 1
        for f in range(4):
            assert db.get_message_by_name("M%02d_CELLS_%d" % (a, f)).frame_id == C.cells_id(a, f)
    assert str(C.BITRATE) in db.dbc.attributes["Baudrate"].value.__str__()


def test_firmware_packers_decode_with_cantools(db):
    rng = random.Random(5)
    b = bytearray(8)
    for _ in range(200):
        sweep, flags, mods = rng.randrange(65536), rng.randrange(8), rng.randrange(1, 17)
        C.sync_pack(b, sweep, flags, mods, 1000, 40, 6)
        d = db.decode_message(C.ID_SYNC, bytes(b), decode_choices=False)
        assert (d["Sweep"], d["Flags"], d["Modules"], d["PeriodMs"], d["SlotMs"], d["GapMs"]) == \
            (sweep, flags, mods, 1000, 40, 6)

        mask, to = rng.randrange(65536), rng.randrange(1, 25) * 100
        n = C.bal_pack(b, mask, to, 7)
        d = db.decode_message(C.ID_BAL + 3, bytes(b[:n]))
        assert (d["Mask"], d["TimeoutMs"], d["Seq"]) == (mask, to, 7)

        ot = rng.randrange(-40, 121)
        C.config_pack(b, 13, 3, 3800, 2100, ot, 1)
        d = db.decode_message(C.ID_CONFIG, bytes(b))
        assert (d["Cells"], d["Temps"], d["OvMv"], d["UvMv"], d["OtC"], d["CfgFlags"]) == \
            (13, 3, 3800, 2100, ot, 1)

        faults, bal, age = rng.randrange(256), rng.randrange(65536), rng.randrange(0, 2550, 10)
        C.status_pack(b, C.ST_FAULT | C.STATE_LOCKED, 16, sweep, faults, bal, 3, age)
        d = db.decode_message(C.ID_STATUS + 15, bytes(b), decode_choices=False)
        assert (d["State"], d["Locked"], d["AutoAddr"], d["Cells"], d["SweepEcho"], d["Faults"],
                d["BalMask"], d["Temps"], d["AgeMs"]) == \
            (C.ST_FAULT, 1, 0, 16, sweep & 0xFF, faults, bal, 3, age)

        uid = rng.randrange(1 << 48)
        C.announce_pack(b, uid, 12)
        d = db.decode_message(C.ID_ANNOUNCE, bytes(b))
        assert (d["Uid"], d["Cells"], d["Proto"]) == (uid, 12, C.PROTO_VERSION)
        C.assign_pack(b, uid, 5)
        d = db.decode_message(C.ID_ASSIGN, bytes(b))
        assert (d["Uid"], d["Addr"]) == (uid, 5)
        C.version_pack(b, uid)
        d = db.decode_message(C.ID_VERSION, bytes(b))
        assert d["UidLo"] == uid & 0xFFFFFFFF and d["Proto"] == C.PROTO_VERSION


def test_master_accepts_frames_built_by_cantools(db):
    """cantools encodes a module's sweep; the firmware master must read it back."""
    bus = LoopBus()
    node = LoopNode(bus, rx_depth=64)
    m = CanMaster(node, 2, now=0)
    m.configure(32, 16, 2500)
    m.poll(0)                                  # sends SYNC sweep 1
    assert m.sweep == 1
    mv = [3000 + 7 * i for i in range(16)]
    temps = [-123, 456, 250, -32768]
    frames = [(C.ID_STATUS + 1, db.encode_message("M02_STATUS", {
        "State": 1, "Locked": 0, "AutoAddr": 0, "Cells": 16, "SweepEcho": 1, "Faults": 0,
        "BalMask": 0, "Temps": 3, "AgeMs": 30}))]
    for f in range(4):
        sig = {"Cell%02d" % (4 * f + j + 1): mv[4 * f + j] for j in range(4)}
        frames.append((C.cells_id(2, f), db.encode_message("M02_CELLS_%d" % f, sig)))
    frames.append((C.ID_TEMPS + 1, db.encode_message(
        "M02_TEMPS", {"T%d" % (j + 1): temps[j] / 10.0 for j in range(4)})))
    for fid, data in frames:
        node.deliver(fid, data, False)
    m.poll(100)
    assert m.mod_state[1] == MS_OK
    assert list(m.cell_mv[16:32]) == mv
    assert list(m.temp_dc[4:8]) == temps
