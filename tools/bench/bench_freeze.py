"""RAM the whole board application keeps after boot (app.build on the pico
board file over the chip emulators, settings on a fake flash, 3 s running),
on the 64-bit pip unix port three ways: firmware as .py (compiled on the
device), as .mpy files (bytecode loaded into the heap) and from a ROMFS image
(bytecode runs in place from flash).  The qstr pool is measured on its own.

The board's own figures (the frozen UF2 on the emulated RP2040) are in
bench_rp2040; these rows show what freezing saves against the other ways
of shipping the code."""
import os
import subprocess

from tools.bench.common import ROOT, Row, parse_kv, qstr_bytes

SCRIPT = "tools/bench/upy/app_heap.py"




def _boot(exe, script, args, path, heap="4M", must=False):
    """Parsed output of one boot (``path`` first on MICROPYPATH, then the
    host-side emulators), or None if it did not boot whole - RuntimeError
    with the output instead when ``must``."""
    env = dict(os.environ, MICROPYPATH=":".join(
        path + [os.path.join(ROOT, "host_tests", "core"), os.path.join(ROOT, "host_tests", "upy")]))
    r = subprocess.run([exe, "-X", "heapsize=" + heap, os.path.join(ROOT, script)] + args,
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    k = parse_kv(r.stdout)
    if r.returncode or k.get("failed") != 0 or "heap_after_boot" not in k:
        if must:
            raise RuntimeError("%s %s did not boot whole:\n%s%s" % (script, args, r.stdout, r.stderr))
        return None
    if "qstr_after" in r.stdout:
        k["qstr"] = qstr_bytes(r.stdout, "qstr_after") - qstr_bytes(r.stdout, "qstr_before")
    return k


def _app(ctx, variant, image=None, path=None):
    """(heap_after_boot, qstr pool bytes added) for one boot on the 64-bit
    port: from .py sources (or a ROMFS ``image``), or from the .mpy tree ``path``."""
    src = [path] if path else [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "boards")]
    k = _boot(ctx.micropython, SCRIPT, [variant] + ([image] if image else []), src, must=True)
    return k["heap_after_boot"], k["qstr"]


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
                        "B", "", "64-bit objects; constant tables still in RAM"))
    rows.append(Row("ram", "firmware bytecode (.mpy files of the pico image)", code, "B", "",
                    "ROMFS image %d B; flash, not heap, when frozen or in ROMFS" % size))
    return rows
