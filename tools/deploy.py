"""Development install: the .mpy files for one board, copied with mpremote
onto a stock MicroPython (the product is the UF2: tools/flash.py).

    python -m tools.deploy --board pico --port /dev/ttyACM0   (make flash-mpy)
    python -m tools.deploy --board pico --dry-run

Steps: compile every firmware module with mpy-cross for the board's
architecture (tools/build.py: armv6m for RP2040, xtensawin for ESP32) into
build/<board>/mpy/, keep main.py as source (MicroPython only runs main.py as
source), add the selected board file and what it imports, and write a
config.py naming the board.  The plan - every local file, its size and its
path on the board - is printed; with --dry-run nothing else happens.

On the board, a stale foo.py shadows a new foo.mpy (MicroPython looks for
.py first), so the copy step first removes any .py twin of every .mpy it
installs, then copies, then soft-resets.  ``--keep-config`` leaves an
existing config.py on the board alone.

``--romfs IMAGE`` packs the compiled modules into a ROMFS image instead
(MicroPython >= 1.25 built with MICROPY_VFS_ROM): imports then run the
bytecode in place from flash, as frozen modules do, so the heap keeps only
the objects (``make bench`` measures both ways; the whole master does not
fit an RP2040's heap as plain .mpy files, see docs/deploy.md).  Only
main.py and config.py go to the filesystem, and the image is written with
``mpremote romfs deploy``.
"""
import argparse
import os
import shutil
import subprocess
import sys

from tools import build as B

ROOT = B.ROOT
BOARDS = {
    # name: (arch, board files it needs besides __init__/common)
    "pico": ("armv6m", ["pico"]),
    "pico_w": ("armv6m", ["pico", "pico_w"]),
    "pico32": ("armv6m", ["pico", "pico32"]),
    "esp32_devkit": ("xtensawin", ["esp32_devkit"]),
    "esp32": ("xtensawin", ["esp32_devkit"]),
    "slave_module": ("armv6m", ["slave_module"]),
    "slave": ("armv6m", ["slave_module"]),
}
ALIASES = {"esp32": "esp32_devkit", "slave": "slave_module"}
# In the tree (host tests, the AFE bench, a board of one's own) but wired by
# no board file: not copied to a board, not in its ROMFS application package
# (the pico application fills most of its 284 KB slot).
NOT_ON_BOARDS = ("drivers/ltc681x.py",)


def plan(board, out):
    """Compile and return [(local, remote)] in copy order."""
    if board not in BOARDS:
        raise SystemExit("unknown board %r (one of %s)" % (board, ", ".join(sorted(BOARDS))))
    name = ALIASES.get(board, board)
    arch, needed = BOARDS[board]
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    keep = set(["boards/__init__.py", "boards/common.py"] +
               ["boards/%s.py" % n for n in needed])
    files = []
    for rel, dst in B.compile_all(out, arch):
        if rel == "manifest.py" or rel in NOT_ON_BOARDS or \
                (rel.startswith("boards/") and rel not in keep):
            os.remove(dst)
            continue
        if dst is None:  # kept as source (main.py)
            src = os.path.join(ROOT, "firmware", rel)
            dst = os.path.join(out, rel)
            shutil.copyfile(src, dst)
            files.append((dst, rel))
        else:
            files.append((dst, rel[:-3] + ".mpy"))
    # Drop directories emptied of unused board files.
    for d, _subs, fs in os.walk(out, topdown=False):
        if not fs and not os.listdir(d):
            os.rmdir(d)
    cfg = os.path.join(out, "config.py")
    with open(cfg, "w") as f:
        f.write('# Written by tools/deploy.py; edit on the board to change options.\n')
        f.write('BOARD = "%s"\n' % name)
        f.write('OPTS = {}  # see boards/common.py DEFAULTS\n')
    files.append((cfg, "config.py"))
    files.sort(key=lambda lr: (lr[1] == "main.py", lr[1]))  # main.py last
    return files


FS_ONLY = ("main.py", "boot.py", "config.py")  # must stay on the writable filesystem


def romfs_image(files, path):
    """Pack the compiled modules of a plan into a ROMFS image at ``path``;
    returns (image bytes, the plan entries that stay on the filesystem)."""
    import contextlib
    import io
    import tempfile
    from mpremote.romfs import make_romfs
    keep = []
    with tempfile.TemporaryDirectory() as d:
        for local, remote in files:
            if remote in FS_ONLY:
                keep.append((local, remote))
                continue
            dst = os.path.join(d, remote)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(local, dst)
        with contextlib.redirect_stdout(io.StringIO()):  # make_romfs prints the tree
            img = make_romfs(d, mpy_cross=False)
    with open(path, "wb") as f:
        f.write(img)
    return len(img), keep


def dirs_of(files):
    out = []
    for _l, r in files:
        parts = r.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in out:
                out.append(d)
    return out


def mpremote():
    cand = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return cand if os.path.exists(cand) else "mpremote"


def commands(port, files, keep_config=False, in_rom=()):
    """The mpremote invocations, in order (each a list of argv).

    ``in_rom``: modules now in the ROMFS image; any .py/.mpy copy of them on
    the filesystem would shadow it ('' is first on sys.path), so it goes.
    """
    base = [mpremote(), "connect", port]
    cmds = []
    shadow = [r[:-4] + ".py" for _l, r in files if r.endswith(".mpy")]
    for r in in_rom:
        shadow += [r, r[:-4] + ".py"]
    script = ("import os\n"
              "def mk(d):\n"
              "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
              "for d in %r:\n    mk(d)\n"
              "for p in %r:\n"
              "    try:\n        os.remove(p)\n    except OSError:\n        pass\n"
              % (dirs_of(files), shadow))
    cmds.append(base + ["exec", script])
    cp = []
    for local, remote in files:
        if keep_config and remote == "config.py":
            continue
        if cp:
            cp.append("+")
        cp += ["fs", "cp", local, ":" + remote]
    cmds.append(base + cp)
    cmds.append(base + ["reset"])
    return cmds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="pico")
    ap.add_argument("--port", default=None)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep-config", action="store_true")
    ap.add_argument("--romfs", default=None, metavar="IMAGE",
                    help="pack the modules into a ROMFS image (firmware with VfsRom)")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(ROOT, "build", a.board, "mpy")  # beside the UF2, never over it
    files = plan(a.board, out)
    romfs = None
    in_rom = ()
    if a.romfs:
        in_rom = [r for _l, r in files if r not in FS_ONLY]
        size, files = romfs_image(files, a.romfs)
        romfs = [mpremote(), "connect", a.port or "PORT", "romfs", "deploy", a.romfs]
        print("romfs image %s: %d bytes (modules run from flash)" % (a.romfs, size))
    total = 0
    print("board %s (%s): %d files from %s" % (a.board, BOARDS[a.board][0], len(files),
                                                os.path.relpath(out, ROOT)))
    for local, remote in files:
        size = os.path.getsize(local)
        total += size
        print("  %-44s -> :%-36s %6d B" % (os.path.relpath(local, ROOT), remote, size))
    print("total %d bytes" % total)
    cmds = commands(a.port or "PORT", files, a.keep_config, in_rom)
    if romfs:
        cmds.insert(0, romfs)
    if a.dry_run:
        print("dry run: would run")
        for c in cmds:
            shown = c if c[3] != "exec" else c[:4] + ["<mkdir %d dirs, remove .py twins>"
                                                       % len(dirs_of(files))]
            print("  " + " ".join(shown))
        return 0
    if not a.port:
        raise SystemExit("--port is required (or use --dry-run)")
    for c in cmds:
        r = subprocess.run(c)
        if r.returncode != 0:
            raise SystemExit("mpremote failed: %s" % " ".join(c[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
