"""Auth block: unlock / lock this port, its role and the back-off, password
changes, and the last-error registers that explain any refused write on
this port (set by ``RegisterMap.refuse``)."""
from micropython import const

from bms.auth import CH_BLE, INVALID as AUTH_INVALID, LOCKED_OUT, OK as AUTH_OK, ROLE_NAMES
from comms.packing import put16be as put16
from comms.regs import codes

AU_UNLOCK = const(0x00)      # 8 regs ASCII password
AU_LOCK = const(0x08)        # write anything: lock this port
AU_ROLE = const(0x09)
AU_LOCKOUT = const(0x0A)     # seconds until a password may be tried
_AU_FAILS = const(0x0B)
AU_NEW_USER = const(0x10)    # 8 regs ASCII, user role
AU_NEW_FACTORY = const(0x18)  # 8 regs ASCII, factory role
AU_ERR_INDEX = const(0x20)   # parameter index of the last refusal, -1 none
_AU_ERR_CODE = const(0x21)    # exception code of the last refusal
AU_ERR_TEXT = const(0x22)    # 64 regs ASCII reason
AU_CHAL_REQ = const(0x62)    # write anything: a fresh challenge for this port
AU_CHALLENGE = const(0x63)   # 18 regs: nonce (8) | factory salt (4), iterations | user salt (4), iterations
AU_RESPONSE = const(0x75)    # 32 regs: HMAC-SHA256 for the factory record | for the user record
CHAL_REGS = const(18)
RESP_REGS = const(32)
SIZE = const(0x95)
PW_REGS = const(8)
ERR_TEXT_LEN = const(128)

AUTH = (
    ("unlock", AU_UNLOCK, PW_REGS, "ascii", "W", "Write the password (ASCII, NUL padded) to unlock "
     "this port; wrong: exception 03, during a back-off lockout: exception 06"),
    ("lock", AU_LOCK, 1, "u16", "W", "Write any value to lock this port again"),
    ("role", AU_ROLE, 1, "u16", "R", "Role unlocked on this port: {auth_roles}"),
    ("lockout", AU_LOCKOUT, 1, "u16", "R", "Seconds until a password may be tried again"),
    ("failures", _AU_FAILS, 1, "u16", "R", "Wrong passwords since the last correct one"),
    ("new_user_password", AU_NEW_USER, PW_REGS, "ascii", "W",
     "New user password, 4..16 printable ASCII (user role)"),
    ("new_factory_password", AU_NEW_FACTORY, PW_REGS, "ascii", "W",
     "New factory password (factory role)"),
    ("error_index", AU_ERR_INDEX, 1, "s16", "R",
     "Parameter index named by the last refusal on this port (-1 none)"),
    ("error_code", _AU_ERR_CODE, 1, "u16", "R", "Exception code of the last refusal (0 none)"),
    ("error_text", AU_ERR_TEXT, 64, "ascii", "R", "Reason for the last refusal"),
    ("challenge_request", AU_CHAL_REQ, 1, "u16", "W",
     "Write any value: a fresh challenge for this port (good for one answer, 30 s)"),
    ("challenge", AU_CHALLENGE, CHAL_REGS, "u16", "R",
     "Bytes, big-endian pairs: 16-byte nonce, factory salt (8) and iterations (u16), user salt "
     "(8) and iterations (0: no such password)"),
    ("response", AU_RESPONSE, RESP_REGS, "u16", "W",
     "HMAC-SHA256(key = SHA-256 password digest for that salt, message = nonce) for the factory "
     "record, then for the user record (64 bytes): unlocks this port without sending the "
     "password; wrong: exception 03 (counts as a wrong password); no challenge: exception 03"),
)


def _reg(rm, o):
    a = rm.auth
    if o == AU_ROLE:
        return a.role(rm.channel) if a is not None else 0
    if o == AU_LOCKOUT:
        return (a.lockout_ms(rm.channel) + 999) // 1000 if a is not None else 0
    if o == _AU_FAILS:
        return a.failures_of(rm.channel) if a is not None else 0
    if o == AU_ERR_INDEX:
        return rm.err_index & 0xFFFF
    if o == _AU_ERR_CODE:
        return rm.err_code
    if AU_ERR_TEXT <= o < AU_ERR_TEXT + ERR_TEXT_LEN // 2:
        j = 2 * (o - AU_ERR_TEXT)
        return (rm.err_text[j] << 8) | rm.err_text[j + 1]
    if AU_CHALLENGE <= o < AU_CHALLENGE + CHAL_REGS and rm.chal is not None:
        j = 2 * (o - AU_CHALLENGE)
        return (rm.chal[j] << 8) | rm.chal[j + 1]
    return 0


def read(rm, off, count, out, pos):
    for k in range(count):
        put16(out, pos + 2 * k, _reg(rm, off + k))
    return codes.EX_NONE


def _lockout(rm, a):
    return rm.refuse(codes.EX_BUSY, -1, "too many wrong passwords: wait %d s"
                     % ((a.lockout_ms(rm.channel) + 999) // 1000))


def write(rm, off, count, data, pos):
    a = rm.auth
    ch = rm.channel
    if a is None:
        return rm.refuse(codes.EX_ADDRESS, -1, "no access control on this port")
    if off == AU_UNLOCK and count <= PW_REGS:
        res = a.unlock(ch, codes.ascii_of(data, pos, count))
        if res == AUTH_OK:
            return codes.EX_NONE
        if res == LOCKED_OUT:
            return _lockout(rm, a)
        if res == AUTH_INVALID and ch == CH_BLE:
            return rm.refuse(codes.EX_VALUE, -1, "no plaintext password over Bluetooth: "
                             "use the challenge (challenge_request / response)")
        return rm.refuse(codes.EX_VALUE, -1, "wrong password")
    if off == AU_LOCK and count == 1:
        a.lock(ch)
        return codes.EX_NONE
    if off == AU_CHAL_REQ and count == 1:
        rm.chal = a.challenge(ch)
        return codes.EX_NONE
    if off == AU_RESPONSE and count == RESP_REGS:
        raw = bytes(data[pos:pos + 2 * RESP_REGS])
        res = a.respond(ch, raw[:32], raw[32:])
        rm.chal = None
        if res == AUTH_OK:
            return codes.EX_NONE
        if res == LOCKED_OUT:
            return _lockout(rm, a)
        if res == AUTH_INVALID:
            return rm.refuse(codes.EX_VALUE, -1, "no challenge outstanding: request one first")
        return rm.refuse(codes.EX_VALUE, -1, "wrong password")
    if off in (AU_NEW_USER, AU_NEW_FACTORY) and count <= PW_REGS:
        role = codes.ROLE_USER if off == AU_NEW_USER else codes.ROLE_FACTORY
        # The role itself, not allowed(): over Bluetooth the default
        # password blocks every write except its own change.
        if a.role(ch) < role:
            return rm.refuse(codes.EX_FUNCTION, -1, "locked: unlock as %s first" % ROLE_NAMES[role])
        if a.change(ch, role, codes.ascii_of(data, pos, count)) != AUTH_OK:
            return rm.refuse(codes.EX_VALUE, -1, "password must be 4..16 printable ASCII characters")
        return codes.EX_NONE
    return rm.refuse(codes.EX_ADDRESS, -1, "not a writable auth register")


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + off, name, typ, n, "", rw, "", "", desc)
            for name, off, n, typ, rw, desc in AUTH]
    return "Password and last error", section(rows), rows
