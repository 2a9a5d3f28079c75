"""Long-int constants in the frozen image (the board only).

MicroPython's freezer (tools/mpy-tool.py, v1.27.0) writes an int inside a
constant object, a tuple of constants, as a small int only when it lies in
-8192..8191, the range every port can encode; anything else becomes a static
long int, even where the RP2040's 31-bit small ints would hold it.  Loaded
from a .mpy file the same tuple holds small ints, and the unix port's 62-bit
small ints hide it too: only the frozen image pays.  Arithmetic with such an
element allocates a new long int every time, and every result derived from
it is a long int as well; the SOC estimator lost 128 B of heap per update
that way (per-chemistry tables of 3.8e6 W and 1e7 ohm*1e-8).

The rule: control-loop modules keep no such tuple.  Per-chemistry numbers
live in ``array("i", (...))`` (converted once, at import), thresholds in
``const()``.  A few modules may keep long ints where the value is only
compared or copied, or is truly 32-bit (CRC-32) and off the control loop;
each is listed below with why.  The model of the freezer is checked against
the C file the firmware build froze, so it cannot drift from what the board
runs.
"""
import ast
import os
import re

import pytest

from rp2_rig import uf2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_ANY_PORT = (-0x2000, 0x1FFF)    # mpy-tool.py: mp_small_int_fits
SMALL_RP2040 = (-(1 << 30), (1 << 30) - 1)

# (frozen file name, top-level name or Class.method, "*": the whole module):
# why its long-int constants are harmless.
ALLOWED = {
    ("bms/params.py", "TABLE"): "the parameter table: limits and defaults are compared "
                                "against and copied into array('i') (Params.values)",
    ("bms/params.py", "BAUD_RATES"): "a UART is built with one at boot or on a port change",
    ("bms/digest.py", "crc32"): "CRC-32 needs 32 bits; settings and log writes only",
    ("bms/store.py", "*"): "32-bit record sequence and CRC; settings writes only",
    ("bms/persistlog.py", "*"): "32-bit record fields; log writes only",
    ("bms/wallclock.py", "EPOCH_2020"): "clock set and record stamps only",
    ("comms/registers.py", "BLOCKS"): "the register map in flash; requests use _START "
                                      "(array('H')) for the start addresses",
    ("drivers/bq76952.py", "BQ76952.configure"): "data-memory addresses of the "
                                                         "chip configuration, written at boot",
    ("drivers/ina228.py", "INA228.read_charge_raw"): "the 40-bit charge accumulator; "
                                                     "slow path only",
    ("drivers/ltc681x.py", "*"): "wired by no board (tools/deploy.NOT_ON_BOARDS)",
    ("boards/pico.py", "PINS"): "bus construction at boot (I2C 400 kHz)",
    ("boards/pico32.py", "Assign"): "bus construction at boot (I2C 400 kHz)",
    ("boards/slave_module.py", "PINS"): "bus construction at boot (I2C 400 kHz)",
    ("boards/esp32_devkit.py", "PINS"): "bus construction at boot (I2C 400 kHz)",
}


_NOT = object()      # "not a compile-time constant" (None is one)


def _source(frozen_name):
    for base in (os.path.join(ROOT, "firmware"), ROOT):
        p = os.path.join(base, frozen_name)
        if os.path.isfile(p):
            return p
    return None


class _Model(ast.NodeVisitor):
    """Where mpy-cross puts an int in the constant table as an object: a
    constant tuple (after const() names of the module and constant folding)
    holding an int outside the any-port range, or an int literal outside the
    target's small ints.  Each hit: (line, value, inside array(), where:
    the top-level name or Class.method)."""

    def __init__(self, tree):
        self.consts = {}
        self.hits = []
        self._in_array = 0
        self._where = {}
        for n in tree.body:
            name = getattr(n, "name", None)
            if name is None and isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name):
                name = n.targets[0].id
            for k in range(n.lineno, n.end_lineno + 1):
                self._where[k] = name or type(n).__name__
            if isinstance(n, ast.ClassDef):
                for f in n.body:
                    if isinstance(f, ast.FunctionDef):
                        for k in range(f.lineno, f.end_lineno + 1):
                            self._where[k] = "%s.%s" % (n.name, f.name)
        for n in tree.body:
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and \
                    isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Call) and \
                    getattr(n.value.func, "id", None) == "const":
                v = self.value(n.value.args[0])
                if isinstance(v, int) and not isinstance(v, bool):
                    self.consts[n.targets[0].id] = v

    def value(self, n):
        """The folded constant of ``n`` (int, str, None, nested tuple) or _NOT."""
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            return self.consts.get(n.id, _NOT)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.Invert)):
            v = self.value(n.operand)
            if isinstance(v, int) and not isinstance(v, bool):
                return -v if isinstance(n.op, ast.USub) else ~v
        if isinstance(n, ast.BinOp):
            a, b = self.value(n.left), self.value(n.right)
            if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) \
                    and not isinstance(b, bool):
                ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__,
                       ast.LShift: int.__lshift__, ast.RShift: int.__rshift__,
                       ast.BitOr: int.__or__, ast.BitAnd: int.__and__,
                       ast.BitXor: int.__xor__, ast.FloorDiv: int.__floordiv__}
                f = ops.get(type(n.op))
                if f is not None and not (isinstance(n.op, ast.FloorDiv) and b == 0):
                    return f(a, b)
        if isinstance(n, ast.Tuple):
            vals = [self.value(e) for e in n.elts]
            if all(v is not _NOT for v in vals):
                return tuple(vals)
        return _NOT

    def _hit(self, n, v):
        self.hits.append((n.lineno, v, self._in_array > 0, self._where.get(n.lineno, "?")))

    def visit_Call(self, n):
        inside = getattr(n.func, "id", None) == "array"
        self._in_array += inside
        self.generic_visit(n)
        self._in_array -= inside

    def visit_Tuple(self, n):
        v = self.value(n) if n.elts else None
        if isinstance(v, tuple):
            for x in _ints(v):
                if not SMALL_ANY_PORT[0] <= x <= SMALL_ANY_PORT[1]:
                    self._hit(n, x)
            return      # its elements are accounted for with it
        self.generic_visit(n)

    def visit_BinOp(self, n):
        v = self.value(n)
        if isinstance(v, int) and not SMALL_RP2040[0] <= v <= SMALL_RP2040[1]:
            self._hit(n, v)
            return
        self.generic_visit(n)

    def visit_Constant(self, n):
        v = n.value
        if isinstance(v, int) and not isinstance(v, bool) and \
                not SMALL_RP2040[0] <= v <= SMALL_RP2040[1]:
            self._hit(n, v)


def _ints(t):
    for x in t:
        if isinstance(x, tuple):
            yield from _ints(x)
        elif isinstance(x, int) and not isinstance(x, bool):
            yield x


def _model(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    m = _Model(tree)
    m.visit(tree)
    return m.hits


def _frozen_long_ints(c_path):
    """{frozen file name: [values]} of the static long ints in frozen_content.c."""
    out = {}
    name = None
    pat = re.compile(r"static const mp_obj_int_t \w+ = \{\{&mp_type_int\}, \{\.neg=(\d), "
                     r".*\.dig=\(uint16_t\*\)\(const uint16_t\[\]\)\{([^}]*)\}")
    with open(c_path) as f:
        for line in f:
            if line.startswith("// - frozen file name: "):
                name = line.split(": ", 1)[1].strip()
            m = pat.match(line)
            if m:
                digs = [int(d, 16) for d in m.group(2).split(",")]
                v = sum(d << (16 * k) for k, d in enumerate(digs))
                out.setdefault(name, []).append(-v if m.group(1) == "1" else v)
    return out


@pytest.fixture(scope="module")
def frozen():
    uf2("pico")
    c_path = os.path.join(ROOT, "build", "rp2", "build-pico", "frozen_content.c")
    return _frozen_long_ints(c_path)


def test_the_model_matches_what_the_build_froze(frozen):
    ours = {n: v for n, v in frozen.items() if _source(n)}
    assert "bms/params.py" in ours          # the parser finds them at all
    for name in sorted(set(ours) | {"bms/soc.py", "bms/fixmath.py", "app.py"}):
        path = _source(name)
        # Equal constants share one entry of the module's table.
        expect = sorted(set(h[1] for h in _model(path)))
        assert sorted(set(ours.get(name, []))) == expect, name


def test_control_loop_modules_freeze_no_long_int_they_compute_with(frozen):
    bad = []
    for name in sorted(n for n in frozen if _source(n)):
        if (name, "*") in ALLOWED:
            continue
        for line, v, in_array, where in _model(_source(name)):
            if not in_array and (name, where) not in ALLOWED:
                bad.append("%s:%d (%s): %d" % (name, line, where, v))
    assert not bad, ("long-int constants in the frozen image (use array('i', ...) or "
                     "const()): %s" % ", ".join(bad))


def test_the_rule_catches_a_per_chemistry_tuple(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from micropython import const\n_K = const(9000)\n"
                 "A = (3840000, 1536000)\nB = array('i', (3840000, 1))\n"
                 "C = ('x', _K, (1, -_K))\nD = (1, 2, 8191, -8192)\nE = x & 0xFFFFFFFF\n")
    hits = _model(str(p))
    assert [(h[0], h[1]) for h in hits if not h[2]] == [(3, 3840000), (3, 1536000), (5, 9000),
                                                         (5, -9000), (7, 0xFFFFFFFF)]
    assert [(h[0], h[1]) for h in hits if h[2]] == [(4, 3840000)]
