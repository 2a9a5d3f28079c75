"""Parameter block: parameter i of ``bms.params.TABLE`` at offset i, in the
table's unit; signed when the row's minimum is < 0.  Writes need the user
role; a multi-register write is one ``ParamSet.set_many``: all or nothing,
a refusal answers exception 03 and names the parameter and the rule in the
last-error registers."""
from micropython import const

from bms.params import ParamError
from bms.params import TABLE as PARAM_TABLE
from comms.packing import get16be as get16
from comms.regs import codes, rows

SIZE = const(64)        # bms.params.N_PARAMS; a test checks it


def signed(i):
    return PARAM_TABLE[i][2] < 0


# Placed straight from the parameter array (comms.regs.rows: viper on a
# board; a put16 call per register took 2 ms for the block on an RP2040,
# emulated).  A u16 register takes a value's low 16 bits: two's complement
# for the signed rows.
_LAYOUT = rows.flat(SIZE)


def read(rm, off, count, out, pos):
    return rows.pack(_LAYOUT, rm.bms.params.values, off, count, out, pos)


def write(rm, off, count, data, pos):
    if not rm.allowed(codes.ROLE_USER):
        return rm.locked()
    pairs = []
    for k in range(count):
        i = off + k
        v = get16(data, pos + 2 * k)
        if v & 0x8000 and signed(i):
            v -= 0x10000
        pairs.append((i, v))
    try:
        # The factory role may write FACTORY_ONLY rows (custom_chem).
        rm.bms.params.set_many(pairs, rm.allowed(codes.ROLE_FACTORY))
    except ParamError as e:
        return rm.refuse(codes.EX_VALUE, e.index, e.reason)
    return codes.EX_NONE


def doc(start):
    from comms.regdoc import md_table, row
    from bms.params import FACTORY_ONLY
    rows = [row(start + i, r[0], "s16" if r[2] < 0 else "u16", 1, r[1],
                "R/W factory" if i in FACTORY_ONLY else "R/W user", r[2], r[3],
                r[6]) for i, r in enumerate(PARAM_TABLE)]
    md = ("Units and ranges are those of `docs/parameters.md` (the table in "
          "`firmware/bms/params.py`); rows with a negative minimum are signed.\n\n"
          + md_table(["address", "#", "name", "type", "unit", "min", "max", "description"],
                     [("0x%04X" % r[0], r[0] - start, r[2], r[3], r[5], r[7], r[8], r[9])
                      for r in rows]))
    return "Parameters", md, rows
