"""No function-level import of an extensible built-in module outside start-up code.

On the board an ``import time`` inside a function costs about 1.8 ms every
call (emulated RP2040, MicroPython 1.27, 2026-12-07): ``time``, ``os``,
``machine``, ``struct``, ``hashlib``, ``random``... are *extensible*
built-ins, so each import looks on the filesystem first (``sys.path`` starts
with ``''``) before it takes the built-in.  A global name costs 11 us, an
import of a loaded project module 50-70 us, ``gc`` / ``micropython`` /
``vfs`` 60-100 us.  One such import in a control task's path made the 4 ms
fast task take 11 ms.  Import them at module level; a function that runs
once (start-up, a board's ``build``) or on a rare request may keep its own,
listed below with the reason.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# MicroPython's extensible built-ins (docs "Library": the modules a .py of
# the same name may extend), ``machine`` measured the same way.
EXTENSIBLE = {"array", "binascii", "collections", "errno", "hashlib", "heapq", "io", "json",
              "machine", "os", "platform", "random", "re", "select", "socket", "ssl", "struct",
              "time", "zlib", "deflate"}

# (file, function): runs at start-up or on a rare request, not in a task's path.
ALLOWED = {
    ("firmware/app.py", "main"),                      # start-up
    ("boards/__init__.py", "board_name"),            # start-up (main.py, app.main)
    ("boards/__init__.py", "relays_off"),            # start-up (main.py)
    ("firmware/app.py", "stream_poller"),
    ("firmware/app.py", "_updater"),                  # once, on the first update access
    ("firmware/slave_main.py", "run"),
    ("firmware/slave_main.py", "load_settings"),
    ("firmware/slave_main.py", "save_settings"),      # when the cell count changes
    ("firmware/slave_main.py", "attach_update"),
    ("firmware/bms/auth.py", "_urandom"),             # one per login challenge
    ("firmware/bms/romslot.py", "valid"),             # an update's check
    ("firmware/bms/ticks.py", "BoardClock.__init__"),
    ("firmware/bms/store.py", "BoardFs.__init__"),
    ("firmware/drivers/rs485.py", "_ticks"),          # the port's construction
    ("boards/common.py", "_ticks"),
    ("boards/common.py", "_sleep_us"),
    ("boards/pico.py", "build"),
    ("boards/pico_w.py", "build"),
    ("boards/pico32.py", "build"),
    ("boards/esp32_devkit.py", "build"),
    ("boards/slave_module.py", "build"),
}


def _function_imports(path):
    """(dotted function name, module) of every import inside a function."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    out = []

    def visit(node, stack, in_fn):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(ch, stack + [ch.name], True)
            elif isinstance(ch, ast.ClassDef):
                visit(ch, stack + [ch.name], in_fn)
            else:
                if in_fn and isinstance(ch, ast.Import):
                    out.extend((".".join(stack), a.name.split(".")[0]) for a in ch.names)
                elif in_fn and isinstance(ch, ast.ImportFrom) and ch.module and not ch.level:
                    out.append((".".join(stack), ch.module.split(".")[0]))
                visit(ch, stack, in_fn)
    visit(tree, [], False)
    return out


def _sources():
    for top in ("firmware", "boards"):
        for dp, _dn, fns in os.walk(os.path.join(ROOT, top)):
            for fn in fns:
                if fn.endswith(".py"):
                    yield os.path.relpath(os.path.join(dp, fn), ROOT).replace(os.sep, "/")


def test_no_extensible_builtin_is_imported_inside_a_function_on_a_hot_path():
    bad = []
    for path in _sources():
        for fn, mod in _function_imports(path):
            if mod in EXTENSIBLE and (path, fn) not in ALLOWED:
                bad.append("%s: %s imports %s" % (path, fn, mod))
    assert not bad, "import these at module level (1.8 ms a call on the board):\n" + \
        "\n".join(bad)


def test_the_scan_sees_a_function_level_import(tmp_path, monkeypatch):
    # The check is not vacuous: a function that imports time is found.
    src = tmp_path / "firmware" / "x.py"
    src.parent.mkdir()
    src.write_text("import gc\n\nclass A:\n    def f(self):\n        import time\n"
                   "        from os import urandom\n        return time\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert _function_imports("firmware/x.py") == [("A.f", "time"), ("A.f", "os")]


def test_every_allowed_entry_still_exists():
    # A stale entry would let a new import in a renamed hot function through.
    seen = set()
    for path in _sources():
        for fn, mod in _function_imports(path):
            if mod in EXTENSIBLE:
                seen.add((path, fn))
    assert ALLOWED <= seen, sorted(ALLOWED - seen)
