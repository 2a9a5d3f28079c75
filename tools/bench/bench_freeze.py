"""RAM cost of loading the firmware from .py vs precompiled .mpy, and the
bytecode that freezing (firmware/manifest.py) moves from RAM into flash."""
import os
import subprocess
import tempfile

from tools.bench.common import ROOT, Row, parse_kv

MODULES = ("bms", "comms", "drivers")


def _run(ctx, path):
    env = dict(os.environ, MICROPYPATH=path)
    r = subprocess.run([ctx.micropython, "-X", "heapsize=4M",
                        os.path.join(ROOT, "tools/bench/upy/import_heap.py")],
                       env=env, capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError(r.stdout + r.stderr)
    return parse_kv(r.stdout)["import_heap"]


def run(ctx):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from build import mpy_cross
    fw = os.path.join(ROOT, "firmware")
    with tempfile.TemporaryDirectory() as d:
        total = 0
        for pkg in MODULES:
            for dirpath, _dirs, files in os.walk(os.path.join(fw, pkg)):
                for f in files:
                    if not f.endswith(".py"):
                        continue
                    src = os.path.join(dirpath, f)
                    rel = os.path.relpath(src, fw)
                    dst = os.path.join(d, rel[:-3] + ".mpy")
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    subprocess.run([mpy_cross(), "-o", dst, src], check=True)
                    total += os.path.getsize(dst)
        heap_py = _run(ctx, fw)
        heap_mpy = _run(ctx, d)
    return [
        Row("freeze", "import heap, master modules from .py", heap_py, "B", "",
            "compiled on the device at import"),
        Row("freeze", "import heap, same modules from .mpy", heap_mpy, "B", "",
            "%.0f %% of .py" % (100.0 * heap_mpy / heap_py)),
        Row("freeze", "bytecode moved to flash by freezing (est.)", total, "B", "",
            ".mpy size of bms/comms/drivers; frozen code is not loaded into the heap"),
    ]
