"""Display port: native frames (summary, cells, temps, errors, resync) and the
JBD/LLT read mode, checked with the independent decoders of ``display_peer``.
"""
from bms import faults as F
from comms.display import DisplayPort
from display_peer import Port, be, frame, jbd_parse, jbd_request, le, parse
from harness import Rig


def setup(jbd=True, current=0):
    r = Rig()
    r.board.current_ma = current
    r.board.cells[4] = 3350
    r.board.cells[9] = 3280
    r.run(2000)
    port = Port()
    return r, port, DisplayPort(port, r.bms, r.clock, jbd=jbd)


def ask(port, dp, data):
    port.feed(data)
    dp.poll()
    dp.poll()
    return port.take()


def test_summary_values():
    r, port, dp = setup(current=-25500)
    cmd, p = parse(ask(port, dp, frame(0x01)))
    assert cmd == 0x81 and len(p) == 30
    assert le(p, 0, 4) == 16 * 3300 + 50 - 20
    assert le(p, 4, 4, True) == -25500
    assert le(p, 8, 2) == r.bms.soc.soc_pm
    assert le(p, 10, 2) == 1000
    assert p[12] == 16
    assert (le(p, 13, 2), p[15]) == (3350, 5)      # highest cell, 1-based index
    assert (le(p, 16, 2), p[18]) == (3280, 10)
    assert le(p, 19, 2, True) == 250 and le(p, 21, 2, True) == 250
    assert p[25] == 0 and le(p, 26, 4) == 0


def test_summary_alarm_bits():
    r, port, dp = setup()
    r.board.temps[2] = 700
    r.run(3000)
    cmd, p = parse(ask(port, dp, frame(0x01)))
    w = le(p, 26, 4)
    assert w & (1 << F.T_CELL) and w & (1 << F.T_CHG)
    assert p[25] == F.L_PROT


def test_cells_and_temps():
    r, port, dp = setup()
    cmd, p = parse(ask(port, dp, frame(0x02, b"\x03\x04")))
    assert cmd == 0x82 and p[0] == 3 and p[1] == 4
    assert [le(p, 2 + 2 * i, 2) for i in range(4)] == [3300, 3350, 3300, 3300]
    cmd, p = parse(ask(port, dp, frame(0x03)))
    assert cmd == 0x83 and p[0] == 4
    assert [p[1 + 4 * i] for i in range(4)] == [0, 1, 2, 2]     # roles
    assert all(le(p, 3 + 4 * i, 2, True) == 250 for i in range(4))


def test_summary_version_1_adds_the_u16_count_and_indices():
    r, port, dp = setup()
    cmd, p0 = parse(ask(port, dp, frame(0x01)))
    cmd, p = parse(ask(port, dp, frame(0x01, b"\x01")))
    assert cmd == 0x81 and len(p) == 36
    assert (le(p, 30, 2), le(p, 32, 2), le(p, 34, 2)) == (16, 5, 10)
    assert p[12] == 16 and p[15] == 5 and p[18] == 10
    cmd, p = parse(ask(port, dp, frame(0x01, b"\x00")))   # version 0: the old layout
    assert cmd == 0x81 and len(p) == 30
    cmd, p = parse(ask(port, dp, frame(0x01, b"\x07")))   # newer than ours: ours, LEN says
    assert len(p) == 36


def test_256_cells_count_and_indices_saturate_never_wrap():
    # docs/display_protocol.md: a master runs up to 256 cells; the summary's
    # u8 count and 1-based indices saturate at 255 (an index stays 1..count),
    # version 1 carries them as u16, and the cells request reaches cell 256.
    r = Rig(cells=256, cell_count=256)
    r.board.cells[255] = 3350                     # cell 256 highest
    r.board.cells[254] = 3280                     # cell 255 lowest
    r.run(2000)
    port = Port()
    dp = DisplayPort(port, r.bms, r.clock, jbd=True)
    assert r.bms.meas.n_cells == 256
    cmd, p = parse(ask(port, dp, frame(0x01)))
    assert cmd == 0x81 and len(p) == 30
    assert p[12] == 255                           # 256 cells: 255 = "255 or more", not 0
    assert (le(p, 13, 2), p[15]) == (3350, 255)   # cell 256: 255, not 0
    assert (le(p, 16, 2), p[18]) == (3280, 255)   # cell 255 itself
    cmd, p = parse(ask(port, dp, frame(0x01, b"\x01")))
    assert len(p) == 36 and p[:12] == parse(ask(port, dp, frame(0x01)))[1][:12]
    assert (le(p, 30, 2), le(p, 32, 2), le(p, 34, 2)) == (256, 256, 255)
    cmd, p = parse(ask(port, dp, frame(0x02, bytes([192, 64]))))
    assert cmd == 0x82 and p[0] == 192 and p[1] == 64
    assert le(p, 2 + 2 * 62, 2) == 3280 and le(p, 2 + 2 * 63, 2) == 3350
    cmd, p = parse(ask(port, dp, frame(0x02, bytes([255, 1]))))
    assert (cmd, le(p, 2, 2)) == (0x82, 3350)
    assert parse(ask(port, dp, frame(0x02, bytes([255, 2])))) == (0xFF, b"\x02")
    # JBD: the count byte saturates too, 0x04 carries the first 127 cells.
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
    assert p[21] == 255
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x04)))
    assert st == 0 and len(p) == 2 * 127


def test_errors():
    r, port, dp = setup()
    assert parse(ask(port, dp, frame(0x02, b"\x0f\x02"))) == (0xFF, b"\x02")  # past cell 16
    assert parse(ask(port, dp, frame(0x02, b"\x00\x00"))) == (0xFF, b"\x02")
    assert parse(ask(port, dp, frame(0x01, b"\x01\x00"))) == (0xFF, b"\x02")  # version is one byte
    assert parse(ask(port, dp, frame(0x42))) == (0xFF, b"\x01")


def test_garbage_bad_crc_and_split_frames_resync():
    r, port, dp = setup()
    bad = bytearray(frame(0x01))
    bad[-1] ^= 0xFF
    out = ask(port, dp, b"\x00\xa5\x13" + bytes(bad) + frame(0x03))
    cmd, p = parse(out)
    assert cmd == 0x83 and dp.crc_errors == 1
    f = frame(0x01)
    assert ask(port, dp, f[:3]) == b""
    cmd, p = parse(ask(port, dp, f[3:]))
    assert cmd == 0x81
    # A partial frame left alone is dropped after the gap.
    ask(port, dp, f[:4])
    r.clock.advance(200)
    dp.poll()
    assert dp.n == 0
    cmd, p = parse(ask(port, dp, frame(0x01)))
    assert cmd == 0x81


def test_jbd_reference_vector():
    # The public protocol's own example answer checks with our decoder.
    ex = bytes([0xDD, 0x05, 0x00, 0x0A, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
                0x39, 0xFD, 0xE9, 0x77])
    assert jbd_parse(ex) == (0x05, 0x00, b"0123456789")
    assert jbd_request(0x03) == bytes([0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFD, 0x77])


def test_jbd_basic_info():
    r, port, dp = setup(current=-12340)
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
    assert (cmd, st) == (0x03, 0x00)
    assert len(p) == 23 + 2 * 3
    assert be(p, 0) == (16 * 3300 + 50 - 20) // 10
    assert be(p, 2, True) == -1234
    assert be(p, 4) == r.bms.soc.remaining_mah // 10
    assert be(p, 6) == 10000                      # 100.0 Ah in 10 mAh
    assert be(p, 16) == 0                         # no protection
    assert p[19] == (r.bms.soc.soc_pm + 5) // 10
    assert p[20] == 3                             # charge and discharge relays closed
    # NTC 0 the MOS (power board), then the two cell sensors; the balance
    # board is not sent (a client would average it into the pack temperature).
    assert p[21] == 16 and p[22] == 3
    assert be(p, 23) == 250 + 2731


def test_jbd_temperatures_mos_first_then_cells_without_balance():
    r, port, dp = setup()
    r.board.temps[0] = 412                        # power board 41.2 degC
    r.board.temps[1] = 600                        # balance board 60.0 degC
    r.board.temps[2] = 213
    r.board.temps[3] = 227
    r.run(2000)
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
    assert p[22] == 3
    assert [be(p, 23 + 2 * k) - 2731 for k in range(3)] == [412, 213, 227]


def test_jbd_protection_bits():
    r, port, dp = setup()
    for i in range(16):
        r.board.cells[i] = 3700                   # above ov1 3650 (LFP)
    r.run(6000)
    assert r.bms.prot.active(F.OV1)
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
    # Cell OV and pack OV (clients alarm on the pack bit), charge FET off.
    assert be(p, 16) & 0x0005 == 0x0005 and p[20] & 1 == 0
    for i in range(16):
        r.board.cells[i] = 2400                   # below uv1 2500
    r.run(6000)
    assert r.bms.prot.active(F.UV1)
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
    assert be(p, 16) & 0x000A == 0x000A and p[20] & 2 == 0


def test_jbd_every_relay_opening_fault_sets_a_bit():
    r, port, dp = setup()
    for fid in range(F.N_FAULTS):
        if not F.TABLE[fid][F.F_REACTION] & (F.R_CHG | F.R_DSG | F.R_L2):
            continue
        r.bms.prot.force(fid, r.clock.ticks_ms())
        cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x03)))
        assert be(p, 16) != 0, F.TABLE[fid][0]
        r.bms.prot.state[fid] = 0                 # idle again for the next row


def test_jbd_cells_version_and_refusals():
    r, port, dp = setup()
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x04)))
    assert len(p) == 32 and be(p, 8) == 3350
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0x05)))
    assert p == b"MPY-BMS"
    cmd, st, p = jbd_parse(ask(port, dp, jbd_request(0xAA)))
    assert (cmd, st, p) == (0xAA, 0x80, b"")
    w = bytes([0xDD, 0x5A, 0xE1, 0x02, 0x00, 0x02])       # a MOS write: refused
    s = 0xE1 + 0x02 + 0x00 + 0x02
    c = (0x10000 - s) & 0xFFFF
    cmd, st, p = jbd_parse(ask(port, dp, w + bytes([c >> 8, c & 0xFF, 0x77])))
    assert (cmd, st) == (0xE1, 0x80)


def test_jbd_off_ignores_jbd():
    r, port, dp = setup(jbd=False)
    assert ask(port, dp, jbd_request(0x03)) == b""
    assert parse(ask(port, dp, frame(0x01)))[0] == 0x81


def test_charger_command_bytes_and_status():
    from bms.derating import RAMP_MS
    from comms.charger import Charger
    from display_peer import ref_crc
    r = Rig(special_charger=1)
    r.run(RAMP_MS + 2000)      # past the derating's soft start: full charge limit
    port = Port()
    ch = Charger(r.bms, r.clock, port=port)
    ch.poll()
    f = port.take()
    # Elcon payload: 56.8 V = 0x0238, 80.0 A = 0x0320 (big-endian), control 0 = charge.
    assert f[:12] == bytes([0xA5, 0x5A, 0x08, 0x10, 0x02, 0x38, 0x03, 0x20, 0, 0, 0, 0])
    c = ref_crc(f[2:12])
    assert f[12:] == bytes([c & 0xFF, c >> 8])
    st = bytes([0x08, 0x90, 0x02, 0x30, 0x00, 0xC8, 0x02, 0, 0, 0])   # 56.0 V, 20.0 A, over-temp
    c = ref_crc(st)
    port.feed(b"\x00\x01" + bytes([0xA5, 0x5A]) + st + bytes([c & 0xFF, c >> 8]))
    r.clock.advance(10)
    ch.poll()
    assert ch.present and (ch.out_dv, ch.out_da, ch.status) == (560, 200, 2)
    assert port.take()[4:9] == bytes([0, 0, 0, 0, 1])                # charger fault: stop now



def test_charger_is_told_to_stop_rather_than_charge_at_0_0_a():
    # The command carries the current in 0.1 A steps: a limit under 100 mA
    # (a tiny chg_oc, a ramp's first steps) is "stop", not "charge at 0.0 A".
    from bms.derating import RAMP_MS
    from comms.charger import Charger
    r = Rig(special_charger=1, chg_oc=1)    # 0.1 A: the limit is 80 mA
    r.run(RAMP_MS + 2000)
    port = Port()
    ch = Charger(r.bms, r.clock, port=port)
    ch.poll()
    f = port.take()
    assert f[4:9] == bytes([0, 0, 0, 0, 1]), f    # stop
    assert not ch.charging

def test_charger_on_can_ignores_a_status_frame_too_short_for_its_fields():
    # docs/charger_protocol.md: the charger's status is 8 bytes, the status
    # bits in byte 4, and "Charger.present is False when no status came for
    # 5 s".  A shorter frame on that id (truncated, or another device's) was
    # taken as a status, its missing bytes read from the previous frame: it
    # kept a charger that had gone present and counted as received.
    from can_helpers import LoopBus, LoopNode
    from comms.charger import ID_STATUS, Charger
    r = Rig(special_charger=1)
    r.run(2000)
    bus = LoopBus()
    node = LoopNode(bus)
    peer = LoopNode(bus)
    ch = Charger(r.bms, r.clock, can=node)
    peer.send(ID_STATUS, bytes((0x02, 0x30, 0x00, 0xC8, 0x00, 0, 0, 0)), True)
    ch.poll()
    assert ch.present and ch.received == 1 and ch.out_da == 200
    for _ in range(7):
        peer.send(ID_STATUS, bytes((0x02, 0x31)), True)    # 2 bytes: no status in it
        r.clock.advance(1000)
        ch.poll()
    assert ch.received == 1 and ch.out_dv == 560
    assert not ch.present
