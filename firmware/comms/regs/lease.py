"""Lease block: the rental lock's state and the renewal code entry.

State and remaining operating time are read only.  Writing the code field
(FC16, up to 10 registers of ASCII, the 15 characters with or without
dashes) enters a renewal code.  It needs no role: the code is itself
authenticated (HMAC with the device's secret, single use, bound to the
serial number), and wrong codes back off exponentially (``bms.lease``).  A
refused code answers exception 03 with the reason in the last-error
registers.  Served from the services' lease (``rm.services``); without a
lease configured the state reads 0 and a code is refused."""
from micropython import const

from bms.ticks import ticks_diff
from comms.packing import put16be as put16
from comms.regs import codes

L_STATE = const(0)
L_REMAIN = const(1)     # u32 operating seconds
L_COUNTER = const(3)
L_RETRY = const(4)      # s until another code is taken
L_CODE = const(5)       # 10 registers ASCII
L_CODE_REGS = const(10)
L_DAYS = const(15)      # days of the last accepted code
SIZE = const(16)

LS_NONE = const(0)      # no lease configured on this device
LS_FREE = const(1)      # configured, no lease running (unlocked for good)
LS_ACTIVE = const(2)
LS_EXPIRED = const(3)   # discharge disabled (fault "lease")
STATE_NAMES = ("not configured", "no lease", "active", "expired")

FIELDS = (
    ("lease_state", L_STATE, 1, "u16", "R", "0 not configured, 1 no lease running, 2 active, "
     "3 expired (discharge disabled, charging allowed)"),
    ("lease_remaining", L_REMAIN, 2, "u32", "R", "Operating seconds left (0xFFFFFFFF: no lease)"),
    ("lease_counter", L_COUNTER, 1, "u16", "R", "Counter of the last accepted code"),
    ("lease_retry", L_RETRY, 1, "u16", "R", "Seconds until another code is taken (wrong codes "
     "back off 1 s, 2 s, 4 s ... 1 h)"),
    ("lease_code", L_CODE, 10, "ascii", "W any", "Renewal code XXXXX-XXXXX-XXXXX (FC16)"),
    ("lease_days", L_DAYS, 1, "u16", "R", "Days granted by the last accepted code (0: lease "
     "removed)"),
)


def _lease(rm):
    s = rm.services
    return s.lease if s is not None else None


def state_of(ls):
    if ls is None:
        return LS_NONE
    if not ls.active:
        return LS_FREE
    return LS_EXPIRED if ls.blocked else LS_ACTIVE


def read(rm, off, count, out, pos):
    ls = _lease(rm)
    rem = ls.remaining_s() if ls is not None else -1
    for k in range(count):
        o = off + k
        v = 0
        if o == L_STATE:
            v = state_of(ls)
        elif o == L_REMAIN:
            v = 0xFFFF if rem < 0 else rem >> 16
        elif o == L_REMAIN + 1:
            v = 0xFFFF if rem < 0 else rem
        elif ls is not None:
            if o == L_COUNTER:
                v = ls.state.lease_counter
            elif o == L_RETRY and ls._locked:
                d = ticks_diff(ls._lock_until, rm.bms.clock.ticks_ms())
                v = (d + 999) // 1000 if d > 0 else 0
            elif o == L_DAYS:
                v = ls.last_days
        put16(out, pos + 2 * k, v & 0xFFFF)
    return codes.EX_NONE


def write(rm, off, count, data, pos):
    if off != L_CODE or count > L_CODE_REGS:
        return rm.refuse(codes.EX_ADDRESS, -1, "write the code field only (FC16)")
    svc = rm.services
    if svc is None or svc.lease is None:
        return rm.refuse(codes.EX_FUNCTION, -1, "no lease configured on this device")
    raw = codes.ascii_of(data, pos, count)
    if not codes.printable(raw):
        return rm.refuse(codes.EX_VALUE, -1, "lease code refused: printable ASCII only")
    code = raw.decode()
    ok, why = svc.enter_lease_code(code)
    if not ok:
        return rm.refuse(codes.EX_VALUE, -1, "lease code refused: " + why)
    return codes.EX_NONE


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + o, name, typ, n, "s" if "remaining" in name or "retry" in name else "",
                acc, "", "", desc) for name, o, n, typ, acc, desc in FIELDS]
    return "Lease", section(rows), rows
