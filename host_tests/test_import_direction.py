"""Each firmware layer imports only downward (README, layout).

    bms/       pure logic: imports no other firmware package
    drivers/   chips and buses: may use bms/, never comms/
    comms/     protocols: may use bms/ (and drivers' interfaces), never the
               slave-module firmware or the entries
    slave/     slave-module firmware: bms/ and comms/ (internal CAN)

Checked by parsing the source with ``ast``: top-level imports, imports
inside functions (the ones that hide a loop or a wrong direction until the
code runs) and ``__import__("pkg.mod", ...)`` with a literal name.
"""
import ast
import os

import tools

FIRMWARE = os.path.join(tools.ROOT, "firmware")

# package -> firmware packages / entry modules it must never import
FORBIDDEN = {
    "bms": ("comms", "drivers", "slave", "boards", "app", "slave_main", "diag"),
    "drivers": ("comms", "slave", "app", "slave_main", "diag"),
    "comms": ("slave", "boards", "app", "slave_main", "diag"),
    "slave": ("app", "diag"),
}


def imported_names(tree):
    """(line, dotted module name) of every import anywhere in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                out.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return sorted(out)


def violations(pkg, source, path="<src>"):
    bad = []
    for line, name in imported_names(ast.parse(source, path)):
        top = name.split(".")[0]
        if name.startswith("."):
            bad.append("%s:%d relative import %s (use the absolute name)" % (path, line, name))
        elif top in FORBIDDEN[pkg]:
            bad.append("%s:%d %s/ imports %s" % (path, line, pkg, name))
    return bad


def _package_files(pkg):
    for d, _dirs, files in os.walk(os.path.join(FIRMWARE, pkg)):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(d, f)


def test_every_layer_imports_only_downward():
    bad = []
    seen = 0
    for pkg in FORBIDDEN:
        for path in _package_files(pkg):
            with open(path) as f:
                bad += violations(pkg, f.read(), os.path.relpath(path, tools.ROOT))
            seen += 1
    assert seen > 60
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)


def test_the_checker_sees_top_level_local_and_dynamic_imports():
    src = ("import comms.can_ids\n"
           "from drivers import afe\n"
           "from bms import params\n"
           "import array\n"
           "def f():\n"
           "    from comms.can_guard import BusGuard\n"
           "    class K:\n"
           "        def g(self):\n"
           "            import drivers.gpio\n"
           "    return __import__('comms.registers', None, None, ['x'])\n")
    bad = violations("bms", src)
    assert [b.split(" imports ")[1] for b in bad] == [
        "comms.can_ids", "drivers", "comms.can_guard", "drivers.gpio", "comms.registers"]
    assert [b.split(" imports ")[1] for b in violations("drivers", src)] == [
        "comms.can_ids", "comms.can_guard", "comms.registers"]
    assert violations("comms", src) == []
    assert violations("bms", "from . import x\n")
