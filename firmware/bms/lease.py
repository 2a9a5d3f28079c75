"""Lease lock (rental): discharge is disabled once the paid operating time ends.

Time is *operating* time (``state.op_s``, seconds the BMS has been running,
persisted in the state record) so a flat or reset RTC cannot extend a lease;
a power cut cannot either, because the services poller charges the
worst-case unsaved interval to ``op_s`` at every unclean boot (power cycling
costs lease time, it never gains any).

Renewal tokens (typed on the display / app / PC tool):

    payload = counter u16 | days u16            (big-endian)
    mac     = HMAC-SHA256(secret, "BMSLEASE1|" serial "|" counter u32 "|" days u16)[:5]
    code    = Crockford base32 of payload|mac (72 bits -> 15 chars, XXXXX-XXXXX-XXXXX)

``secret`` is per device (provisioned at the factory, e.g. derived on the
vendor's side as HMAC(master, serial): ``tools/lease_token.py``).  A token
is accepted only if its MAC matches and its counter is above the last one
accepted (``state.lease_counter``): no replay, no reuse on another device.
``days`` > 0 extends the lease by that many operating days (from its end if
it has not ended yet, so early renewal loses nothing); ``days`` = 0 removes
the lease (unlock for good).  Wrong codes back off exponentially (1 s, 2 s,
4 s ... 1 h) on top of the 2**40 forgery odds; a code entered during the
back-off is refused unchecked and leaves ``last_event`` alone (what the
services log), so a stream of codes cannot flood the flash log.

``blocked`` is the flag for ``prot.set_flag(SIG_LEASE, ...)``: the LEASE
fault opens the discharge relay (charging stays allowed, so a rented pack is
never left to self-discharge into damage).  ``beep(now)`` gives a chirp
pattern during the last ``warn_s`` of the lease.
"""
import struct

from micropython import const

from bms.digest import equal, hmac_sha256
from bms.store import F_LEASE
from bms.ticks import ticks_diff

_DAY_S = const(86400)
WARN_S = const(3 * 86400)
_MAC_LEN = const(5)
_TOKEN_LEN = const(9)
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32

# Lease events for the persistent log (PK_LEASE a=...).
_LE_RENEWED = const(1)
_LE_CLEARED = const(2)
LE_REFUSED = const(3)
LE_EXPIRED = const(4)
_LE_SET = const(5)


class LeaseError(ValueError):
    pass


def b32encode(data):
    bits = 0
    n = 0
    out = []
    for byte in data:
        bits = (bits << 8) | byte
        n += 8
        while n >= 5:
            n -= 5
            out.append(_ALPHABET[(bits >> n) & 31])
    if n:
        out.append(_ALPHABET[(bits << (5 - n)) & 31])
    return "".join(out)


def b32decode(text, nbytes):
    bits = 0
    n = 0
    out = bytearray()
    for ch in text.upper():
        if ch in "- ":
            continue
        if ch == "O":
            ch = "0"
        elif ch == "I" or ch == "L":
            ch = "1"
        v = _ALPHABET.find(ch)
        if v < 0:
            raise LeaseError("bad character %r in code" % ch)
        bits = (bits << 5) | v
        n += 5
        if n >= 8:
            n -= 8
            out.append((bits >> n) & 0xFF)
            bits &= (1 << n) - 1
    if len(out) != nbytes or bits != 0:
        raise LeaseError("code must be %d characters" % ((nbytes * 8 + 4) // 5))
    return bytes(out)


def _mac(secret, serial, counter, days):
    if isinstance(serial, str):
        serial = serial.encode()
    msg = b"BMSLEASE1|" + serial + b"|" + struct.pack(">I", counter) + b"|" + struct.pack(">H", days)
    return hmac_sha256(secret, msg)[:_MAC_LEN]


def make_token(secret, serial, counter, days):
    """The renewal code for ``serial``: used by tools/lease_token.py and tests."""
    if not 0 < counter < 65536 or not 0 <= days < 65536:
        raise LeaseError("counter 1..65535, days 0..65535")
    raw = struct.pack(">HH", counter, days) + _mac(secret, serial, counter, days)
    c = b32encode(raw)
    return "%s-%s-%s" % (c[0:5], c[5:10], c[10:15])


def parse_token(secret, serial, code):
    """(counter, days) of an authentic code; LeaseError otherwise."""
    raw = b32decode(code, _TOKEN_LEN)
    counter, days = struct.unpack(">HH", raw[:4])
    if not equal(raw[4:], _mac(secret, serial, counter, days)):
        raise LeaseError("code not valid for this device")
    return counter, days


class Lease:
    def __init__(self, secret, serial, state, warn_s=WARN_S):
        self.secret = secret
        self.serial = serial
        self.state = state   # bms.store.State: op_s, lease_end_s, lease_counter, lease_flags
        self.warn_s = warn_s
        self.fails = 0
        self._lock_until = 0
        self._locked = False
        self.changed = False  # state changed: save now
        self.last_event = 0
        self.last_days = 0    # days of the last accepted code (the lease block shows it)

    @property
    def active(self):
        return bool(self.state.lease_flags & F_LEASE)

    def remaining_s(self):
        """Operating seconds left, or -1 without a lease."""
        if not self.active:
            return -1
        r = self.state.lease_end_s - self.state.op_s
        return r if r > 0 else 0

    @property
    def blocked(self):
        return self.active and self.state.op_s >= self.state.lease_end_s

    @property
    def warning(self):
        return self.active and 0 < self.state.lease_end_s - self.state.op_s <= self.warn_s

    def beep(self, now):
        """Buzzer pattern for the warning: three chirps every 10 min."""
        if not self.warning:
            return False
        t = (now // 100) % 6000   # 100 ms slots in 10 min
        return t < 6 and t % 2 == 0

    def expire(self, now):
        """End a wrong-code back-off that is over (call at least once a day):
        days later its end would read as ahead again (tick differences wrap
        at 6.2 days) and refuse a good code for days."""
        if self._locked and ticks_diff(self._lock_until, now) <= 0:
            self._locked = False

    def enter(self, code, now):
        """Apply a renewal code; returns (counter, days) or raises LeaseError."""
        if self._locked and ticks_diff(self._lock_until, now) > 0:
            raise LeaseError("locked: retry in %d s" % ((ticks_diff(self._lock_until, now) + 999) // 1000))
        try:
            counter, days = parse_token(self.secret, self.serial, code)
            if counter <= self.state.lease_counter:
                raise LeaseError("code already used (counter %d <= %d)" % (counter, self.state.lease_counter))
        except LeaseError:
            self.fails += 1
            back = 1000 << (self.fails - 1 if self.fails < 13 else 12)
            if back > 3600000:
                back = 3600000
            self._lock_until = (now + back) & 0x3FFFFFFF
            self._locked = True
            self.last_event = LE_REFUSED
            raise
        self.fails = 0
        self._locked = False
        st = self.state
        st.lease_counter = counter
        self.last_days = days
        if days == 0:
            st.lease_flags &= ~F_LEASE
            st.lease_end_s = 0
            self.last_event = _LE_CLEARED
        else:
            base = st.lease_end_s if self.active and st.lease_end_s > st.op_s else st.op_s
            st.lease_end_s = base + days * _DAY_S
            st.lease_flags |= F_LEASE
            self.last_event = _LE_RENEWED
        self.changed = True
        return counter, days

    def start(self, seconds):
        """Factory/test: start a lease of ``seconds`` operating time from now."""
        st = self.state
        st.lease_end_s = st.op_s + seconds
        st.lease_flags |= F_LEASE
        self.changed = True
        self.last_event = _LE_SET
