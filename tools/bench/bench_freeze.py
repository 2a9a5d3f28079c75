"""RAM the whole board application keeps after boot (app.build on the pico
board file over the chip emulators, settings on a fake flash, 3 s running),
three ways: firmware as .py (compiled on the device), as .mpy files (bytecode
loaded into the heap) and from a ROMFS image (bytecode runs in place from
flash, as frozen code does).  The qstr pool is measured on its own: a frozen
build keeps those strings in flash too, so "ROMFS minus qstr pool" is the
closest measured figure for a frozen build (still high: frozen code also keeps
raw-code descriptors and constant objects in flash, and an RP2040's objects
are 32-bit, about half the unix port's 64-bit size)."""
import os
import subprocess

from tools.bench.common import ROOT, Row, parse_kv, qstr_bytes

SCRIPT = "tools/bench/upy/app_heap.py"


def _app(ctx, variant, image=None, path=None):
    """(heap_after_boot, qstr pool bytes added) for one boot."""
    args = [variant] + ([image] if image else [])
    if path is None:
        out = ctx.upy(SCRIPT, *args)
    else:  # .mpy tree first on the path, then the host-side emulators
        env = dict(os.environ, MICROPYPATH=":".join(
            [path, os.path.join(ROOT, "host_tests", "core"), os.path.join(ROOT, "host_tests", "upy")]))
        r = subprocess.run([ctx.micropython, "-X", "heapsize=4M", os.path.join(ROOT, SCRIPT)] + args,
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if r.returncode:
            raise RuntimeError(r.stdout + r.stderr)
        out = r.stdout
    k = parse_kv(out)
    if k.get("failed"):
        raise RuntimeError("an app part failed to build:\n" + out)
    return k["heap_after_boot"], qstr_bytes(out, "qstr_after") - qstr_bytes(out, "qstr_before")


def run(ctx):
    rows = []
    mpy_dir, files, img, size = ctx.pico_image()
    code = sum(os.path.getsize(loc) for loc, remote in files if remote.endswith(".mpy"))
    for variant, label in (("single", "16S single board"), ("master", "256S master")):
        py, _ = _app(ctx, variant)
        mpy, _ = _app(ctx, variant, path=mpy_dir)
        rom, qstr = _app(ctx, variant, image=img)
        rows.append(Row("ram", "app heap after boot, %s, .py" % label, py, "B", "",
                        "bytecode compiled into the heap (64-bit unix port)"))
        rows.append(Row("ram", "app heap after boot, %s, .mpy" % label, mpy, "B", "",
                        "bytecode loaded into the heap"))
        rows.append(Row("ram", "app heap after boot, %s, ROMFS" % label, rom, "B", "",
                        "bytecode runs in place from the image"))
        rows.append(Row("ram", "  of which qstr pool", qstr, "B", "",
                        "interned names; in flash when frozen"))
        rows.append(Row("ram", "app heap after boot, %s, ROMFS - qstr" % label, rom - qstr,
                        "B", "<= 65536", "closest measured figure for a frozen build"))
    rows.append(Row("ram", "firmware bytecode (.mpy files of the pico image)", code, "B", "",
                    "ROMFS image %d B; flash, not heap, when frozen or in ROMFS" % size))
    return rows
