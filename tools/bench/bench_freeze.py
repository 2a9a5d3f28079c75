"""RAM the whole board application keeps after boot (app.build on the pico
board file over the chip emulators, settings on a fake flash, 3 s running),
on the 64-bit pip unix port three ways: firmware as .py (compiled on the
device), as .mpy files (bytecode loaded into the heap) and from a ROMFS image
(bytecode runs in place from flash).  The qstr pool is measured on its own.

The figure the goal is about is the board's: a 32-bit MicroPython with the
firmware frozen in by firmware/manifest.py (tools/upy32.py builds one, a unix
port with -m32), so objects have the RP2040's layout and qstrs, bytecode,
raw-code descriptors and constant tables stay in flash."""
import os
import subprocess

from tools.bench.common import ROOT, Row, parse_kv, qstr_bytes

SCRIPT = "tools/bench/upy/app_heap.py"


SLAVE_SCRIPT = "tools/bench/upy/slave_heap.py"
# (label, script, args): the apps measured on the 32-bit build
BOARDS32 = (("16S single board", SCRIPT, ["single"]), ("256S master", SCRIPT, ["master"]),
            ("32S single board (two AFEs)", SCRIPT, ["single32"]),
            ("16S slave module", SLAVE_SCRIPT, []))


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


def _smallest_heap(exe, script, args):
    """Smallest -X heapsize (1 KB steps) in which the frozen app boots whole
    and runs 3 s - the peak need, fragmentation included - minus the heap
    the test rig (emulated chips, fake flash) holds before the app starts."""
    lo, hi = 8, 1024             # lo fails, hi boots
    k = _boot(exe, script, args, [".frozen"], "%dK" % hi)
    if k is None:
        raise RuntimeError("frozen %s does not boot in %d KB" % (script, hi))
    base = k["baseline"]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        kk = _boot(exe, script, args, [".frozen"], "%dK" % mid)
        if kk is not None:
            hi, base = mid, kk["baseline"]
        else:
            lo = mid
    return hi * 1024 - base


def _board32(ctx, rows):
    """The board's figures: 32-bit objects, firmware frozen in (the goal) and
    from the same ROMFS image `make flash --romfs` writes."""
    from tools import upy32
    try:
        frozen, ver = upy32.build(frozen=True)
        plain, _ver = upy32.build(frozen=False)
    except upy32.Unavailable as e:
        rows.append(Row("ram", "app heap after boot, frozen 32-bit", None, "B", "<= 65536",
                        "not measured: %s" % str(e).splitlines()[0]))
        return
    img = ctx.pico_image()[2]
    for label, script, args in BOARDS32:
        k = _boot(frozen, script, args, [".frozen"], must=True)
        rows.append(Row("ram", "app heap after boot, %s, frozen 32-bit" % label,
                        k["heap_after_boot"], "B", "<= 65536",
                        "MicroPython %s -m32, firmware/manifest.py frozen in" % ver))
        rows.append(Row("ram", "  smallest heap it boots in, %s" % label,
                        _smallest_heap(frozen, script, args), "B", "",
                        "peak need incl. fragmentation (1 KB steps, rig's own heap taken off)"))
        if script == SCRIPT and args[0] != "single32":
            k = _boot(frozen, script, args + ["--poll"], [".frozen"], must=True)
            rows.append(Row("ram", "  after a PC tool's first poll, %s" % label,
                            k["heap_after_boot"], "B", "",
                            "register blocks are imported when a request first touches them"))
    for label, script, args in BOARDS32[:2]:
        k = _boot(plain, script, args + [img], [], must=True)
        rows.append(Row("ram", "app heap after boot, %s, ROMFS 32-bit" % label,
                        k["heap_after_boot"], "B", "",
                        "the pico ROMFS image; %d B of it the qstr pool" % k["qstr"]))


def run(ctx):
    rows = []
    _board32(ctx, rows)
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
