"""Password roles, hashed storage, back-off, expiry; and their use over Modbus."""
from bms import auth as A
from bms import params as P
from comms.registers import A_AUTH, A_PARAMS
from comms.regs.auth import AU_LOCKOUT, AU_NEW_USER, AU_ROLE
from modbus_rig import ModbusRig, UsClock, ascii_regs, crc_ok, exception_code


def _auth(store=None, clock=None, **kw):
    clock = clock or UsClock()
    return A.Auth(clock, {} if store is None else store, rng=lambda n: b"\x07" * n,
                  iterations=4, **kw), clock


def test_default_password_and_hashed_storage():
    a, _ = _auth()
    assert a.role(A.CH_MODBUS) == A.ROLE_NONE
    assert a.unlock(A.CH_MODBUS, b"123456") == A.OK
    assert a.role(A.CH_MODBUS) == A.ROLE_USER
    rec = a.store[A.KEY_USER]
    assert b"123456" not in rec and len(rec) == A.RECORD_LEN
    # Salted SHA-256, iterated: recompute independently from the record fields.
    import hashlib
    salt = rec[3:11]
    h = hashlib.sha256(salt + b"123456").digest()
    for _ in range(3):
        h = hashlib.sha256(h + salt).digest()
    assert rec[11:] == h and rec[1:3] == b"\x00\x04"


def test_sessions_are_per_channel_and_expire():
    a, clock = _auth(idle_ms=60000)
    a.unlock(A.CH_MODBUS, b"123456")
    assert a.role(A.CH_BLE) == A.ROLE_NONE
    clock.advance(59000)
    assert a.allowed(A.CH_MODBUS, A.ROLE_USER)  # refreshes the session
    clock.advance(59000)
    assert a.role(A.CH_MODBUS) == A.ROLE_USER
    clock.advance(1001)
    assert a.role(A.CH_MODBUS) == A.ROLE_NONE
    assert not a.allowed(A.CH_MODBUS, A.ROLE_USER)


def test_session_does_not_revive_after_ticks_wrap():
    a, clock = _auth(idle_ms=1000)
    a.unlock(A.CH_MODBUS, b"123456")
    clock.advance(2000)
    a.poll()
    clock.advance(0x40000000 - 1500)  # a full ticks period later
    assert a.role(A.CH_MODBUS) == A.ROLE_NONE


def test_back_off_doubles_after_free_attempts():
    a, clock = _auth(free_attempts=3, base_ms=1000, max_ms=8000)
    for _ in range(2):
        assert a.unlock(A.CH_MODBUS, b"000000") == A.WRONG
        assert a.lockout_ms() == 0
    assert a.unlock(A.CH_MODBUS, b"000000") == A.WRONG
    assert a.lockout_ms() == 1000
    # During the lockout even the right password is not checked on that channel,
    # but the back-off is per channel: another port is not locked out.
    assert a.unlock(A.CH_MODBUS, b"123456") == A.LOCKED_OUT
    assert a.role(A.CH_MODBUS) == A.ROLE_NONE
    assert a.unlock(A.CH_DISPLAY, b"123456") == A.OK
    expect = [2000, 4000, 8000, 8000]
    for want in expect:
        clock.advance(a.lockout_ms())
        assert a.unlock(A.CH_MODBUS, b"999999") == A.WRONG
        assert a.lockout_ms() == want
    clock.advance(8000)
    assert a.unlock(A.CH_MODBUS, b"123456") == A.OK
    assert a.failures == 0
    assert a.unlock(A.CH_MODBUS, b"000000") == A.WRONG and a.lockout_ms() == 0


def test_back_off_survives_reboot():
    store = {}
    a, clock = _auth(store)
    for _ in range(4):
        clock.advance(a.lockout_ms())
        a.unlock(A.CH_MODBUS, b"000000")
    b, _ = _auth(store, clock)
    assert b.failures == 4 and b.lockout_ms() == 2000
    assert b.unlock(A.CH_MODBUS, b"123456") == A.LOCKED_OUT


def test_malformed_password_counts_as_wrong():
    a, _ = _auth()
    assert a.unlock(A.CH_MODBUS, b"") == A.INVALID
    assert a.unlock(A.CH_MODBUS, b"12 34") == A.INVALID
    assert a.failures == 2


def test_change_password_and_factory_role():
    a, _ = _auth(factory_password=b"f4ctory!")
    assert a.change(A.CH_MODBUS, A.ROLE_USER, b"654321") == A.WRONG  # locked
    a.unlock(A.CH_MODBUS, b"123456")
    assert a.change(A.CH_MODBUS, A.ROLE_USER, b"12") == A.INVALID
    assert a.change(A.CH_MODBUS, A.ROLE_FACTORY, b"abcdef") == A.WRONG
    assert a.change(A.CH_MODBUS, A.ROLE_USER, b"654321") == A.OK
    a.lock(A.CH_MODBUS)
    assert a.unlock(A.CH_MODBUS, b"123456") == A.WRONG
    assert a.unlock(A.CH_MODBUS, b"654321") == A.OK
    assert a.unlock(A.CH_DISPLAY, b"f4ctory!") == A.OK
    assert a.role(A.CH_DISPLAY) == A.ROLE_FACTORY
    assert a.allowed(A.CH_DISPLAY, A.ROLE_USER)


def test_no_factory_role_unless_provisioned():
    a, _ = _auth()
    assert A.KEY_FACTORY not in a.store
    assert a.unlock(A.CH_MODBUS, b"factory") == A.WRONG


def test_modbus_unlock_backoff_and_change():
    r = ModbusRig()
    for _ in range(3):
        assert exception_code(r.unlock(b"000000"), 16) == 3
    assert r.read(A_AUTH + AU_LOCKOUT, 1)[0] == 1
    assert exception_code(r.unlock(b"123456"), 16) == 6  # busy: back-off
    r.idle(1000)
    assert crc_ok(r.unlock(b"123456"))
    assert r.read(A_AUTH + AU_ROLE, 1)[0] == A.ROLE_USER
    assert crc_ok(r.write_n(A_AUTH + AU_NEW_USER, ascii_regs("secret77", 8)))
    r.write1(A_AUTH + 8, 1)  # lock
    assert exception_code(r.write1(A_PARAMS + P.P_BUZZER, 0), 6) == 1
    assert crc_ok(r.unlock(b"secret77"))
    assert crc_ok(r.write1(A_PARAMS + P.P_BUZZER, 0))
    assert r.params[P.P_BUZZER] == 0


def test_modbus_unlock_expires_after_idle():
    r = ModbusRig()
    r.auth.idle_ms = 5000
    r.unlock()
    r.idle(4000)
    assert crc_ok(r.write1(A_PARAMS + P.P_BUZZER, 0))
    r.idle(5100)
    assert exception_code(r.write1(A_PARAMS + P.P_BUZZER, 1), 6) == 1
    assert r.params[P.P_BUZZER] == 0


def _answer(chal, pw):
    """The client's side of the challenge, written from the docs (modbus.md, auth)."""
    n = chal[:16]
    out = b""
    pos = 16
    for _ in range(2):
        salt = chal[pos:pos + 8]
        it = (chal[pos + 8] << 8) | chal[pos + 9]
        pos += 10
        if it:
            import hashlib
            h = hashlib.sha256(salt + pw).digest()
            for _k in range(it - 1):
                h = hashlib.sha256(h + salt).digest()
            out += A.hmac_sha256(h, n)
        else:
            out += bytes(32)
    return out[:32], out[32:]


def test_hmac_matches_rfc4231_case_2():
    mac = A.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac == bytes.fromhex(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_challenge_response_unlocks_and_never_replays():
    a, clock = _auth(factory_password=b"f4ctory!")
    c = a.challenge(A.CH_BLE)
    f, u = _answer(c, b"123456")
    assert a.respond(A.CH_BLE, f, u) == A.OK and a.role(A.CH_BLE) == A.ROLE_USER
    a.lock(A.CH_BLE)
    assert a.respond(A.CH_BLE, f, u) == A.INVALID       # nonce used up
    c2 = a.challenge(A.CH_BLE)
    assert c2[:16] != c[:16]                            # fresh every time
    assert a.respond(A.CH_BLE, f, u) == A.WRONG         # the recorded answer fails
    c3 = a.challenge(A.CH_BLE)
    f, u = _answer(c3, b"f4ctory!")
    assert a.respond(A.CH_BLE, f, u) == A.OK and a.role(A.CH_BLE) == A.ROLE_FACTORY
    c4 = a.challenge(A.CH_BLE)
    clock.advance(A.CHALLENGE_MS + 1)
    f, u = _answer(c4, b"123456")
    assert a.respond(A.CH_BLE, f, u) == A.INVALID       # expired


def test_ble_guessing_does_not_lock_out_the_wired_port():
    a, clock = _auth(free_attempts=3, base_ms=1000)
    for _ in range(6):
        clock.advance(a.lockout_ms(A.CH_BLE))
        c = a.challenge(A.CH_BLE)
        f, u = _answer(c, b"000000")
        assert a.respond(A.CH_BLE, f, u) == A.WRONG
    assert a.lockout_ms(A.CH_BLE) > 0
    assert a.lockout_ms(A.CH_MODBUS) == 0
    assert a.unlock(A.CH_MODBUS, b"123456") == A.OK
    c = a.challenge(A.CH_BLE)
    f, u = _answer(c, b"123456")
    assert a.respond(A.CH_BLE, f, u) == A.LOCKED_OUT   # still locked out there


def test_ble_refuses_plaintext_and_writes_with_the_default_password():
    a, _ = _auth()
    assert a.unlock(A.CH_BLE, b"123456") == A.INVALID
    c = a.challenge(A.CH_BLE)
    f, u = _answer(c, b"123456")
    assert a.respond(A.CH_BLE, f, u) == A.OK
    assert a.role(A.CH_BLE) == A.ROLE_USER
    assert not a.allowed(A.CH_BLE, A.ROLE_USER)   # default password: no writes
    assert a.change(A.CH_BLE, A.ROLE_USER, b"n3wpass") == A.OK   # except its change
    assert a.allowed(A.CH_BLE, A.ROLE_USER)


def test_modbus_challenge_response_over_rs485():
    from comms.regs.auth import AU_CHAL_REQ, AU_CHALLENGE, AU_RESPONSE, CHAL_REGS
    r = ModbusRig()
    assert crc_ok(r.write1(A_AUTH + AU_CHAL_REQ, 1))
    regs = r.read(A_AUTH + AU_CHALLENGE, CHAL_REGS)
    chal = bytes([b for v in regs for b in (v >> 8, v & 0xFF)])
    f, u = _answer(chal, b"123456")
    mac = f + u
    resp = r.write_n(A_AUTH + AU_RESPONSE, [(mac[2 * k] << 8) | mac[2 * k + 1] for k in range(32)])
    assert crc_ok(resp) and resp[1] == 16
    assert r.read(A_AUTH + AU_ROLE, 1)[0] == A.ROLE_USER
    r.write1(A_AUTH + 8, 1)  # lock
    resp = r.write_n(A_AUTH + AU_RESPONSE, [(mac[2 * k] << 8) | mac[2 * k + 1] for k in range(32)])
    assert exception_code(resp, 16) == 3       # replay: no challenge outstanding
