"""Range-checked copies of the estimator's modules (CPython only).

The unix port of MicroPython is 64-bit, so ``micropython.heap_lock()`` there
does not notice an intermediate that would leave the RP2040's 31-bit small
int range (-2**30 .. 2**30-1) and become a heap-allocated big int on the
board.  This helper recompiles ``bms.fixmath``, ``bms.ocv`` and ``bms.soc``
from their source with every arithmetic expression (binary and unary
operators, augmented assignments) wrapped in a check, so a run of the real
code on the real profile fails at the first out-of-range integer, naming
the file and line.  While ``Checker.slow`` is set (the core's slow task
runs), a float result in these modules fails too: the slow-task path must
be integer-only.
"""
import ast
import os
import sys
import types

SMALL_MIN = -(1 << 30)
SMALL_MAX = (1 << 30) - 1
MODULES = ("bms.fixmath", "bms.ocv", "bms.soc")
FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware")


class RangeError(AssertionError):
    pass


class Checker:
    def __init__(self):
        self.ops = 0          # integer results checked
        self.peak = 0         # largest magnitude seen
        self.slow = False     # inside the core's slow task
        self.floats_in_slow = 0

    def __call__(self, v, where):
        t = type(v)
        if t is int:
            self.ops += 1
            if v < SMALL_MIN or v > SMALL_MAX:
                raise RangeError("%s: %d leaves the small-int range" % (where, v))
            a = -v if v < 0 else v
            if a > self.peak:
                self.peak = a
        elif t is float and self.slow:
            self.floats_in_slow += 1
            raise RangeError("%s: float %r in the slow-task path" % (where, v))
        return v


class _Wrap(ast.NodeTransformer):
    def __init__(self, fname):
        self.fname = fname

    def _chk(self, expr, node):
        where = "%s:%d" % (self.fname, node.lineno)
        call = ast.Call(ast.Name("__intchk__", ast.Load()), [expr, ast.Constant(where)], [])
        return ast.copy_location(call, node)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        return self._chk(node, node)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return node
        return self._chk(node, node)

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        load = _as_load(node.target)
        value = self._chk(ast.copy_location(ast.BinOp(load, node.op, node.value), node), node)
        return ast.copy_location(ast.Assign([node.target], value), node)


def _as_load(t):
    if isinstance(t, ast.Name):
        return ast.Name(t.id, ast.Load())
    if isinstance(t, ast.Attribute):
        return ast.Attribute(_as_load(t.value) if not isinstance(t.value, ast.Name)
                             else ast.Name(t.value.id, ast.Load()), t.attr, ast.Load())
    if isinstance(t, ast.Subscript):
        return ast.Subscript(t.value, t.slice, ast.Load())
    raise TypeError(t)


def compile_checked(source, name, filename, checker):
    """Module ``name`` from ``source`` with every arithmetic result checked."""
    tree = _Wrap(os.path.basename(filename)).visit(ast.parse(source, filename))
    ast.fix_missing_locations(tree)
    mod = types.ModuleType(name)
    mod.__file__ = filename
    mod.__dict__["__intchk__"] = checker
    exec(compile(tree, filename, "exec"), mod.__dict__)
    return mod


def _small(v):
    return type(v) is int and SMALL_MIN <= v <= SMALL_MAX


def contract_fixmath(checker):
    """``bms.fixmath`` with each helper checking its documented contract.

    The helpers' own intermediates are checked exhaustively at their contract
    limits by test_soc_intrange (deep mode); in a 24 h run it is enough (and
    ten times faster) to check that every call stays inside that contract:
    operands below 2**30 in magnitude, results small ints.
    """
    import bms.fixmath as fm
    mod = types.ModuleType("bms.fixmath")
    mod.__dict__.update({k: v for k, v in fm.__dict__.items() if not k.startswith("__")})
    lim = (1 << 30) - 1

    def wrap(fn, check_args):
        def f(*args):
            for a in args:
                if not _small(a):
                    if type(a) is float and checker.slow:
                        raise RangeError("%s%r: float in the slow-task path" % (fn.__name__, args))
                    if type(a) is not float:
                        raise RangeError("%s%r: operand outside the small-int range"
                                         % (fn.__name__, args))
            check_args(args)
            r = fn(*args)
            checker(r, fn.__name__)
            return r
        f.__name__ = fn.__name__
        return f

    def operands(args):
        for a in args[:2]:
            if type(a) is int and not -lim <= a <= lim:
                raise RangeError("operand %d outside +-(2**30 - 1)" % a)

    def shift(args):
        operands(args)
        if not 0 <= args[2] <= 62:
            raise RangeError("shift %d" % args[2])

    def root(args):
        if args[0] >= 1 << 30 or args[1] & 1 or not 0 <= args[1] <= 28:
            raise RangeError("sqrt%r outside its contract" % (args,))

    def one(args):
        if not -lim <= args[0] <= lim:
            raise RangeError("operand %d" % args[0])

    mod.mul = wrap(fm.mul, shift)
    mod.div = wrap(fm.div, shift)
    mod.sqrt = wrap(fm.sqrt, root)
    mod.isqrt = wrap(fm.isqrt, lambda a: root((a[0], 0)))
    mod.hypot = wrap(fm.hypot, operands)
    mod.exp_neg = wrap(fm.exp_neg, one)
    mod.clamp = wrap(fm.clamp, operands)
    return mod


class checked_estimator:
    """Context manager: the estimator's modules replaced by checked copies.

    ``bms.ocv`` and ``bms.soc`` are recompiled with every arithmetic result
    checked; ``bms.fixmath`` too if ``deep``, else its helpers check their
    contract (see ``contract_fixmath``).  ``bms.core.Soc`` (what ``Bms``
    constructs) and ``Bms._slow`` (sets ``checker.slow``) are patched for
    the duration; yields the checker.
    """

    def __init__(self, deep=True):
        self.checker = Checker()
        self.deep = deep
        self._saved = {}

    def __enter__(self):
        import bms
        import bms.core
        for name in MODULES:
            self._saved[name] = sys.modules.get(name)
        self._saved_attrs = [(bms, n.split(".")[1], getattr(bms, n.split(".")[1], None))
                             for n in MODULES]
        for name in MODULES:
            path = os.path.join(FIRMWARE, *name.split(".")) + ".py"
            if name == "bms.fixmath" and not self.deep:
                mod = contract_fixmath(self.checker)
            else:
                with open(path) as f:
                    mod = compile_checked(f.read(), name, path, self.checker)
            sys.modules[name] = mod
            setattr(bms, name.split(".")[1], mod)
        self._core_soc = bms.core.Soc
        bms.core.Soc = sys.modules["bms.soc"].Soc
        self._slow = bms.core.Bms._slow
        orig = self._slow
        chk = self.checker

        def slow(bms_self, now):
            chk.slow = True
            try:
                return orig(bms_self, now)
            finally:
                chk.slow = False
        bms.core.Bms._slow = slow
        return self.checker

    def __exit__(self, *exc):
        import bms.core
        bms.core.Bms._slow = self._slow
        bms.core.Soc = self._core_soc
        for name, mod in self._saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        for pkg, attr, val in self._saved_attrs:
            setattr(pkg, attr, val)
        return False
