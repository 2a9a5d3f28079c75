"""Password access control shared by every channel (Modbus, BLE, display).

Roles: ROLE_NONE (read only), ROLE_USER (parameters and commands),
ROLE_FACTORY (identity fields, the factory password, everything a user may
do).  One ``Auth`` object serves all channels so that the rules and the
brute-force counter are the same everywhere; each channel has its own
session, so unlocking the RS485 port does not unlock Bluetooth.

Passwords (4..16 printable ASCII bytes, default user password ``123456``
as on the TOPBMS) are stored as ``version | iterations | salt | digest``
with an iterated, salted SHA-256 through a storage-agnostic ``store``: any
object with ``get(key)`` and ``store[key] = value`` (a dict in tests, the
settings store on a board).  Honest limit: a 6-digit PIN cannot resist an
offline search whatever the hash; hashing keeps the password itself out of a
flash dump, and the online rate limit is what slows guessing.

Rate limit, per channel: the first ``free_attempts`` wrong passwords on a
channel cost nothing, after that every wrong password locks *that channel*
out for ``base_ms * 2**k`` (k = wrong attempts beyond the free ones),
capped at ``max_ms``; a guesser in Bluetooth range cannot lock out the
wired PC port.  During a lockout no password is checked on that channel.
Each channel's wrong-attempt count is written to the store, so a power cycle
does not reset the back-off; a correct password on that channel resets it.

Challenge-response (``challenge`` / ``respond``): the BMS hands out a fresh
16-byte nonce per request and channel, together with the salt and
iteration count of each stored record; the client derives the record's
digest from the password (the same iterated, salted SHA-256) and answers
HMAC-SHA256(key = digest, msg = nonce) for the factory and for the user
record.  The password never crosses the link, a nonce is good for one answer
only (right or wrong) and for CHALLENGE_MS, so a recorded exchange cannot be
replayed.  Wrong answers count like wrong passwords.  Plaintext ``unlock``
is refused on channels in ``PLAIN_REFUSED`` (Bluetooth).

Default password over Bluetooth: while the user password is still the
published default (123456), ``allowed`` refuses every write role on
CH_BLE (``ble_default``); the registers keep only the password change open
there.

A session expires ``idle_ms`` after its last authorised action.  All times
come from the injected clock (``ticks_ms`` semantics); ``poll()`` must run
at least every few days (every comms server calls it) so that no stale
session or lockout can come back to life when the ticks wrap.
"""
import hashlib

from micropython import const

from bms.ticks import ticks_diff

ROLE_NONE = const(0)
ROLE_USER = const(1)
ROLE_FACTORY = const(2)
ROLE_NAMES = ("none", "user", "factory")

CH_MODBUS = const(0)
CH_BLE = const(1)
CH_DISPLAY = const(2)
_CH_CAN = const(3)
_N_CHANNELS = const(4)

# unlock() results
OK = const(0)
WRONG = const(1)
LOCKED_OUT = const(2)
INVALID = const(3)

DEFAULT_USER_PASSWORD = b"123456"
NONCE_LEN = const(16)
MAC_LEN = const(32)
CHALLENGE_MS = const(30000)     # a nonce is good this long, and for one answer
PLAIN_REFUSED = (1,)            # CH_BLE: no plaintext password over the air
IDLE_MS = const(300000)        # a session ends 5 min after its last authorised action
FREE_ATTEMPTS = const(3)       # wrong passwords before the back-off starts
BACKOFF_BASE_MS = const(1000)  # first lockout; doubles with every further wrong one
BACKOFF_MAX_MS = const(900000)  # lockout cap: 15 min
_PW_MIN = const(4)
_PW_MAX = const(16)
_SALT_LEN = const(8)
_DIGEST_LEN = const(32)
RECORD_LEN = const(43)  # 1 version + 2 iterations + 8 salt + 32 digest
_RECORD_VERSION = const(1)

KEY_USER = "auth.user"
KEY_FACTORY = "auth.factory"
KEY_FAILS = "auth.fails"   # the wired port's count; other channels: KEY_FAILS + str(ch)


def _fails_key(ch):
    return KEY_FAILS if ch == CH_MODBUS else KEY_FAILS + str(ch)


def _urandom(n):
    try:
        import os
        return os.urandom(n)
    except (ImportError, AttributeError, NotImplementedError):
        import random
        return bytes(random.getrandbits(8) for _ in range(n))


def valid_password(pw):
    if not isinstance(pw, (bytes, bytearray)):
        return False
    if len(pw) < _PW_MIN or len(pw) > _PW_MAX:
        return False
    for c in pw:
        if c < 0x21 or c > 0x7E:
            return False
    return True


def _digest(salt, pw, iterations):
    h = hashlib.sha256(bytes(salt) + bytes(pw)).digest()
    for _ in range(iterations - 1):
        h = hashlib.sha256(h + bytes(salt)).digest()
    return h


def make_record(pw, salt, iterations=64):
    if len(salt) != _SALT_LEN:
        raise ValueError("salt")
    return (bytes((_RECORD_VERSION, iterations >> 8, iterations & 0xFF)) + bytes(salt)
            + _digest(salt, pw, iterations))


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) from hashlib alone: MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    ipad = bytes([b ^ 0x36 for b in key])
    opad = bytes([b ^ 0x5C for b in key])
    inner = hashlib.sha256(ipad + bytes(msg)).digest()
    return hashlib.sha256(opad + inner).digest()


def record_digest(rec):
    """The stored digest of a password record (the HMAC key), or None."""
    if rec is None or len(rec) != RECORD_LEN or rec[0] != _RECORD_VERSION:
        return None
    return bytes(rec[3 + _SALT_LEN:])


def client_digest(pw, salt, iterations):
    """What a client derives from the password for the challenge's salt."""
    return _digest(salt, pw, iterations)


def _same(a, b):
    if a is None or b is None or len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def check_record(rec, pw):
    """True if ``pw`` matches the stored record (compared in constant time)."""
    if rec is None or len(rec) != RECORD_LEN or rec[0] != _RECORD_VERSION:
        return False
    it = (rec[1] << 8) | rec[2]
    if it < 1:
        return False
    d = _digest(rec[3:3 + _SALT_LEN], pw, it)
    diff = 0
    for i in range(_DIGEST_LEN):
        diff |= d[i] ^ rec[3 + _SALT_LEN + i]
    return diff == 0


class Auth:
    def __init__(self, clock, store=None, idle_ms=IDLE_MS, free_attempts=FREE_ATTEMPTS,
                 base_ms=BACKOFF_BASE_MS, max_ms=BACKOFF_MAX_MS, factory_password=None, rng=None,
                 iterations=64):
        self.clock = clock
        self.store = store if store is not None else {}
        self.idle_ms = idle_ms
        self.free_attempts = free_attempts
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.iterations = iterations
        self._rng = rng or _urandom
        self._role = bytearray(_N_CHANNELS)
        self._seen = [0] * _N_CHANNELS
        self._lock_t0 = [0] * _N_CHANNELS
        self._lock_len = [0] * _N_CHANNELS
        self._fails = [0] * _N_CHANNELS
        self._nonce = [None] * _N_CHANNELS
        self._nonce_t = [0] * _N_CHANNELS
        self._n_count = 0
        self.attempts = 0  # every unlock attempt, for diagnostics
        st = self.store
        if st.get(KEY_USER) is None:
            st[KEY_USER] = make_record(DEFAULT_USER_PASSWORD, self._rng(_SALT_LEN), iterations)
        # No factory password unless production sets one: an unprovisioned
        # board has no factory role rather than a published default.
        if st.get(KEY_FACTORY) is None and factory_password is not None:
            st[KEY_FACTORY] = make_record(factory_password, self._rng(_SALT_LEN), iterations)
        for ch in range(_N_CHANNELS):
            f = st.get(_fails_key(ch))
            self._fails[ch] = f if isinstance(f, int) and f > 0 else 0
            if self._fails[ch] >= self.free_attempts:
                self._start_lockout(ch)  # a reboot does not reset the back-off
        self._default = None  # cached: is the user password the default?

    # ---- time-based housekeeping ----------------------------------------
    def poll(self):
        now = self.clock.ticks_ms()
        for ch in range(_N_CHANNELS):
            if self._role[ch]:
                d = ticks_diff(now, self._seen[ch])
                if d < 0 or d >= self.idle_ms:
                    self._role[ch] = ROLE_NONE
            if self._lock_len[ch]:
                d = ticks_diff(now, self._lock_t0[ch])
                if d < 0 or d >= self._lock_len[ch]:
                    self._lock_len[ch] = 0
            if self._nonce[ch] is not None:
                d = ticks_diff(now, self._nonce_t[ch])
                if d < 0 or d >= CHALLENGE_MS:
                    self._nonce[ch] = None

    @property
    def failures(self):
        """Wrong attempts on the wired port (CH_MODBUS); ``failures_of(ch)`` per channel."""
        return self._fails[CH_MODBUS]

    def failures_of(self, ch):
        return self._fails[ch]

    def lockout_ms(self, ch=CH_MODBUS):
        """Remaining lockout of channel ``ch`` in ms (0: a password may be tried now)."""
        self.poll()
        if not self._lock_len[ch]:
            return 0
        return self._lock_len[ch] - ticks_diff(self.clock.ticks_ms(), self._lock_t0[ch])

    def _start_lockout(self, ch):
        k = self._fails[ch] - self.free_attempts
        ms = self.base_ms
        while k > 0 and ms < self.max_ms:
            ms <<= 1
            k -= 1
        if ms > self.max_ms:
            ms = self.max_ms
        self._lock_t0[ch] = self.clock.ticks_ms()
        self._lock_len[ch] = ms

    # ---- sessions -------------------------------------------------------
    def role(self, ch):
        self.poll()
        return self._role[ch]

    def allowed(self, ch, need):
        """True if channel ``ch`` holds ``need`` (or more); refreshes its session.

        Over Bluetooth nothing that needs a role is allowed while the user
        password is the published default (``ble_default``)."""
        if need <= ROLE_NONE:
            return True
        if self.role(ch) < need:
            return False
        if ch == CH_BLE and self.ble_default():
            return False
        self._seen[ch] = self.clock.ticks_ms()
        return True

    def ble_default(self):
        """True while the user password is still the published default."""
        if self._default is None:
            self._default = check_record(self.store.get(KEY_USER), DEFAULT_USER_PASSWORD)
        return self._default

    # ---- challenge-response ------------------------------------------------
    def challenge(self, ch):
        """A fresh nonce for channel ``ch`` plus each record's salt and
        iterations: ``nonce | factory salt | factory iterations (u16 BE) |
        user salt | user iterations`` (16 + 10 + 10 bytes; a missing record
        has a zero salt and 0 iterations).  Replaces any earlier nonce."""
        # Fresh even with a fixed test rng or a weak one: the system's random
        # bytes, the injected ones and a counter, hashed.
        c = self._n_count = self._n_count + 1
        n = hashlib.sha256(bytes(_urandom(NONCE_LEN)) + bytes(self._rng(NONCE_LEN)) +
                           bytes(((c >> 24) & 255, (c >> 16) & 255, (c >> 8) & 255, c & 255))
                           ).digest()[:NONCE_LEN]
        self._nonce[ch] = n
        self._nonce_t[ch] = self.clock.ticks_ms()
        out = bytearray(n)
        for key in (KEY_FACTORY, KEY_USER):
            rec = self.store.get(key)
            if rec is None or len(rec) != RECORD_LEN:
                out += bytes(_SALT_LEN + 2)
            else:
                out += bytes(rec[3:3 + _SALT_LEN]) + bytes(rec[1:3])
        return bytes(out)

    def respond(self, ch, mac_factory, mac_user):
        """Answer to the channel's nonce: OK, WRONG, LOCKED_OUT or INVALID
        (no nonce outstanding).  The nonce is used up either way."""
        self.attempts += 1
        self.poll()
        nonce = self._nonce[ch]
        self._nonce[ch] = None
        if self.lockout_ms(ch) > 0:
            return LOCKED_OUT
        if nonce is None:
            return INVALID
        role = ROLE_NONE
        st = self.store
        k = record_digest(st.get(KEY_FACTORY))
        if k is not None and _same(hmac_sha256(k, nonce), mac_factory):
            role = ROLE_FACTORY
        else:
            k = record_digest(st.get(KEY_USER))
            if k is not None and _same(hmac_sha256(k, nonce), mac_user):
                role = ROLE_USER
        if role == ROLE_NONE:
            self._wrong(ch)
            return WRONG
        self._grant(ch, role)
        return OK

    def _grant(self, ch, role):
        if self._fails[ch]:
            self._fails[ch] = 0
            self.store[_fails_key(ch)] = 0
        self._role[ch] = role
        self._seen[ch] = self.clock.ticks_ms()

    def unlock(self, ch, pw):
        """Try a plaintext password on channel ``ch``: OK, WRONG, LOCKED_OUT or
        INVALID (also: plaintext refused on this channel, use the challenge)."""
        self.attempts += 1
        if self.lockout_ms(ch) > 0:
            return LOCKED_OUT
        if ch in PLAIN_REFUSED:
            return INVALID
        if not valid_password(pw):
            # Malformed input counts as a wrong guess: no free probing.
            self._wrong(ch)
            return INVALID
        st = self.store
        role = ROLE_NONE
        if check_record(st.get(KEY_FACTORY), pw):
            role = ROLE_FACTORY
        elif check_record(st.get(KEY_USER), pw):
            role = ROLE_USER
        if role == ROLE_NONE:
            self._wrong(ch)
            return WRONG
        self._grant(ch, role)
        return OK

    def _wrong(self, ch):
        self._fails[ch] += 1
        self.store[_fails_key(ch)] = self._fails[ch]
        if self._fails[ch] >= self.free_attempts:
            self._start_lockout(ch)

    def lock(self, ch):
        """End channel ``ch``'s session, and the challenge handed out on it: an
        answer recorded from a link that dropped before it arrived must not
        unlock the next connection (BLE locks on every connect and disconnect)."""
        self._role[ch] = ROLE_NONE
        self._nonce[ch] = None

    def lock_all(self):
        for ch in range(_N_CHANNELS):
            self.lock(ch)

    def change(self, ch, role, new_pw):
        """Set the password of ``role``; the channel must hold that role.

        Returns OK, WRONG (not allowed) or INVALID (bad new password).
        """
        # The role itself (not ``allowed``): changing the default password is
        # the one write Bluetooth keeps while that password is in use.
        if role not in (ROLE_USER, ROLE_FACTORY) or self.role(ch) < role:
            return WRONG
        self._seen[ch] = self.clock.ticks_ms()
        if not valid_password(new_pw):
            return INVALID
        self.store[KEY_FACTORY if role == ROLE_FACTORY else KEY_USER] = \
            make_record(new_pw, self._rng(_SALT_LEN), self.iterations)
        self._default = None
        return OK
