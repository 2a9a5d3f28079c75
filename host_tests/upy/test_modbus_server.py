"""Modbus RTU server: framing by silence, function codes, exceptions, broadcast."""
import micropython

from bms import params as P
from bms.core import CMD_SOC_SET, LOOK_BUILD, LOOK_SMALL
from comms.registers import A_STATUS
from comms.registers import (A_AUTH, A_CELLS, A_INFO, A_LOGHEAD, A_MON, A_PARAMS,
                             A_TEMPS, command_address, monitor_address)
from comms.regs.auth import AU_ERR_INDEX, AU_ERR_TEXT
from comms.regs.monitor import SIZE as MON_SIZE
from comms.regs.status import SIZE as STATUS_SIZE
from modbus_rig import (ModbusRig, ascii_regs, crc_ok, exception_code, ref_crc, s16, s32, u32,
                        with_crc)

READ_10 = bytes((0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD))


def _running_rig(**kw):
    r = ModbusRig(**kw)
    r.run(2000)
    assert r.bms.running
    return r


def test_reply_only_after_t35_silence():
    r = ModbusRig()
    r.port.feed(READ_10)
    r.server.poll()
    r.idle(3)  # 3 ms < t3.5 (3.65 ms at 9600 8N1)
    assert r.port.txn == 0
    r.idle(2)
    resp = r.port.take()
    assert crc_ok(resp) and resp[:3] == bytes((1, 3, 20))


def test_read_is_built_ahead_but_sent_only_after_t35():
    # The reply to a complete read is built when its last byte is read (it
    # overlaps the silence on a slow chip), and still goes out only after
    # t3.5, with the same bytes as one built at the end of the silence.
    r = ModbusRig()
    r.port.feed(READ_10)
    r.server.poll()
    assert r.server._early == 25 and r.port.txn == 0      # built, not sent
    r.clock.advance_us(3600)
    r.server.poll()
    assert r.port.txn == 0
    r.clock.advance_us(100)
    r.server.poll()
    ahead = r.port.take()
    r.server._early = -1
    r.port.feed(READ_10)
    r.server.poll()
    r.server._early = -1                                  # force the late build
    r.idle(6)
    assert ahead == r.port.take() and crc_ok(ahead) and len(ahead) == 25
    assert r.server.replies == 2


def test_read_built_ahead_is_dropped_when_the_frame_goes_on():
    # Eight bytes with a good CRC that turn out to be the start of a longer
    # frame (more bytes within t1.5): no reply from the early build; the
    # longer frame's own CRC decides.
    r = ModbusRig()
    r.port.feed(READ_10)
    r.server.poll()
    assert r.server._early == 25
    r.clock.advance_us(1000)          # < t1.5
    r.port.feed(b"\x12\x34")
    r.server.poll()
    assert r.server._early == -1
    r.idle(6)
    assert r.port.take() == b"" and r.server.crc_errors == 1 and r.server.replies == 0


def test_a_write_is_never_executed_ahead():
    r = ModbusRig()
    assert crc_ok(r.unlock())
    addr = A_PARAMS + P.P_OV1
    frame = with_crc(bytes((1, 6, addr >> 8, addr & 0xFF, 0x0E, 0x10)))   # ov1 3600 mV
    r.port.feed(frame)
    r.server.poll()
    assert r.server._early == -1 and r.params[P.P_OV1] == 3650
    r.clock.advance_us(1000)
    r.port.feed(b"\x5a")             # the frame goes on: it must never apply
    r.server.poll()
    r.idle(6)
    assert r.params[P.P_OV1] == 3650 and r.port.take() == b""
    # The same write, complete, applies after the silence.
    r.port.feed(frame)
    r.server.poll()
    r.idle(6)
    assert r.params[P.P_OV1] == 3600 and crc_ok(r.port.take())


def test_t35_is_that_of_the_line():
    # 9600 8N1 is 10 bits per character: t3.5 = 3645.8 us.  A reply at
    # 3.60 ms would break the frame rule; one at 3.70 ms is on time.
    r = ModbusRig()
    assert (r.server.t15, r.server.t35) == (1563, 3646)
    r.port.feed(READ_10)
    r.server.poll()
    r.clock.advance_us(3600)
    r.server.poll()
    assert r.port.txn == 0
    r.clock.advance_us(100)
    r.server.poll()
    assert crc_ok(r.port.take())
    # With parity (8E1) or two stop bits a character is 11 bits: 4010.4 us.
    from comms.modbus_rtu import ModbusRTU
    s = ModbusRTU(r.port, r.regs, r.clock, bits=11)
    assert (s.t15, s.t35) == (1719, 4011)


def test_frame_split_by_short_gaps_is_one_frame():
    r = ModbusRig()
    for b in READ_10:
        r.port.feed(bytes((b,)))
        r.server.poll()
        r.clock.advance_us(1042)  # one character at 9600 8N1
        r.server.poll()
    r.idle(6)
    resp = r.port.take()
    assert crc_ok(resp) and len(resp) == 25


def test_gap_above_t15_drops_the_frame():
    r = ModbusRig()
    r.port.feed(READ_10[:4])
    r.server.poll()
    # Quiet for 3.0 ms when polled, < t3.5: at least 1.96 ms of silence
    # (one character may have been on the wire), > t1.5 (1.56 ms).
    r.clock.advance_us(3000)
    r.server.poll()
    r.port.feed(READ_10[4:])
    r.server.poll()
    r.idle(6)
    assert r.port.take() == b""
    assert r.server.framing_errors == 1
    # The next clean frame is served.
    assert len(r.send_raw(READ_10)) == 25


def test_a_gap_of_up_to_t15_between_characters_keeps_the_frame():
    # Modbus over serial line V1.02, 2.5.1.1 and docs/modbus.md: only a
    # silence of MORE than 1.5 characters inside a frame breaks it.  A UART
    # shows a character once its stop bit is in, so a poll that finds the
    # port empty may fall while the next character is already on the wire:
    # the silence it proves is one character shorter than the time since
    # the last read.  Here the gap between two characters is 1.0 character
    # (legal) and a poll lands 1.6 characters after the last read, before the
    # next character is complete (9600 8N1: one character 1042 us).
    ch = 1042
    for gap in (1.0, 1.4):
        for look in (1600, 1800, int((1 + gap) * ch) - 10):   # after t1.5 (1563 us)
            r = ModbusRig()
            r.port.feed(READ_10[:4])
            r.server.poll()
            r.clock.advance_us(look)
            r.server.poll()                        # nothing complete yet
            r.clock.advance_us(int((1 + gap) * ch) - look)
            r.port.feed(READ_10[4:5])              # its stop bit is in now
            r.server.poll()
            for b in READ_10[5:]:
                r.clock.advance_us(ch)
                r.port.feed(bytes((b,)))
                r.server.poll()
            r.idle(6)
            resp = r.port.take()
            assert crc_ok(resp) and len(resp) == 25, (gap, look, resp)
            assert r.server.framing_errors == 0
    # A gap well above t1.5 (2.5 characters) still discards the frame.
    r = ModbusRig()
    r.port.feed(READ_10[:4])
    r.server.poll()
    r.clock.advance_us(3000)
    r.server.poll()
    r.clock.advance_us(int(3.5 * ch) - 3000)
    r.port.feed(READ_10[4:])
    r.server.poll()
    r.idle(6)
    assert r.port.take() == b"" and r.server.framing_errors == 1


def test_a_frame_without_a_function_code_is_not_answered():
    # Modbus over serial line V1.02, 2.5.1.1 and docs/modbus.md: an RTU
    # frame is the address, the function code, the data and the CRC, at
    # least 4 bytes.  Three bytes whose last two are the CRC of the first
    # (line noise after a silence) were answered as a request for the
    # "function" in the CRC's low byte: 01 7E 80 got exception 01 of
    # function 0x7E, a reply to a request nobody sent.
    r = ModbusRig()
    f = with_crc(bytes((1,)))
    assert f == bytes((0x01, 0x7E, 0x80))
    assert r.send_raw(f) == b""
    assert r.server.handled == 0 and r.server.replies == 0
    assert r.send_raw(with_crc(bytes((0,)))) == b"" and r.server.broadcasts == 0
    assert len(r.send_raw(READ_10)) == 25          # the next request is served


def test_two_frames_separated_by_silence():
    r = ModbusRig()
    r.port.feed(READ_10)
    r.server.poll()
    r.idle(6)
    r.port.feed(READ_10)
    r.server.poll()
    r.idle(6)
    assert len(r.port.take()) == 50


def test_bytes_before_first_silence_are_ignored():
    r = ModbusRig()
    # A fresh server must not parse the tail of a frame already on the line.
    from comms.modbus_rtu import ModbusRTU
    s = ModbusRTU(r.port, r.regs, r.clock)
    r.port.feed(READ_10)
    s.poll()
    for _ in range(6):
        r.clock.advance(1)
        s.poll()
    assert r.port.take() == b""
    r.port.feed(READ_10)
    s.poll()
    for _ in range(6):
        r.clock.advance(1)
        s.poll()
    assert len(r.port.take()) == 25


def test_crc_error_and_other_address_get_no_reply():
    r = ModbusRig()
    bad = bytearray(READ_10)
    bad[7] ^= 0xFF
    assert r.send_raw(bad) == b""
    assert r.server.crc_errors == 1
    assert r.request(bytes((3, 0, 0, 0, 1)), address=2) == b""
    assert r.server.frames == 1 and r.server.handled == 0


def test_millisecond_clock_mode():
    r = ModbusRig(us=False)
    assert len(r.send_raw(READ_10, gap_ms=7)) == 25


def test_fc03_and_fc04_read_the_monitor():
    r = _running_rig(mv=3300)
    r.board.cells[4] = 3350
    r.board.cells[9] = 3250
    r.board.current_ma = -12345
    r.run(600)
    m = r.read(A_MON, MON_SIZE)
    assert r.read(A_MON, MON_SIZE, fc=4) == m
    base = A_MON
    assert u32(m, monitor_address("pack_voltage") - base) == 3300 * 14 + 3350 + 3250
    assert s32(m, monitor_address("current") - base) == -12345
    assert m[monitor_address("cell_max") - base] == 3350
    assert m[monitor_address("cell_max_index") - base] == 5
    assert m[monitor_address("cell_min") - base] == 3250
    assert m[monitor_address("cell_min_index") - base] == 10
    assert m[monitor_address("cell_diff") - base] == 100
    assert m[monitor_address("cell_count") - base] == 16
    assert s16(m[monitor_address("t_cell_max") - base]) == 250
    assert m[monitor_address("soc") - base] == r.bms.soc.soc_pm
    cells = r.read(A_CELLS, 16)
    assert cells[4] == 3350 and cells[9] == 3250 and cells[0] == 3300
    assert r.read(A_CELLS + 16, 4) == [0, 0, 0, 0]  # beyond the cell count


def test_fault_bits_follow_protection():
    r = _running_rig(mv=3300)
    r.board.cells[2] = 3700  # above the LFP ov1 (3650 mV), below ov2 (3750 mV)
    r.run(7000)
    from bms import faults as F
    assert r.bms.prot.active(F.OV1)
    m = r.read(A_MON, MON_SIZE)
    w = m[monitor_address("faults_0") - A_MON]
    assert w & (1 << F.OV1)
    assert m[monitor_address("protection_0") - A_MON] & (1 << F.OV1)
    assert not m[monitor_address("alarm_0") - A_MON] & (1 << F.OV1)
    relays = m[monitor_address("relays") - A_MON]
    assert relays & (1 << 2) == 0  # charge relay open


def test_params_read_signed_and_unsigned():
    r = ModbusRig()
    regs = r.read(A_PARAMS, P.N_PARAMS)
    assert regs[P.P_OV1] == 3650
    assert s16(regs[P.P_LT_DSG]) == -20
    assert regs[P.P_CELL_COUNT] == 16


def test_identity_ascii():
    r = ModbusRig()
    regs = r.read(A_INFO + 0x18, 8)
    s = bytearray()
    for v in regs:
        s.append(v >> 8)
        s.append(v & 0xFF)
    assert bytes(s).rstrip(b"\0") == b"SN0001"


def test_identity_block_layout_and_any_window():
    # The documented layout (docs/modbus.md: model 0x00, firmware 0x10,
    # serial 0x18, date 0x20, Bluetooth address 0x26, map version 0x2C,
    # max cells, sensors, parameter rows, vendor 0x30, zero to 0x3F), and a
    # read may start or end anywhere in a field.
    r = _running_rig()
    whole = r.read(A_INFO, 0x40)
    assert whole[0x00:0x10] == ascii_regs(r.info.get("model"), 16)
    assert whole[0x10:0x18] == ascii_regs(r.info.get("firmware"), 8)
    assert whole[0x18:0x20] == ascii_regs("SN0001", 8)
    assert whole[0x2C] == 1 and whole[0x2D] == r.bms.meas.max_cells
    assert whole[0x2E] == r.bms.meas.n_temps and whole[0x2F] == P.N_PARAMS
    assert whole[0x30:0x38] == ascii_regs(r.info.get("vendor"), 8)
    assert whole[0x38:0x40] == [0] * 8
    for start in range(0x40):
        for count in (1, 2, 3, 9, 17):
            if start + count <= 0x40:
                assert r.read(A_INFO + start, count) == whole[start:start + count], (start, count)


def test_exceptions():
    r = ModbusRig()
    assert exception_code(r.request(bytes((0x05, 0, 0, 0xFF, 0))), 0x05) == 1   # coils: no
    assert exception_code(r.request(bytes((0x03, 0x7F, 0x00, 0, 1))), 3) == 2   # no block
    assert exception_code(r.request(bytes((0x03, 0x04, 0xFE, 0, 4))), 3) == 2   # leaves block
    assert exception_code(r.request(bytes((0x03, 0, 0, 0, 0))), 3) == 3         # count 0
    assert exception_code(r.request(bytes((0x03, 0, 0, 0, 126))), 3) == 3       # count > 125
    assert exception_code(r.request(bytes((0x10, 0x10, 0, 0, 2, 3, 0, 1, 0, 2))), 16) == 3
    assert r.server.exceptions_sent == 6


def test_write_refused_while_locked_then_accepted():
    r = ModbusRig()
    assert exception_code(r.write1(A_PARAMS + P.P_OV1, 3600), 6) == 1
    assert r.params[P.P_OV1] == 3650
    resp = r.unlock()
    assert crc_ok(resp) and resp[1] == 16
    resp = r.write1(A_PARAMS + P.P_OV1, 3600)
    assert resp == with_crc(bytes((1, 6, 0x10, P.P_OV1, 0x0E, 0x10)))
    assert r.params[P.P_OV1] == 3600


def test_multi_register_write_is_all_or_nothing():
    r = ModbusRig()
    r.unlock()
    before = list(r.params.values)
    # ov1 3700 is fine alone but ov2 3680 < ov1 breaks a rule: nothing changes.
    resp = r.write_n(A_PARAMS + P.P_OV1, [3700, 3680])
    assert exception_code(resp, 16) == 3
    assert list(r.params.values) == before
    err = r.read(A_AUTH + AU_ERR_INDEX, 1)[0]
    assert err == P.P_OV2
    text = r.read(A_AUTH + AU_ERR_TEXT, 64)
    raw = bytearray()
    for v in text:
        raw.append(v >> 8)
        raw.append(v & 0xFF)
    assert b"level-2 over-voltage must be above" in bytes(raw)
    # A valid combination in one request is applied together.
    resp = r.write_n(A_PARAMS + P.P_OV1, [3700, 3740])
    assert crc_ok(resp) and resp[1] == 16
    assert r.params[P.P_OV1] == 3700 and r.params[P.P_OV2] == 3740


def test_signed_parameter_write():
    r = ModbusRig()
    r.unlock()
    r.write1(A_PARAMS + P.P_CUR_OFFSET, -120)
    assert r.params[P.P_CUR_OFFSET] == -120
    assert s16(r.read(A_PARAMS + P.P_CUR_OFFSET, 1)[0]) == -120


def test_rewriting_block_keeps_current_chemistry_settings():
    r = ModbusRig()
    r.unlock()
    r.write1(A_PARAMS + P.P_OV1, 3600)
    regs = r.read(A_PARAMS, 10)
    regs[P.P_CAPACITY] = 2000
    r.write_n(A_PARAMS, regs)
    assert r.params[P.P_CAPACITY] == 2000 and r.params[P.P_OV1] == 3600


def test_broadcast_write_executes_without_reply():
    r = ModbusRig()
    r.unlock()
    assert r.write1(A_PARAMS + P.P_BAL_DIFF, 15, address=0) == b""
    assert r.params[P.P_BAL_DIFF] == 15
    assert r.request(bytes((3, 0, 0, 0, 1)), address=0) == b""
    assert r.server.broadcasts == 2


def test_commands_reach_bms_request():
    r = _running_rig()
    r.unlock()
    resp = r.write1(command_address("soc_set"), 800)
    assert crc_ok(resp) and resp[1] == 6
    assert r.bms.cmd_pending
    # A second command before the core ran the first: busy.
    assert exception_code(r.write1(command_address("soc_set"), 700), 6) == 6
    r.run(100)
    assert r.bms.soc.soc_pm == 800
    assert exception_code(r.write1(command_address("soc_set"), 1001), 6) == 3
    # 32-bit argument through FC16: current calibration.
    assert exception_code(r.write_n(command_address("cal_current") + 1, [0, 1]), 16) == 2
    resp = r.write_n(command_address("cal_current"), [0x0001, 0x86A0])  # 100000 mA
    assert crc_ok(resp)
    assert r.bms._cmd_arg == 100000
    assert CMD_SOC_SET == 2


def test_device_identification():
    r = ModbusRig()
    resp = r.request(bytes((0x2B, 0x0E, 0x01, 0x00)))
    assert crc_ok(resp)
    assert resp[1] == 0x2B and resp[2] == 0x0E and resp[3] == 1 and resp[7] == 3
    assert resp[8] == 0 and bytes(resp[10:10 + resp[9]]) == b"micropython-bms"
    resp = r.request(bytes((0x2B, 0x0E, 0x04, 0x80)))
    assert resp[7] == 1 and bytes(resp[10:10 + resp[9]]) == b"SN0001"
    assert exception_code(r.request(bytes((0x2B, 0x0E, 0x04, 0x55))), 0x2B) == 2


def test_address_and_baud_follow_parameters():
    r = ModbusRig()
    r.unlock()
    resp = r.write1(A_PARAMS + P.P_MODBUS_ADDR, 7)
    assert crc_ok(resp) and resp[0] == 1  # answered under the old address
    assert len(r.read(0, 1, address=7)) == 1
    assert r.request(bytes((3, 0, 0, 0, 1)), address=1) == b""
    r.write1(A_PARAMS + P.P_MODBUS_BAUD, 5, address=7)
    r.server.poll()
    assert r.port.baud_set == [115200]
    assert r.server.t35 == 1750


def test_the_timing_is_that_of_the_speed_the_port_runs_at():
    # docs/modbus.md: t1.5 / t3.5 are those of the line, fixed 750 / 1750 us
    # above 19200 baud (Modbus over serial line V1.02, 2.5.1.1).  The board
    # option modbus_baud (config.py OPTS, docs/deploy.md) starts the port at
    # 115200 while the parameter still holds its default 9600: the server
    # timed that line as 9600 baud (t3.5 3.65 ms), so a request that followed
    # another unit's frame by the line's t3.5 was taken for the same frame
    # and lost.
    from comms.modbus_rtu import ModbusRTU
    r = ModbusRig()
    r.port.baud = 115200             # what drivers.rs485.Rs485 reports
    s = ModbusRTU(r.port, r.regs, r.clock, params=r.params)
    r.server = s
    r.idle(10)
    assert (s.t15, s.t35) == (750, 1750)
    r.port.feed(with_crc(bytes((2, 3, 0, 0, 0, 1))))      # for unit 2
    s.poll()
    for _ in range(7):               # the idle loop's 250 us polls: 1750 us of silence
        r.clock.advance_us(250)
        s.poll()
    r.clock.advance_us(95)           # one character at 115200: the next frame's first
    r.port.feed(READ_10)
    s.poll()
    for _ in range(10):
        r.clock.advance_us(250)
        s.poll()
    resp = r.port.take()
    assert crc_ok(resp) and resp[:3] == bytes((1, 3, 20)), resp
    assert r.port.baud_set == [] and s.crc_errors == 0      # the port keeps its speed


def test_a_request_that_follows_another_units_frame_by_t35_is_served():
    # Modbus over serial line V1.02, 2.5.1.1 and docs/modbus.md: frames are
    # separated by t3.5; a frame for another unit is only listened to (no
    # answer, no error).  The server sees a frame's end only from a poll
    # inside the window between that t3.5 and the next frame's first
    # character: 95 us at 115200 baud against the idle loop's 250 us polls,
    # and none at all while a control task runs (its polls only read).  When
    # it missed the window, the other unit's frame and the request for this
    # unit were taken for one frame with a gap inside and both dropped: the
    # master (pymodbus sends t3.5 after the last frame on the bus) got no
    # answer.
    from comms.modbus_rtu import ModbusRTU
    other = with_crc(bytes((2, 3, 0, 0, 0, 1)))
    reply_of_other = with_crc(bytes((2, 3, 2, 0x12, 0x34)))
    # 115200 baud, the idle loop's 250 us polls falling just outside the window.
    r = ModbusRig()
    r.port.baud = 115200
    s = ModbusRTU(r.port, r.regs, r.clock, params=r.params)
    r.server = s
    r.idle(10)
    for frame in (other, reply_of_other):
        r.port.feed(frame)
        s.poll()
        r.clock.advance_us(130)
        for _ in range(7):           # 130, 380 ... 1630: within t3.5 (1750 us)
            s.poll()
            r.clock.advance_us(250)
        # 1880 us: the next frame's first character came at 1845 (t3.5 and
        # one character), this is the first poll after the window.
        r.port.feed(READ_10)
        s.poll()
        for _ in range(10):
            r.clock.advance_us(250)
            s.poll()
        resp = r.port.take()
        assert crc_ok(resp) and resp[:3] == bytes((1, 3, 20)), (frame, resp)
    assert s.framing_errors == 0 and s.crc_errors == 0 and s.replies == 2
    # 9600 baud: the other unit's frame ends while a task runs; the task's
    # polls read the request that follows, the loop's poll comes after it.
    r = ModbusRig()
    s = r.server
    r.port.feed(other)
    s.poll()
    for _ in range(8):               # 4 ms of task, its service calls every 0.5 ms
        r.clock.advance_us(500)
        s.poll_in_task()
    r.port.feed(READ_10)             # t3.5 (3646 us) and a character after it
    s.poll_in_task()
    r.clock.advance_us(2000)
    s.poll_in_task()
    r.idle(6)
    resp = r.port.take()
    assert crc_ok(resp) and resp[:3] == bytes((1, 3, 20)), resp
    assert s.framing_errors == 0 and s.crc_errors == 0
    # A request for this unit with a gap above t1.5 inside is still dropped.
    r.port.feed(READ_10[:4])
    s.poll()
    r.clock.advance_us(3000)
    s.poll()
    r.clock.advance_us(600)
    r.port.feed(READ_10[4:])
    s.poll()
    r.idle(6)
    assert r.port.take() == b"" and s.framing_errors == 1


def test_log_and_auth_blocks_readable():
    r = _running_rig()
    head = r.read(A_LOGHEAD, 4)
    assert head[0] == len(r.log) and head[1] == 64
    from comms.registers import A_LOG
    rec = r.read(A_LOG, 10)
    seq, ts, kind, a, b = r.log.get(0)
    assert u32(rec, 0) == seq and u32(rec, 2) == ts and rec[4] == kind
    # Every record, every field (a and b are signed 32-bit, reserved reads 0).
    n = len(r.log)
    assert n > 3
    recs = r.read(A_LOG, 10 * n if n < 12 else 120)
    for i in range(len(recs) // 10):
        seq, ts, kind, a, b = r.log.get(i)
        f = recs[10 * i:10 * i + 10]
        assert u32(f, 0) == seq and u32(f, 2) == ts and f[4] == kind and f[5] == 0
        assert u32(f, 6) == a & 0xFFFFFFFF and u32(f, 8) == b & 0xFFFFFFFF, i
    # A read may start and end inside a record; records past the last read 0.
    assert n <= 11            # the rig's boot: all its records and one past fit a read
    whole = r.read(A_LOG, 10 * n + 10)
    assert whole[10 * n:] == [0] * 10
    for start in range(0, 10 * n + 10, 3):
        for count in (1, 2, 7, 13):
            if start + count <= 10 * n + 10:
                assert r.read(A_LOG + start, count) == whole[start:start + count], (start, count)
    assert r.read(A_TEMPS, 1)[0] == 4


def test_write_to_read_only_block_is_refused():
    r = ModbusRig()
    r.unlock()
    assert exception_code(r.write1(A_CELLS, 1), 6) == 2
    assert exception_code(r.write1(A_MON, 1), 6) == 2


def test_identity_needs_factory_role():
    r = ModbusRig()
    r.unlock()
    assert exception_code(r.write_n(A_INFO + 0x18, ascii_regs("X", 8)), 16) == 1
    r.unlock(b"factory1")
    assert crc_ok(r.write_n(A_INFO + 0x18, ascii_regs("SN-42", 8)))
    assert r.info.get("serial") == "SN-42"


def test_identity_text_that_is_not_printable_ascii_is_refused_and_changes_nothing():
    # A refused write answers an exception and changes nothing (the names
    # block refuses non-printable text the same way).  Bytes that are not
    # text were stored in the serial field: every FC43 identification
    # request then failed with exception 04 (and with the board's key/value
    # store the write itself did, after the field had changed in RAM).
    from bms.kvstore import KvStore
    from fakeflash import FakeFlash
    from comms.regs.identity import DeviceInfo
    for store in (None, KvStore(FakeFlash())):
        r = ModbusRig()
        r.info = DeviceInfo(serial="SN0001", store=store)
        r.regs.info = r.info
        r.unlock(b"factory1")
        resp = r.write_n(A_INFO + 0x18, [0xC3FF, 0x4142])
        assert exception_code(resp, 16) == 3, resp
        assert r.info.get("serial") == "SN0001"
        resp = r.request(bytes((43, 14, 3, 0x80)))
        assert crc_ok(resp) and resp[1] == 43, resp
        assert r.server.internal_errors == 0


def test_read_request_allocates_nothing():
    r = _running_rig(cells=32)
    r.unlock()
    reqs = [with_crc(bytes((1, fc, a >> 8, a & 0xFF, 0, n)))
            for fc, a, n in ((3, A_MON, MON_SIZE), (4, A_CELLS, 32), (3, A_PARAMS, P.N_PARAMS),
                             (3, A_INFO, 16), (3, A_TEMPS, 49), (3, A_LOGHEAD, 4),
                             (4, A_STATUS, STATUS_SIZE))]
    for q in reqs:  # warm up: the first reply of each length caches its view
        r.send_raw(q)
    for q in reqs:
        r.port.feed(q)
        micropython.heap_lock()
        try:
            for _ in range(8):
                r.clock.advance(1)
                r.server.poll()
        finally:
            micropython.heap_unlock()
        resp = r.port.take()
        assert crc_ok(resp) and resp[1] == q[1], resp
    assert r.server.internal_errors == 0


def test_ticks_wrap_during_frame():
    r = ModbusRig()
    from modbus_rig import PERIOD
    r.clock.us = PERIOD * 3 - 2000  # 2 ms before a wrap of the us ticks
    r.idle(5)
    r.port.feed(READ_10[:4])
    r.server.poll()
    r.clock.advance_us(1000)
    r.server.poll()
    r.port.feed(READ_10[4:])
    r.server.poll()
    r.idle(6)
    assert len(r.port.take()) == 25
    assert ref_crc(b"") == 0xFFFF


class _LaterPort:
    """FakePort plus Rs485.later: the test fires the armed call itself."""

    def __init__(self, port):
        self.p = port
        self.armed = []      # (us, fn)

    def later(self, us, fn):
        self.armed.append((us, fn))
        return True

    def __getattr__(self, name):
        return getattr(self.p, name)


def _later_rig():
    r = ModbusRig()
    lp = _LaterPort(r.port)
    from comms.modbus_rtu import ModbusRTU
    r.server = ModbusRTU(lp, r.regs, r.clock, params=r.params)
    r.idle(10)
    return r, lp


def test_a_read_asks_the_port_for_a_poll_at_the_end_of_its_t35():
    # The reply built ahead goes out from the timed poll (a soft timer on a
    # board, which runs inside a task too), never before t3.5 of silence.
    r, lp = _later_rig()
    r.port.feed(READ_10)
    r.server.poll()
    us, fn = lp.armed[-1]
    assert 3650 <= us <= 3650 + 100 and r.port.txn == 0
    r.clock.advance_us(3600)         # fired early (a coarse timer): nothing yet, armed again
    fn()
    assert r.port.txn == 0 and lp.armed[-1][0] <= 100
    r.clock.advance_us(lp.armed[-1][0])
    lp.armed[-1][1]()
    reply = r.port.take()
    assert crc_ok(reply) and reply[:3] == bytes((1, 3, 20)) and r.server.replies == 1
    n = len(lp.armed)
    r.idle(10)                       # the loop's polls send nothing more
    assert r.port.txn == 0 and r.server.replies == 1 and len(lp.armed) == n


def test_the_timed_poll_inside_the_loops_poll_is_left_to_that_poll():
    # A soft timer callback runs between two bytecodes, so it can land inside
    # the loop's own poll(): it must not run a second poll inside the first
    # (frame state half updated); that poll makes one more pass instead.
    r, lp = _later_rig()
    r.port.feed(READ_10)
    r.server.poll()
    fn = lp.armed[-1][1]
    n = len(lp.armed)
    r.clock.advance_us(3000)
    inner = r.server._poll
    hits = []

    def landing():                   # the loop's poll, with the timer firing inside it
        if not hits:
            r.clock.advance_us(700)  # t3.5 is over while this poll runs
            fn()
            hits.append(r.port.txn)
        return inner()
    r.server._poll = landing
    r.server.poll()
    r.server._poll = inner
    assert hits == [0]               # nothing sent from inside
    assert crc_ok(r.port.take()) and r.server.replies == 1   # the extra pass sent it
    assert len(lp.armed) == n        # no timer storm
    fn()                             # a late fire after the answer: nothing
    assert r.port.txn == 0 and r.server.replies == 1


def test_the_timed_poll_sends_nothing_when_the_frame_went_on():
    # Eight bytes that looked like a read, then more: one longer frame, no
    # reply to the first eight (the t1.5/t3.5 rules decide, as without a timer).
    r, lp = _later_rig()
    r.port.feed(READ_10)
    r.server.poll()
    fn = lp.armed[-1][1]
    r.clock.advance_us(500)
    r.port.feed(b"\x00\x01")
    r.clock.advance_us(3200)
    fn()                             # reads the two bytes: the frame is not over
    assert r.port.txn == 0
    r.idle(10)
    assert r.port.txn == 0 and r.server.replies == 0


def test_the_timed_poll_only_sends_it_never_builds_or_writes():
    # It runs inside a control task: building a reply there (up to 13 ms for
    # the monitor block on an RP2040) or executing a write is the loop's job.
    r, lp = _later_rig()
    r.server._timed = True           # what _on_due sets around its poll
    r.port.feed(READ_10)
    r.server.poll()
    assert r.server._early == -1 and lp.armed == []          # read, not built
    r.server._timed = False
    r.idle(5)                        # the loop's poll answers at the frame's end
    assert crc_ok(r.port.take()) and r.server.replies == 1
    handled = r.server.handled
    r.server._timed = True
    r.port.feed(with_crc(bytes((1, 6)) + bytes((0x10, 0x00, 0x00, 0x01))))
    r.server.poll()
    r.clock.advance_us(5000)
    r.server.poll()                  # its t3.5 is over: still nothing from here
    assert r.server.handled == handled and r.port.txn == 0
    r.server._timed = False
    r.server.poll()                  # the loop's poll handles and answers it
    assert r.server.handled == handled + 1 and crc_ok(r.port.take())


def test_a_reply_built_after_its_t35_goes_out_in_the_same_poll():
    # Bytes read inside the fast task, the reply built by the loop's poll
    # after it: on an RP2040 the build can end past the frame's t3.5, and
    # the reply then leaves at once, not at a timer or the next poll.
    r, lp = _later_rig()
    r.port.feed(READ_10)
    r.server.poll_in_task()
    r.clock.advance_us(2500)                    # the rest of the fast task
    plain = r.server._reply

    def slow_build(n, broadcast):
        r.clock.advance_us(1500)                # up to ~4 ms on the chip (monitor block)
        return plain(n, broadcast)
    r.server._reply = slow_build
    n = len(lp.armed)
    assert r.server.poll()
    assert crc_ok(r.port.take()) and r.server.replies == 1
    # ... without arming the port's timer for it (on an RP2040 arming one
    # cost 0.3-0.4 ms before the first byte of a reply already late).
    assert len(lp.armed) == n
    # Bytes that came during the build: the frame went on, nothing sent.
    r.idle(10)
    r.port.feed(READ_10)
    r.server.poll_in_task()
    r.clock.advance_us(2500)

    def build_while_more_comes(n, broadcast):
        r.clock.advance_us(1500)
        r.port.feed(b"\x55")
        return plain(n, broadcast)
    r.server._reply = build_while_more_comes
    assert not r.server.poll() and r.port.txn == 0
    r.server._reply = plain
    r.idle(10)
    assert r.port.txn == 0 and r.server.replies == 1


def _fast_task_with_request(frame):
    """The fast task once, ``frame`` ending right after its current read;
    the looks it gave the port, each ``level + 1`` (bms.core LOOK_*: 1 read
    only, 2 a small read's build, 3 any read's) plus 4 when a read's reply
    still waits to be built after it.  Mapped to the server as app.py does."""
    import drv_helpers
    r = _running_rig()
    # Events in a preallocated buffer (the task runs heap-locked; a closure
    # over more than four names allocates its call on MicroPython).
    ev = bytearray(16)
    n = [0]
    plain_in_task = r.server.poll_in_task

    def look(build=0):
        got = plain_in_task(build == LOOK_BUILD, build == LOOK_SMALL)
        ev[n[0]] = build + 1 + (4 if r.server.build_pending() else 0)
        n[0] += 1
        return got
    r.bms.port_service = look
    board = r.bms.board
    plain = board.read_current
    fed = [frame, 0]                       # (a closure over few names: see above)

    def current_then_request(m, now):
        plain(m, now)
        if not fed[1]:
            r.port.feed(fed[0])            # the request ends right after the current read
            fed[1] = 1

    r.idle(60)
    board.read_current = current_then_request
    r.bms._rd_current = current_then_request
    r.clock.advance(50)
    now = r.clock.ticks_ms()
    drv_helpers.heap_locked(lambda: r.bms._fast(now))
    assert fed[1] and r.server.rx_len == 8
    return r, list(ev[:n[0]])


def test_a_request_ending_in_the_fast_task_is_read_there_and_built_at_its_end():
    # The app gives the PC port a look between the fast task's steps
    # (bms.port_service = the server's poll_in_task): a request that ends
    # while the task runs is read inside it, so its t3.5 counts from there,
    # not from the end of the task.  A large read (the monitor block: up to
    # 4 ms to build on an RP2040) is built only at the task's last look, once
    # the relays have been switched (docs/safety.md); nothing is allocated.
    big = with_crc(bytes((1, 3, A_MON >> 8, A_MON & 0xFF, 0, MON_SIZE)))
    r, got = _fast_task_with_request(big)
    # Read at the first look and left unbuilt by every look but the last,
    # which is the task's last step (after the relays' step and the log
    # flush, core._fast) and builds it.
    assert len(got) >= 3 and got[-1] == 3, got
    assert all(e == 2 + 4 for e in got[:-1]), got
    assert not r.server.build_pending() and r.server._early > 0 and r.port.txn == 0
    r.clock.advance_us(3700)                # t3.5 from the read inside the task
    r.server.poll()
    assert crc_ok(r.port.take()) and r.server.replies >= 1


def test_a_small_read_ending_in_the_fast_task_is_built_at_the_next_look():
    # Ten registers (0.4-1 ms to build on an RP2040, emulated): built at the
    # look that read them, so the timed poll sends the reply at its t3.5
    # inside the task; built at the task's last look it went out 1-2 ms late.
    r, got = _fast_task_with_request(READ_10)
    assert len(got) >= 3 and got[0] == 2, got     # read and built at the first look
    assert r.server._early == 25 and r.port.txn == 0
    r.clock.advance_us(3700)
    r.server.poll()
    assert crc_ok(r.port.take()) and r.server.replies >= 1


def test_a_request_read_late_is_timed_from_its_arrival():
    # A port that knows how long before a read its bytes had arrived
    # (Rs485.rx_age, its arrival watch): a request whose last bytes were read
    # late inside a task has its t3.5 counted from their arrival, and the
    # poll that builds its reply past that t3.5 sends it at once.
    r, lp = _later_rig()
    r.port.rx_age = 0
    from comms.modbus_rtu import ModbusRTU
    r.server = ModbusRTU(lp, r.regs, r.clock, params=r.params)
    r.idle(10)
    r.port.feed(READ_10)
    r.port.rx_age = 3000                 # arrived 3 ms before this read
    r.server.poll_in_task()              # a look that only reads
    r.port.rx_age = 0
    r.clock.advance_us(700)              # 3.7 ms after the arrival > t3.5
    assert r.server.poll_in_task(True)   # the next look builds and sends it
    assert crc_ok(r.port.take()) and r.server.replies == 1
    # Read and built by the same poll, t3.5 after the arrival already over.
    r.idle(10)
    r.port.feed(READ_10)
    r.port.rx_age = 3700
    assert r.server.poll()
    r.port.rx_age = 0
    assert crc_ok(r.port.take()) and r.server.replies == 2
    # An age that leaves the silence short of t3.5: nothing before it.
    r.idle(10)
    r.port.feed(READ_10)
    r.port.rx_age = 2000
    r.server.poll()
    r.port.rx_age = 0
    r.clock.advance_us(1500)
    r.server.poll()
    assert r.port.txn == 0
    r.clock.advance_us(200)
    r.server.poll()
    assert crc_ok(r.port.take()) and r.server.replies == 3


def test_the_arrival_watch_runs_from_a_frames_first_bytes_until_its_reply_is_built():
    # Rs485's arrival watch looks at the UART every 250 us from a hard
    # timer: 13 % of an RP2040's time (emulated) if it ran all the time.  The
    # server runs it from a frame's first bytes until a read's reply is
    # built (or the frame ends), and again if more bytes come.
    r, lp = _later_rig()
    r.port.rx_age = 0
    calls = []
    r.port.rx_watch = calls.append
    from comms.modbus_rtu import ModbusRTU
    r.server = ModbusRTU(lp, r.regs, r.clock, params=r.params)
    r.idle(10)
    calls[:] = []
    r.port.feed(READ_10[:3])
    r.server.poll()
    assert calls == [True]
    r.clock.advance_us(1000)
    r.port.feed(READ_10[3:])
    r.server.poll()                      # built: nothing left to date
    assert calls == [True, False] and r.server._early == 25
    r.idle(10)
    assert crc_ok(r.port.take()) and calls == [True, False]
    # A write: no build ahead, the watch runs to the frame's end.
    frame = with_crc(bytes((1, 6, 0x10, 0x00, 0x00, 0x01)))
    r.port.feed(frame)
    r.server.poll()
    assert calls[-1] is True
    r.idle(10)
    assert calls == [True, False, True, False]


def test_monitor_and_status_windows_match_the_whole_block():
    # Any window of a row table (a read may start or end inside a 32-bit
    # row) holds the same words as the whole block read at once.
    r = _running_rig(mv=3300)
    r.board.current_ma = -12345          # a negative s32 row
    r.run(200)
    for base, size in ((A_MON, MON_SIZE), (A_STATUS, STATUS_SIZE)):
        whole = r.read(base, size)
        for start in range(size):
            for count in (1, 2, 3, 7):
                if start + count <= size:
                    assert r.read(base + start, count) == whole[start:start + count], \
                        (hex(base), start, count)


def test_balance_words_follow_the_balancer():
    r = _running_rig(mv=3300)
    flags = r.bms.balancer.flags
    m = r.read(A_MON, MON_SIZE)
    assert [m[monitor_address("balance_%d" % k) - A_MON] for k in range(16)] == [0] * 16
    flags[0] = 1
    flags[13] = 1
    flags[15] = 1
    r.bms.balancer.count = 3
    m = r.read(A_MON, MON_SIZE)
    assert m[monitor_address("balance_0") - A_MON] == (1 << 0) | (1 << 13) | (1 << 15)
    assert m[monitor_address("balance_1") - A_MON] == 0


def test_a_long_task_may_build_a_reply_a_task_poll_read():
    # The fast task reads between its steps and never builds (its budget is
    # the protection's); a long task with room builds the reply at its next
    # service call, and the timed poll sends it at the frame's t3.5 while
    # the task still runs.  A write is still left to the loop.
    r, lp = _later_rig()
    r.port.feed(READ_10)
    r.server.poll_in_task()                       # the fast task's read
    assert r.server._early == -1 and lp.armed == [] and r.server.build_pending()
    r.clock.advance_us(1000)
    r.server.poll_in_task(build=True)             # a long task, room before the tick
    assert r.server._early > 0 and not r.server.build_pending()
    us, fn = lp.armed[-1]
    assert us <= 3650 - 1000 + 100 and r.port.txn == 0
    r.clock.advance_us(us)
    fn()
    assert crc_ok(r.port.take()) and r.server.replies == 1
    handled = r.server.handled
    r.port.feed(with_crc(bytes((1, 6)) + bytes((0x10, 0x00, 0x00, 0x01))))
    r.server.poll_in_task(build=True)
    r.clock.advance_us(5000)
    r.server.poll_in_task(build=True)             # its t3.5 is over: not from a task
    assert r.server.handled == handled and r.port.txn == 0
    r.server.poll()
    assert r.server.handled == handled + 1 and crc_ok(r.port.take())


class _LeaseServices:
    """The services' lease entry as the lease block sees it: every code refused."""

    def __init__(self):
        self.lease = True
        self.codes = []

    def enter_lease_code(self, code):
        self.codes.append(code)
        return False, "bad code"


def test_a_lease_code_of_non_ascii_bytes_is_refused_with_exception_03():
    # comms/regs/lease.py: "A refused code answers exception 03 with the
    # reason in the last-error registers."  Bytes that are not text (a
    # noisy line, a fuzzer) raised UnicodeError in the block: exception 04
    # (server failure) and an internal error counted instead.
    from comms.registers import A_LEASE
    from comms.regs.lease import L_CODE
    r = _running_rig()
    r.regs.services = _LeaseServices()
    resp = r.write_n(A_LEASE + L_CODE, [0xC3FF, 0xFE80, 0x4142])
    assert exception_code(resp, 16) == 3, resp
    assert r.server.internal_errors == 0
    assert r.regs.err_code == 3
    resp = r.write_n(A_LEASE + L_CODE, ascii_regs("ABCDE-FGHIJ-KLMNO", 10))
    assert exception_code(resp, 16) == 3
    assert r.regs.services.codes == ["ABCDE-FGHIJ-KLMNO"]
