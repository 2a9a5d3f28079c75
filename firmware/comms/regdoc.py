"""Full descriptions of register-map rows, for the docs and host tools.

The register tables (``comms.registers.BLOCKS`` and the block modules in
``comms.regs``) are compile-time constants so that, frozen, they stay in
flash instead of being built on the heap at import.  A description that
lists another table's names (modes, relays, fault bits ...) therefore
cannot be assembled there; it holds a ``{key}`` placeholder and ``doc``
fills it in from the tables themselves, so the lists never drift.

``row``, ``section`` and ``md_table`` are what a block module's ``doc``
builds its part of docs/modbus.md and docs/modbus_registers.csv with.  Only
host tools import this module (tools/gendocs.py); the board never does.
"""
from bms import faults as F


def _names(names):
    return ", ".join("%d %s" % (i, names[i]) for i in range(len(names)) if names[i])


def _bits(names):
    return ", ".join("bit %d %s" % (i, names[i]) for i in range(len(names)))


def _fault_names(first, lo, hi):
    out = []
    for b in range(16):
        i = first + b
        if i < F.N_FAULTS and lo <= F.TABLE[i][F.F_LEVEL] <= hi:
            out.append("bit %d %s" % (b, F.TABLE[i][F.F_NAME]))
    return ", ".join(out) if out else "reserved"


def _mode_names():
    from bms.core import MODE_NAMES
    return _names(MODE_NAMES)


def _dsg_names():
    from bms.contactors import D_NAMES
    return _names(D_NAMES)


def _relay_bits():
    from bms.contactors import RELAY_NAMES
    return _bits(RELAY_NAMES)


def _auth_roles():
    from bms.auth import ROLE_NAMES
    return _names(ROLE_NAMES)


def _event_kinds():
    from bms.eventlog import KIND_NAMES
    return _names(KIND_NAMES)


def _regs(name):
    return __import__("comms.regs." + name, None, None, ("doc",))


def _update_errors():
    from bms.update import ERROR_NAMES
    return _names(ERROR_NAMES)


def _fw_states():
    from bms.update import STATE_NAMES
    return _names(STATE_NAMES)


# placeholder -> text
_KEYS = {
    "mode_names": _mode_names,
    "dsg_names": _dsg_names,
    "relay_bits": _relay_bits,
    "level_names": lambda: _names(F.LEVEL_NAMES),
    "faults_0": lambda: _fault_names(0, 0, 9),
    "faults_1": lambda: _fault_names(16, 0, 9),
    "protection_0": lambda: _fault_names(0, F.L_PROT, 9),
    "protection_1": lambda: _fault_names(16, F.L_PROT, 9),
    "alarm_0": lambda: _fault_names(0, F.L_WARN, F.L_WARN),
    "alarm_1": lambda: _fault_names(16, F.L_WARN, F.L_WARN),
    "auth_roles": _auth_roles,
    "valid_bits": lambda: _bits(_regs("status").VALID_NAMES),
    "event_kinds": _event_kinds,
    "log_rec_regs": lambda: "%d" % _regs("log").REC_REGS,
    "plog_window": lambda: "%d" % _regs("plog").PLOG_WINDOW,
    "can_state_names": lambda: _names(_regs("modules").CAN_STATE_NAMES),
    "module_state_names": lambda: _names(_regs("modules").MOD_STATE_NAMES),
    "module_why_bits": lambda: _bits(_regs("modules").MOD_WHY_BITS),
    "module_fault_bits": lambda: _bits(_regs("modules").MOD_FAULT_BITS),
    "slave_state_names": lambda: _names(_regs("modules").SLAVE_STATE_NAMES),
    "update_states": lambda: _names(_regs("update").US_NAMES),
    "update_errors": _update_errors,
    "fw_states": _fw_states,
    "fwd_phases": lambda: _names(_regs("slave_update").PHASE_NAMES),
    "fwd_results": lambda: _names(_regs("slave_update").RESULT_NAMES),
    "cmd_status": lambda: _names(__import__("bms.core", None, None, ("x",)).CMD_STATUS_NAMES),
    "cmd_reasons": lambda: "; ".join(
        "%d %s" % (i, t) for i, t in
        enumerate(__import__("bms.core", None, None, ("x",)).CMD_REASONS) if t),
    "bal_states": lambda: _names(__import__("bms.balancing", None, None, ("x",)).STATE_NAMES),
}


def doc(text):
    """``text`` with every ``{key}`` replaced; KeyError for an unknown key."""
    i = text.find("{")
    while i >= 0:
        j = text.find("}", i)
        if j < 0:
            break
        v = _KEYS[text[i + 1:j]]()
        text = text[:i] + v + text[j + 1:]
        i = text.find("{", i + len(v))
    return text


def placeholders(text):
    """The ``{key}`` names in ``text`` (for the tests)."""
    out = []
    i = text.find("{")
    while i >= 0:
        j = text.find("}", i)
        if j < 0:
            break
        out.append(text[i + 1:j])
        i = text.find("{", j)
    return out


# ---- what a block module's ``doc(start)`` builds -------------------------------
def row(addr, name, typ, regs, unit, access, lo, hi, desc):
    """One register field: (address, block, name, type, registers, unit,
    access, min, max, description) with the description's placeholders
    filled in; the block name is set by the generator."""
    return (addr, "", name, typ, regs, unit, access, lo, hi, doc(desc))


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out) + "\n"


def section(rows):
    """The usual table of a block's section in docs/modbus.md."""
    return md_table(["address", "name", "type", "regs", "unit", "access", "description"],
                    [("0x%04X" % r[0], r[2], r[3], r[4], r[5], r[6], r[9]) for r in rows])
