"""BLE framing: chunking across the ATT MTU, reassembly, bad frames, timeouts,
the Modbus PDU bridge, the password gate, ChangeBlueName, live notifications.
The central's side is ``ble_peer`` (its own CRC, chunker and reassembler).
"""
from bms.auth import CH_BLE, CH_MODBUS
from bms.params import P_BAL_DIFF
from comms import ble_link as BL
from comms.modbus_pdu import ModbusPdu
from comms.registers import A_AUTH, A_CELLS, A_MON, A_PARAMS, RegisterMap
from comms.regs.monitor import SIZE as MON_SIZE
from harness import Rig
from ble_peer import answer, chunks, drain, make_auth, message, reassemble


class Setup:
    def __init__(self, mtu=23, store=None):
        self.rig = Rig()
        self.rig.run(1000)
        self.clock = self.rig.clock
        self.store = store if store is not None else {}
        self.auth = make_auth(self.clock, self.store)
        # Bluetooth writes need a password other than the published default.
        self.auth.unlock(CH_MODBUS, b"123456")
        self.auth.change(CH_MODBUS, 1, b"secret77")
        self.auth.lock(CH_MODBUS)
        self.regs = RegisterMap(self.rig.bms, self.auth, channel=CH_BLE)
        self.link = BL.BleLink(ModbusPdu(self.regs, self.clock), self.clock,
                               live=BL.monitor_live(self.regs), auth=self.auth,
                               store=self.store, mtu=mtu)
        self.mtu = mtu

    def send(self, seq, typ, payload):
        for c in chunks(seq, message(typ, payload), self.mtu):
            self.link.on_write(c)

    def ask(self, seq, typ, payload):
        self.send(seq, typ, payload)
        return reassemble(drain(self.link, self.mtu))

    def modbus(self, seq, pdu):
        msgs = self.ask(seq, BL.T_MODBUS, pdu)
        assert len(msgs) == 1 and msgs[0][0] == seq and msgs[0][1] == 0x81
        return msgs[0][2]

    def unlock(self, seq, pw=b"secret77"):
        """Challenge-response over the link (no password on the air)."""
        from comms.regs.auth import AU_CHAL_REQ, AU_CHALLENGE, AU_RESPONSE, CHAL_REGS
        self.modbus(seq, write_multi_pdu(A_AUTH + AU_CHAL_REQ, [1]))
        r = self.modbus(seq + 1, read_pdu(3, A_AUTH + AU_CHALLENGE, CHAL_REGS))
        return self.modbus(seq + 2, write_multi_pdu(A_AUTH + AU_RESPONSE, answer(r[2:], pw)))


def read_pdu(fc, addr, count):
    return bytes([fc, addr >> 8, addr & 0xFF, count >> 8, count & 0xFF])


def write_multi_pdu(addr, words):
    out = bytearray([16, addr >> 8, addr & 0xFF, 0, len(words), 2 * len(words)])
    for w in words:
        out += bytes([(w >> 8) & 0xFF, w & 0xFF])
    return bytes(out)


def ascii_words(s, n):
    b = s + b"\x00" * (2 * n - len(s))
    return [(b[2 * i] << 8) | b[2 * i + 1] for i in range(n)]


def test_chunk_size_follows_mtu():
    assert BL.chunk_size(23) == 18
    assert BL.chunk_size(247) == 242
    assert BL.chunk_size(5) == 18          # below the ATT minimum: the minimum
    assert BL.chunk_size(1000) == 512      # above the ATT maximum: the maximum


def test_small_read_one_chunk():
    s = Setup(mtu=247)
    pdu = s.modbus(7, read_pdu(4, A_CELLS, 3))
    assert pdu == bytes([4, 6, 0x0C, 0xE4, 0x0C, 0xE4, 0x0C, 0xE4])   # 3 x 3300 mV


def test_large_response_chunked_across_mtu_23():
    s = Setup(mtu=23)
    s.send(200, BL.T_MODBUS, read_pdu(3, A_CELLS, 125))
    cs = drain(s.link, 23)
    # PDU 2 + 250 bytes -> message 3 + 252 + 2 = 257 bytes -> 15 chunks of <= 18 bytes.
    assert len(cs) == 15
    assert all(len(c) <= 20 for c in cs)
    assert cs[0][1] == 0x80 and cs[-1][1] == 0x40 | 14
    assert [c[1] & 0x3F for c in cs] == list(range(15))
    (seq, typ, pdu), = reassemble(cs)
    assert (seq, typ, pdu[0], pdu[1]) == (200, 0x81, 3, 250)
    assert pdu[2:4] == b"\x0c\xe4" and pdu[2 + 2 * 16:4 + 2 * 16] == b"\x00\x00"


def test_request_split_across_chunks_and_password_gate():
    s = Setup(mtu=23)
    w = write_multi_pdu(A_PARAMS + P_BAL_DIFF, [15])
    assert s.modbus(1, w) == bytes([16 | 0x80, 1])              # locked: illegal function
    unlock = write_multi_pdu(A_AUTH, ascii_words(b"secret77", 8))  # 23-byte PDU: 2 chunks
    assert len(chunks(2, message(1, unlock), 23)) == 2
    assert s.modbus(2, unlock) == bytes([16 | 0x80, 3])          # no plaintext over the air
    assert s.unlock(20)[0] == 16                                 # challenge-response
    assert s.modbus(3, w) == w[:5]
    assert s.rig.params[P_BAL_DIFF] == 15
    assert s.auth.role(CH_MODBUS) == 0                           # RS485 stays locked
    s.link.reset()                                               # disconnect locks BLE
    assert s.modbus(4, write_multi_pdu(A_PARAMS + P_BAL_DIFF, [10])) == bytes([0x90, 1])


def test_bad_crc_answers_error_and_recovers():
    s = Setup()
    m = bytearray(message(BL.T_MODBUS, read_pdu(4, A_CELLS, 1)))
    m[-1] ^= 0x55
    for c in chunks(9, bytes(m)):
        s.link.on_write(c)
    assert reassemble(drain(s.link)) == [(9, 0xFF, bytes([BL.ERR_CRC]))]
    assert s.link.crc_errors == 1
    assert s.modbus(10, read_pdu(4, A_CELLS, 1)) == b"\x04\x02\x0c\xe4"


def test_index_gap_and_stray_chunks():
    s = Setup()
    cs = chunks(3, message(BL.T_MODBUS, write_multi_pdu(A_AUTH, ascii_words(b"123456", 8))))
    assert len(cs) == 2
    s.link.on_write(cs[0])
    s.link.on_write(bytes([3, 0x40 | 2]) + cs[1][2:])         # index 2 instead of 1
    assert reassemble(drain(s.link)) == [(3, 0xFF, bytes([BL.ERR_SEQUENCE]))]
    s.link.on_write(cs[1])                                     # continuation without START
    assert drain(s.link) == []
    s.link.on_write(b"\x01")                                   # shorter than a header
    s.link.on_write(bytes([4, 0x80 | 5]) + cs[0][2:])          # START with index 5
    assert reassemble(drain(s.link)) == [(4, 0xFF, bytes([BL.ERR_SEQUENCE]))]
    assert s.link.bad_frames == 4
    cs2 = chunks(5, message(BL.T_MODBUS, read_pdu(4, A_CELLS, 1)))
    s.link.on_write(cs[0])                                     # abandoned: a new START wins
    for c in cs2:
        s.link.on_write(c)
    assert reassemble(drain(s.link)) == [(5, 0x81, b"\x04\x02\x0c\xe4")]


def test_length_errors():
    s = Setup(mtu=247)
    # Declared payload 300 > MAX_PAYLOAD.
    s.link.on_write(bytes([1, 0xC0, 1, 0x2C, 0x01]) + bytes(20))
    assert reassemble(drain(s.link, 247)) == [(1, 0xFF, bytes([BL.ERR_LENGTH]))]
    # END chunk although bytes are missing.
    m = message(BL.T_MODBUS, read_pdu(4, A_CELLS, 1))
    s.link.on_write(bytes([2, 0xC0]) + m[:-1])
    assert reassemble(drain(s.link, 247)) == [(2, 0xFF, bytes([BL.ERR_LENGTH]))]
    # More bytes than declared.
    s.link.on_write(bytes([3, 0xC0]) + m + b"\x00")
    assert reassemble(drain(s.link, 247)) == [(3, 0xFF, bytes([BL.ERR_LENGTH]))]
    # Unknown type with a good CRC.
    assert s.ask(4, 0x33, b"x") == [(4, 0xFF, bytes([BL.ERR_TYPE]))]
    # A Modbus PDU longer than Modbus allows (253 bytes) but within a message,
    # and an empty one: a length error, not silence.
    for seq, n in ((5, 254), (6, BL.MAX_PAYLOAD), (7, 0)):
        pdu = bytes([3]) + bytes(n - 1) if n else b""
        assert s.ask(seq, BL.T_MODBUS, pdu) == [(seq, 0xFF, bytes([BL.ERR_LENGTH]))], n
    assert s.ask(8, BL.T_MODBUS, read_pdu(4, A_CELLS, 1))[0][1] == 0x81   # still serving


def test_incomplete_message_times_out():
    s = Setup()
    cs = chunks(6, message(BL.T_MODBUS, write_multi_pdu(A_AUTH, ascii_words(b"123456", 8))))
    s.link.on_write(cs[0])
    s.clock.advance(1900)
    s.link.poll()
    assert s.link.timeouts == 0
    s.clock.advance(200)
    s.link.poll()
    assert s.link.timeouts == 1
    s.link.on_write(cs[1])                                     # too late: dropped
    assert drain(s.link) == []
    assert s.auth.role(CH_BLE) == 0


def test_requests_wait_for_the_line_and_busy():
    s = Setup()
    s.send(1, BL.T_MODBUS, read_pdu(4, A_CELLS, 20))       # a long answer, not drained yet
    s.send(2, BL.T_MODBUS, read_pdu(4, A_CELLS, 1))        # complete: waits
    s.send(3, BL.T_MODBUS, read_pdu(4, A_CELLS, 1))        # no room: busy
    msgs = reassemble(drain(s.link))
    assert [(m[0], m[1]) for m in msgs] == [(1, 0x81), (3, 0xFF), (2, 0x81)]
    assert msgs[1][2] == bytes([BL.ERR_BUSY]) and s.link.busy == 1


def test_change_blue_name():
    store = {}
    s = Setup(store=store)
    assert s.link.name == b"MPY-BMS"
    assert s.ask(1, BL.T_SET_NAME, b"Shed-48V") == [(1, 0x82, bytes([BL.NAME_LOCKED]))]
    s.unlock(20)
    assert s.ask(3, BL.T_SET_NAME, b"") == [(3, 0x82, bytes([BL.NAME_INVALID]))]
    assert s.ask(4, BL.T_SET_NAME, b"bad\x07name") == [(4, 0x82, bytes([BL.NAME_INVALID]))]
    assert s.ask(5, BL.T_SET_NAME, b"x" * 21) == [(5, 0x82, bytes([BL.NAME_INVALID]))]
    assert not s.link.name_changed
    assert s.ask(6, BL.T_SET_NAME, b"Shed-48V") == [(6, 0x82, bytes([BL.NAME_OK]))]
    assert s.link.name == b"Shed-48V" and s.link.name_changed
    again = BL.BleLink(None, s.clock, store=store)            # after a reboot
    assert again.name == b"Shed-48V"


def test_live_notifications():
    s = Setup(mtu=185)
    assert s.ask(1, BL.T_SUBSCRIBE, b"\xe8\x03") == [(1, 0x83, b"\x00\xe8\x03")]
    got = []
    for _ in range(300):                      # 3 s in 10 ms steps
        s.rig.clock.advance(10)
        s.rig.bms.step()
        s.link.poll()
        got += drain(s.link, 185)
    msgs = reassemble(got)
    assert len(msgs) == 3 and all(m[1] == 0x90 for m in msgs)
    p = msgs[-1][2]
    assert p[0] == A_MON >> 8 and p[1] == A_MON & 0xFF and p[2] == MON_SIZE
    ref = bytearray(2 * MON_SIZE)
    s.regs.read(A_MON, MON_SIZE, ref, 0)
    assert p[3:] == bytes(ref)
    assert s.ask(2, BL.T_SUBSCRIBE, b"\x0a\x00") == [(2, 0x83, b"\x00\xfa\x00")]  # 10 -> 250 ms
    assert s.ask(3, BL.T_SUBSCRIBE, b"\x00\x00") == [(3, 0x83, b"\x00\x00\x00")]
    s.rig.clock.advance(5000)
    s.link.poll()
    assert drain(s.link, 185) == []
    assert s.ask(4, BL.T_SUBSCRIBE, b"\x01") == [(4, 0x83, b"\x01\x00\x00")]  # malformed


def test_garbage_never_raises():
    s = Setup()
    seed = 12345
    for _ in range(400):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        n = seed % 22
        data = bytearray(n)
        for i in range(n):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            data[i] = seed >> 16 & 0xFF
        s.link.on_write(bytes(data))
        drain(s.link)
    assert s.link.internal_errors == 0
    assert s.modbus(99, read_pdu(4, A_CELLS, 1)) == b"\x04\x02\x0c\xe4"


def test_steady_state_allocates_nothing():
    try:
        import micropython
        lock = micropython.heap_lock
        unlock = micropython.heap_unlock
    except (ImportError, AttributeError):
        return
    s = Setup(mtu=185)
    s.ask(1, BL.T_SUBSCRIBE, b"\xe8\x03")
    req = chunks(2, message(BL.T_MODBUS, read_pdu(4, A_CELLS, 16)), 185)[0]
    buf = bytearray(182)
    s.link.on_write(req)                      # warm-up: caches the reply view
    while s.link.next_chunk(buf):
        pass
    s.clock.advance(1000)
    lock()
    try:
        s.link.poll()                         # a live notification
        while s.link.next_chunk(buf):
            pass
        s.link.on_write(req)                  # a Modbus read
        n = 0
        while s.link.next_chunk(buf):
            n += 1
    finally:
        unlock()
    assert n == 1 and s.link.notifications == 1


def test_a_reconnect_drops_the_outstanding_challenge():
    """docs/ble_protocol.md, Security: the session ends with every connect and
    disconnect, and so does a challenge handed out on it.  An answer that a
    listener recorded from a link that dropped before the BMS got it cannot
    unlock the next connection."""
    from comms.regs.auth import AU_CHAL_REQ, AU_CHALLENGE, AU_RESPONSE, AU_ROLE, CHAL_REGS
    s = Setup(mtu=247)
    s.modbus(1, write_multi_pdu(A_AUTH + AU_CHAL_REQ, [1]))
    r = s.modbus(2, read_pdu(3, A_AUTH + AU_CHALLENGE, CHAL_REGS))
    recorded = answer(r[2:], b"secret77")       # on the air, never delivered
    s.link.reset()                              # the phone's link drops
    s.link.reset()                              # another central connects
    resp = s.modbus(3, write_multi_pdu(A_AUTH + AU_RESPONSE, recorded))
    assert resp == bytes([16 | 0x80, 3])        # no challenge outstanding
    assert s.modbus(4, read_pdu(3, A_AUTH + AU_ROLE, 1)) == b"\x03\x02\x00\x00"
    assert s.auth.role(CH_BLE) == 0
    assert s.unlock(10)[0] == 16                # a fresh challenge still works


def test_a_request_that_fails_after_waiting_for_the_line_never_raises():
    """comms/ble_link.py: the glue sends what ``next_chunk`` returns from its
    transmit loop; a request that waited for the line is served from there
    and, like one served from ``on_write``, must not raise into the radio
    task (a rename whose store write fails: a full or failing flash)."""
    class FailingStore:
        def __init__(self):
            self.d = {}

        def get(self, k, default=None):
            return self.d.get(k, default)

        def __setitem__(self, k, v):
            if k == BL.NAME_KEY:
                raise OSError(28)       # ENOSPC
            self.d[k] = v
    s = Setup(mtu=23, store=FailingStore())
    s.unlock(20)
    s.send(1, BL.T_MODBUS, read_pdu(4, A_CELLS, 20))       # a long answer, not drained yet
    s.send(2, BL.T_SET_NAME, b"Shed-48V")                  # complete: waits for the line
    got = drain(s.link)                                    # raised here before
    assert [(m[0], m[1]) for m in reassemble(got)] == [(1, 0x81)]
    assert s.link.internal_errors == 1
    assert s.modbus(3, read_pdu(4, A_CELLS, 1)) == b"\x04\x02\x0c\xe4"   # still serving
