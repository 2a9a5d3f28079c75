"""Command result block: what became of the last command, read only.

A command write (the commands block) only queues it; the core runs it at
its next cycle and may still refuse it there (a zero calibration with
current flowing, a current calibration with too little current).  A client
notes ``cmd_seq``, writes the command, then reads this block until
``cmd_seq`` moved and ``cmd_status`` is done or refused: nothing is
reported as done that the BMS did not do."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

R_SEQ = const(0)
R_CMD = const(1)
R_STATUS = const(2)
R_REASON = const(3)
R_VALUE = const(4)     # s32
SIZE = const(6)

FIELDS = (
    ("cmd_seq", R_SEQ, 1, "u16", "Commands finished (done or refused) since boot, wraps"),
    ("cmd_last", R_CMD, 1, "u16", "Id of the last command queued (see Commands)"),
    ("cmd_status", R_STATUS, 1, "u16", "{cmd_status}"),
    ("cmd_reason", R_REASON, 1, "u16", "Refusal reason: {cmd_reasons}"),
    ("cmd_value", R_VALUE, 2, "s32", "Result: soc_set the SOC (0.1 %), cal_current the new "
     "gain (1e-4), cal_zero the new offset (mA), defaults the chemistry"),
)


def read(rm, off, count, out, pos):
    b = rm.bms
    for k in range(count):
        o = off + k
        v = 0
        if o == R_SEQ:
            v = b.cmd_seq
        elif o == R_CMD:
            v = b.cmd_last
        elif o == R_STATUS:
            v = b.cmd_status
        elif o == R_REASON:
            v = b.cmd_reason
        elif o == R_VALUE:
            v = b.cmd_value >> 16
        elif o == R_VALUE + 1:
            v = b.cmd_value
        put16(out, pos + 2 * k, v & 0xFFFF)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + o, name, typ, n, "", "R", "", "", desc)
            for name, o, n, typ, desc in FIELDS]
    return "Command result", section(rows), rows
