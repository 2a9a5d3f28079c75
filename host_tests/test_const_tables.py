"""Module-level tables in firmware/ must be compile-time constants.

On the board the firmware is frozen into flash.  A tuple whose leaves are
all compile-time constants (literals, names bound by ``const()`` in the same
module, ``-X`` / ``A | B`` of those, implicitly joined string literals) is
emitted as one constant object and stays in flash; a tuple with any other
leaf (a function call, a lambda, an imported name, a plain ``X = "u32"``
global, ``"a" + b`` or ``"%d" % n``) is built on the heap at import and
costs RAM for the life of the program (it was about 20 KB on a master).

This test parses every firmware module with ``ast`` and checks every
module-level assignment of a tuple (and of anything assembled from tuples).
The rules are mpy-cross's (1.26): names imported from another module are not
folded even when they are ``const()`` there, and string operators are never
folded.  Not checked: dicts (always on the heap; only the boards' small pin
maps) and ``array(typecode, <constant>)`` buffers, which are mutable by
design.  Where a table needs a value owned by another module it keeps a
literal copy, and the tests below check every copy against its source.
"""
import ast
import operator
import os

import tools

FIRMWARE = os.path.join(tools.ROOT, "firmware")
BOARDS = os.path.join(tools.ROOT, "boards")

# Integer operators mpy-cross folds when both sides are small-int constants.
_INT_OPS = {ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
            ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.Add: operator.add,
            ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
            ast.Mod: operator.mod}
_UNARY_OPS = (ast.USub, ast.UAdd, ast.Invert)


def _sources():
    for top in (FIRMWARE, BOARDS):
        for d, _dirs, files in os.walk(top):
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.join(d, f)


def _is_const_call(node):
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "const" and len(node.args) == 1)


def _module_consts(tree):
    """name -> value of every module-level ``NAME = const(literal expr)``."""
    consts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and _is_const_call(node.value)):
            try:
                consts[node.targets[0].id] = _fold(node.value.args[0], consts)
            except NotConst:
                pass  # mpy-cross refuses it as well
    return consts


class NotConst(Exception):
    pass


def _fold(node, consts):
    """The compile-time value of ``node``, or NotConst naming the offending part."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in consts:
            return consts[node.id]
        raise NotConst("name %r is not a const() of this module" % node.id)
    if isinstance(node, ast.Tuple):
        return tuple(_fold(e, consts) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY_OPS):
        v = _fold(node.operand, consts)
        if not isinstance(v, int) or isinstance(v, bool):
            raise NotConst("unary operator on a non-integer")
        return {ast.USub: lambda x: -x, ast.UAdd: lambda x: x,
                ast.Invert: lambda x: ~x}[type(node.op)](v)
    if isinstance(node, ast.BinOp) and type(node.op) in _INT_OPS:
        a = _fold(node.left, consts)
        b = _fold(node.right, consts)
        for v in (a, b):
            if not isinstance(v, int) or isinstance(v, bool):
                raise NotConst("%s on a non-integer (run-time string/tuple operation)"
                               % type(node.op).__name__)
        return _INT_OPS[type(node.op)](a, b)
    raise NotConst("%s is built at run time" % type(node).__name__)


def _contains_tuple(node):
    return any(isinstance(n, ast.Tuple) for n in ast.walk(node))


def _is_array_buffer(node):
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "array")


def _table_assignments(tree):
    """(name, value node) of module-level assignments whose value holds a tuple."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            v = node.value
            if not isinstance(t, ast.Name) or isinstance(v, ast.Dict) or _is_array_buffer(v):
                continue
            if isinstance(v, ast.Tuple) or (_contains_tuple(v) and not _is_const_call(v)):
                # a literal table, or one assembled from tuples (concatenation, comprehension)
                yield t.id, v


def violations(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    consts = _module_consts(tree)
    out = []
    for name, value in _table_assignments(tree):
        try:
            _fold(value, consts)
        except NotConst as e:
            out.append("%s:%d %s: %s" % (os.path.relpath(path, tools.ROOT), value.lineno, name, e))
    return out


def test_every_module_level_table_is_a_compile_time_constant():
    bad = []
    for p in _sources():
        bad += violations(p)
    assert bad == [], "tables built at run time (heap at import):\n" + "\n".join(bad)


def test_the_checker_catches_run_time_tables():
    src = (
        "from micropython import const\n"
        "from x import Y\n"
        "A = const(1)\n"
        "S = const('u16')\n"
        "_N = -1\n"
        "T = 'u32'\n"
        "OK = (('a', A, -A, A | 4, S, 'x' 'y', None, True, (1, (2, -3))),)\n"
        "B1 = ((Y, 1),)\n"
        "B2 = ((_N, 1),)\n"
        "B3 = ((T, 1),)\n"
        "B4 = (('a' + S, 1),)\n"
        "B5 = (('%d' % A, 1),)\n"
        "B6 = ((f(1), 1),)\n"
        "B7 = ((lambda r: 1, 1),)\n"
        "B8 = OK + ((1,),)\n"
        "B9 = tuple((i, 1) for i in range(3))\n"
    )
    tree = ast.parse(src)
    consts = _module_consts(tree)
    found = {}
    for name, value in _table_assignments(tree):
        try:
            _fold(value, consts)
            found[name] = True
        except NotConst:
            found[name] = False
    assert found == {"OK": True, "B1": False, "B2": False, "B3": False, "B4": False,
                     "B5": False, "B6": False, "B7": False, "B8": False, "B9": False}


# Tables that were once built on the heap (measured): each must be bound
# exactly once, at module level, to a constant literal (not a function's result).
NAMED = {
    "comms/registers.py": ("BLOCKS",),
    "comms/regs/identity.py": ("INFO",),
    "comms/regs/monitor.py": ("MONITOR",),
    "comms/regs/status.py": ("STATUS", "VALID_NAMES"),
    "comms/regs/temps.py": ("T_STATUS_NAMES",),
    "comms/regs/commands.py": ("CMD_ARGS",),
    "comms/regs/auth.py": ("AUTH",),
    "comms/regs/log.py": ("LOG_FIELDS",),
    "comms/regs/modules.py": ("MOD_HEAD", "MOD_FIELDS"),
    "comms/regs/update.py": ("REGS",),
    "comms/regs/plog.py": ("PLOG_FIELDS",),
    "bms/faults.py": ("TABLE", "LEVEL_NAMES"),
    "bms/params.py": ("TABLE", "RULES", "CHEM_NAMES", "BAUD_RATES"),
    "comms/inverter_can.py": ("FAULT_BITS",),
    "comms/jbd.py": ("PROT_BITS",),
    "comms/can_ids.py": ("LAYOUT",),
    "bms/ocv.py": ("_SOC", "_MV"),
}


def test_named_tables_are_constant_literals():
    bad = []
    for rel, names in NAMED.items():
        path = os.path.join(FIRMWARE, rel)
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        consts = _module_consts(tree)
        for name in names:
            binds = [n for n in ast.walk(tree)
                     if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)]
            top = [n for n in tree.body if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]
            if len(binds) != 1 or len(top) != 1:
                bad.append("%s %s: bound %d times" % (rel, name, len(binds)))
                continue
            try:
                _fold(top[0].value, consts)
            except NotConst as e:
                bad.append("%s %s: %s" % (rel, name, e))
    assert bad == [], "\n".join(bad)


def _private_copies(mod, prefix):
    return {n[len(prefix):]: getattr(mod, n) for n in dir(mod) if n.startswith(prefix)}


def test_fault_specs_use_the_parameter_indices_of_bms_params():
    from bms import faults, params
    copies = _private_copies(faults, "_P_")
    assert len(copies) >= 30
    for name, v in copies.items():
        assert getattr(params, "P_" + name) == v, name


def test_inverter_and_jbd_tables_use_the_fault_ids_of_bms_faults():
    from bms import faults
    from comms import inverter_can, jbd
    for mod in (inverter_can, jbd):
        copies = _private_copies(mod, "_F_")
        assert copies, mod.__name__
        for name, v in copies.items():
            assert getattr(faults, name) == v, (mod.__name__, name)


def _blocks():
    from comms import registers as R
    return R, [(row, R.block_module(b)) for b, row in enumerate(R.BLOCKS)]


def test_register_map_copies_match_their_sources():
    from bms import core, measurements, params
    from comms.regs import auth, commands, log, monitor
    from comms.regs import params as regparams
    R, blocks = _blocks()
    assert regparams.SIZE == params.N_PARAMS
    assert commands.N_CMDS == len(core.CMD_NAMES) - 1
    assert commands.SIZE == 2 * commands.N_CMDS
    assert [c for c, _a in commands.CMD_ARGS] == list(core.CMD_NAMES[1:])
    assert R._ERR_TEXT_LEN == auth.ERR_TEXT_LEN
    assert R._LOG_REC_REGS == log.REC_REGS and R._LOG_MAX_RECORDS == log.MAX_RECORDS
    # every block: its module serves it, BLOCKS carries its size
    names = [row[0] for row, _m in blocks]
    assert len(names) == len(set(names)) >= 13
    for row, mod in blocks:
        assert mod.__name__ == row[4] == "comms.regs." + row[0], row
        assert callable(mod.read) and callable(mod.write) and callable(mod.doc), row[0]
        if row[2] is not None:
            assert mod.SIZE == row[2], row[0]
    # blocks do not overlap
    spans = sorted((row[1], row[1] + (row[2] or log.REC_REGS * log.MAX_RECORDS))
                   for row, _m in blocks)
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        assert a1 <= b0, (hex(a0), hex(b0))
    # monitor: size, and one max/min row pair per temperature role, in role order
    assert sum(2 if r[1] in ("u32", "s32") else 1 for r in monitor.MONITOR) == monitor.SIZE
    rows = {r[0]: r for r in monitor.MONITOR}
    assert len(rows) == len(monitor.MONITOR)
    for k, role in enumerate(measurements.ROLE_NAMES):
        assert rows["t_%s_max" % role][4] == monitor._S_TMAX + k
        assert rows["t_%s_min" % role][4] == monitor._S_TMIN + k
    assert len(measurements.ROLE_NAMES) == measurements.N_ROLES
    assert monitor._S_TMIN - monitor._S_TMAX >= measurements.N_ROLES
    for k in range(256 // 16):
        assert rows["balance_%d" % k][3] == "Balancing mask, bit b = cell %d + b" % (16 * k + 1)
        assert rows["balance_%d" % k][4] == monitor._S_BALANCE + k
    # faults_k / protection_k / alarm_k: two words of 16 bits hold every fault id
    from bms import faults
    assert 16 < faults.N_FAULTS <= 32
    for k in range(2):
        assert rows["faults_%d" % k][4] == monitor._S_FAULTS + k


def test_the_update_windows_share_one_layout():
    """comms.regs.update.REGS describes both update windows; every register
    a window serves has a description there and fits inside the window."""
    from comms.regs import slave_update, update
    offs = [r[1] for r in update.REGS]
    assert offs == sorted(offs)
    for col, size in ((5, update.SIZE), (6, slave_update.SIZE)):
        rows = [r for r in update.REGS if r[col] is not None]
        names = [r[0] for r in rows]
        assert len(names) == len(set(names))
        for r in rows:
            assert 0 <= r[1] and r[1] + r[2] <= size, r
        for a, b in zip(rows, rows[1:]):
            assert a[1] + a[2] <= b[1], (a[0], b[0])       # no overlap within a window
    both = [r[0] for r in update.REGS if r[5] is not None and r[6] is not None]
    assert "begin_size" in both and "chunk_data" in both and "status" in both


def test_every_description_placeholder_resolves():
    from comms.regdoc import doc, placeholders
    from comms.regs import auth, identity, log, modules, monitor, plog, status, update
    R, _blocks_ = _blocks()
    seen = 0
    for table in (identity.INFO, monitor.MONITOR, status.STATUS, auth.AUTH, log.LOG_FIELDS, R.BLOCKS,
                  modules.MOD_HEAD, modules.MOD_FIELDS, update.REGS, plog.PLOG_FIELDS):
        for row in table:
            for field in row:
                if isinstance(field, str) and "{" in field:
                    seen += len(placeholders(field))
                    text = doc(field)
                    assert "{" not in text and "}" not in text, text
    assert seen >= 20
    assert doc("Operating mode: {mode_names}").startswith("Operating mode: 0 standby, 1 ")
