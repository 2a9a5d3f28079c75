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

Rate limit: the first ``free_attempts`` wrong passwords cost nothing, after
that every wrong password locks all channels out for ``base_ms * 2**k``
(k = wrong attempts beyond the free ones), capped at ``max_ms``.  During a
lockout no password is checked at all.  The wrong-attempt count is written
to the store, so a power cycle does not reset the back-off; a correct
password resets it.

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
KEY_FAILS = "auth.fails"


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
        self._lock_t0 = 0
        self._lock_len = 0
        self.attempts = 0  # every unlock attempt, for diagnostics
        st = self.store
        if st.get(KEY_USER) is None:
            st[KEY_USER] = make_record(DEFAULT_USER_PASSWORD, self._rng(_SALT_LEN), iterations)
        # No factory password unless production sets one: an unprovisioned
        # board has no factory role rather than a published default.
        if st.get(KEY_FACTORY) is None and factory_password is not None:
            st[KEY_FACTORY] = make_record(factory_password, self._rng(_SALT_LEN), iterations)
        f = st.get(KEY_FAILS)
        self.failures = f if isinstance(f, int) and f > 0 else 0
        if self.failures >= self.free_attempts:
            self._start_lockout()  # a reboot does not reset the back-off

    # ---- time-based housekeeping ----------------------------------------
    def poll(self):
        now = self.clock.ticks_ms()
        for ch in range(_N_CHANNELS):
            if self._role[ch]:
                d = ticks_diff(now, self._seen[ch])
                if d < 0 or d >= self.idle_ms:
                    self._role[ch] = ROLE_NONE
        if self._lock_len:
            d = ticks_diff(now, self._lock_t0)
            if d < 0 or d >= self._lock_len:
                self._lock_len = 0

    def lockout_ms(self):
        """Remaining lockout in ms (0: a password may be tried now)."""
        self.poll()
        if not self._lock_len:
            return 0
        return self._lock_len - ticks_diff(self.clock.ticks_ms(), self._lock_t0)

    def _start_lockout(self):
        k = self.failures - self.free_attempts
        ms = self.base_ms
        while k > 0 and ms < self.max_ms:
            ms <<= 1
            k -= 1
        if ms > self.max_ms:
            ms = self.max_ms
        self._lock_t0 = self.clock.ticks_ms()
        self._lock_len = ms

    # ---- sessions -------------------------------------------------------
    def role(self, ch):
        self.poll()
        return self._role[ch]

    def allowed(self, ch, need):
        """True if channel ``ch`` holds ``need`` (or more); refreshes its session."""
        if need <= ROLE_NONE:
            return True
        if self.role(ch) < need:
            return False
        self._seen[ch] = self.clock.ticks_ms()
        return True

    def unlock(self, ch, pw):
        """Try a password on channel ``ch``: OK, WRONG, LOCKED_OUT or INVALID."""
        self.attempts += 1
        if self.lockout_ms() > 0:
            return LOCKED_OUT
        if not valid_password(pw):
            # Malformed input counts as a wrong guess: no free probing.
            self._wrong()
            return INVALID
        st = self.store
        role = ROLE_NONE
        if check_record(st.get(KEY_FACTORY), pw):
            role = ROLE_FACTORY
        elif check_record(st.get(KEY_USER), pw):
            role = ROLE_USER
        if role == ROLE_NONE:
            self._wrong()
            return WRONG
        if self.failures:
            self.failures = 0
            st[KEY_FAILS] = 0
        self._role[ch] = role
        self._seen[ch] = self.clock.ticks_ms()
        return OK

    def _wrong(self):
        self.failures += 1
        self.store[KEY_FAILS] = self.failures
        if self.failures >= self.free_attempts:
            self._start_lockout()

    def lock(self, ch):
        self._role[ch] = ROLE_NONE

    def lock_all(self):
        for ch in range(_N_CHANNELS):
            self._role[ch] = ROLE_NONE

    def change(self, ch, role, new_pw):
        """Set the password of ``role``; the channel must hold that role.

        Returns OK, WRONG (not allowed) or INVALID (bad new password).
        """
        if role not in (ROLE_USER, ROLE_FACTORY) or not self.allowed(ch, role):
            return WRONG
        if not valid_password(new_pw):
            return INVALID
        self.store[KEY_FACTORY if role == ROLE_FACTORY else KEY_USER] = \
            make_record(new_pw, self._rng(_SALT_LEN), self.iterations)
        return OK
