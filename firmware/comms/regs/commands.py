"""Command block: command c of ``bms.core.CMD_NAMES`` at offset 2 * (c - 1).
FC06 to its first register gives a signed 16-bit argument, FC16 of both
registers a signed 32-bit one; one command per request, user role.  The
core runs it at its next cycle and may still refuse it there: the command
result block says what became of it.  Reads return 0."""
from micropython import const

from bms.core import ACCEPTED, CMD_NAMES, ILLEGAL
from comms.packing import get16be as get16, put16be as put16
from comms.regs import codes

N_CMDS = const(10)      # len(bms.core.CMD_NAMES) - 1 (id 0 is "no command"); a test checks it
SIZE = const(20)        # 2 * N_CMDS
_CLEAR_LOG = const(7)   # bms.core.CMD_CLEAR_LOG
# (command, argument) for the docs
CMD_ARGS = (
    ("reset_faults", "1"),
    ("soc_set", "SOC in 0.1 % (0..1000)"),
    ("cal_current", "true current now flowing, mA (the sign is taken from the measurement; at "
     "least 500 mA, and within the gain's +-10 % of the reading)"),
    ("cal_zero", "1 (no current must flow)"),
    ("restart", "1 (every relay opens and stays open until the reset)"),
    ("defaults", "chemistry to load defaults for: 0 NMC, 1 LFP, 2 LTO, 3 NA"),
    ("clear_log", "1 the RAM event log; 2 also the flash log (factory role)"),
    ("sleep", "1 (relays open until wake, the key or current wakes it)"),
    ("wake", "1"),
    ("ocv_forget", "1 (the SOC estimator forgets the OCV points it learned for these cells: "
     "after new or rebuilt cells)"),
)


def offset(name):
    """Block offset of command ``name``."""
    return 2 * (CMD_NAMES.index(name) - 1)


def read(rm, off, count, out, pos):
    for k in range(count):
        put16(out, pos + 2 * k, 0)
    return codes.EX_NONE


def _s16(data, pos):
    v = get16(data, pos)
    return v - 0x10000 if v & 0x8000 else v


def write(rm, off, count, data, pos):
    if off & 1 or count > 2:
        return rm.refuse(codes.EX_ADDRESS, -1, "one command per write, at its first register")
    if not rm.allowed(codes.ROLE_USER):
        return rm.locked()
    cmd = off // 2 + 1
    if count == 2:
        arg = (_s16(data, pos) << 16) | get16(data, pos + 2)
    else:
        arg = _s16(data, pos)
    if cmd == _CLEAR_LOG and arg == 2:
        if not rm.allowed(codes.ROLE_FACTORY):
            return rm.refuse(codes.EX_FUNCTION, -1, "clearing the flash log needs the factory role")
        svc = rm.services
        if svc is None or svc.plog is None:
            return rm.refuse(codes.EX_FUNCTION, -1, "no flash log on this board")
    res = rm.bms.request(cmd, arg)
    if res == ACCEPTED:
        return codes.EX_NONE
    if res == ILLEGAL:
        return rm.refuse(codes.EX_VALUE, -1, "%s: illegal argument %d" % (CMD_NAMES[cmd], arg))
    return rm.refuse(codes.EX_BUSY, -1, "another command is still pending")


def doc(start):
    from comms.regdoc import md_table, row
    args = dict(CMD_ARGS)
    rows = [row(start + offset(CMD_NAMES[c]), CMD_NAMES[c], "s32", 2, "", "W user", "", "",
                "Argument: " + args[CMD_NAMES[c]]) for c in range(1, len(CMD_NAMES))]
    md = ("Each command is two registers at `0x%04X + 2 * (id - 1)`: FC06 to the first "
          "register gives a signed 16-bit argument, FC16 of both a signed 32-bit one. "
          "One command per request; the core runs it at its next cycle (50 ms) and may "
          "still refuse it then: read the command result block (0x%04X) for what became of "
          "it.\n\n" % (start, 0x2040)
          + md_table(["address", "command", "argument"],
                     [("0x%04X" % r[0], r[2], r[9][10:]) for r in rows]))
    return "Commands", md, rows
