"""Flash the board image (``make flash``): the UF2 from ``tools/fwbuild``, then
``config.py``.

    python -m tools.flash --board pico                        # BOOTSEL drive or picotool
    python -m tools.flash --board pico --port /dev/ttyACM0    # a board running MicroPython
    python -m tools.flash --board pico --dry-run              # what it would do

How the UF2 gets onto the chip, first that applies:
1. ``--drive DIR`` or a mounted RPI-RP2 drive (the Pico held in BOOTSEL
   while plugged in; found under /media, /run/media, /mnt, /Volumes by its
   INFO_UF2.TXT): the UF2 is copied onto it, the chip reboots into it.
2. ``picotool`` on PATH (a build with USB support): ``picotool load -x -f``,
   which also reboots a running MicroPython board into BOOTSEL first.
3. ``--port``: the board runs MicroPython; ``mpremote ... bootloader``
   reboots it into BOOTSEL, then the drive is awaited as in 1.

Then, with ``--port``, ``config.py`` goes onto the filesystem unless the
board has one already (``--config`` replaces it): ``BOARD`` and ``OPTS``.
The image already names its board (``board_image.py`` frozen in), so a
Pico runs the BMS straight after the copy even without it.

The flash filesystem (settings, logs) survives a UF2 copy: the image covers
the firmware region only (boards/rp2/BMS_PICO: the first 768 KB).
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

from tools import fwbuild

ROOT = fwbuild.ROOT
DRIVE_GLOBS = ("/media/*/RPI-RP2", "/media/RPI-RP2", "/run/media/*/RPI-RP2", "/mnt/RPI-RP2",
               "/Volumes/RPI-RP2")


class FlashError(Exception):
    pass


def find_drive(globs=DRIVE_GLOBS):
    for pattern in globs:
        for d in sorted(glob.glob(pattern)):
            if os.path.isfile(os.path.join(d, "INFO_UF2.TXT")):
                return d
    return None


def copy_to_drive(uf2, drive):
    """Copy the UF2 onto a BOOTSEL drive; the chip reboots when the last block lands."""
    info = open(os.path.join(drive, "INFO_UF2.TXT")).read()
    if "RP2" not in info:
        raise FlashError("%s is not an RP2040 BOOTSEL drive:\n%s" % (drive, info))
    dst = os.path.join(drive, os.path.basename(uf2))
    with open(uf2, "rb") as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        try:
            os.fsync(out.fileno())
        except OSError:
            pass   # the drive may already be gone: the chip rebooted
    return dst


def mpremote():
    cand = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return cand if os.path.exists(cand) else "mpremote"


def config_text(board, opts=None):
    return ("# Written by tools/flash.py; edit on the board to change options\n"
            "# (boards/common.py DEFAULTS lists OPTS; app.py the other names).\n"
            "BOARD = %r\nOPTS = %r\n" % (board, opts or {}))


def plan(board, port=None, drive=None, have_picotool=None, config=False):
    """The steps, as (what, argv or path) pairs; nothing runs here."""
    uf2 = os.path.join(ROOT, "build", board, "firmware.uf2")
    steps = [("build", ["python", "-m", "tools.fwbuild", "--board", board])]
    if have_picotool is None:
        have_picotool = shutil.which("picotool") is not None
    if drive:
        steps.append(("copy", drive))
    elif have_picotool:
        steps.append(("picotool", ["picotool", "load", "-x", uf2, "-f"]))
    elif port:
        steps.append(("bootloader", [mpremote(), "connect", port, "bootloader"]))
        steps.append(("copy", "RPI-RP2 drive (awaited)"))
    else:
        raise FlashError("no RPI-RP2 drive mounted, no picotool and no --port: hold BOOTSEL "
                         "while plugging the Pico in (it mounts as RPI-RP2), or give "
                         "--port /dev/ttyACM0 of a board running MicroPython")
    if port:
        # 'keep BOARD' (the board config.py names, which wins over the image's)
        # or 'write' (none there).
        script = ("import os\ntry:\n    os.stat('config.py')\n    b = ''\n"
                  "    try:\n        import config\n        b = getattr(config, 'BOARD', '')\n"
                  "    except Exception:\n        pass\n    print('keep', b or '')\n"
                  "except OSError:\n    print('write')\n")
        steps.append(("config", [mpremote(), "connect", port, "exec", script]
                      if not config else None))
    return uf2, steps


def _wait(pred, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = pred()
        if r:
            return r
        time.sleep(0.5)
    raise FlashError("timed out waiting for " + what)


def run(board, port=None, drive=None, config=False, opts=None, dry_run=False):
    drive = drive or find_drive()
    uf2, steps = plan(board, port, drive, config=config)
    if dry_run:
        for what, arg in steps:
            print("%-10s %s" % (what, " ".join(arg) if isinstance(arg, list) else arg or
                                "write config.py"))
        return 0
    uf2 = fwbuild.build(board)
    print("image: %s (%d bytes)" % (os.path.relpath(uf2, ROOT), os.path.getsize(uf2)))
    for what, arg in steps[1:]:
        if what == "copy":
            d = drive or _wait(find_drive, 30, "the RPI-RP2 drive after the bootloader reboot")
            print("copying to %s" % copy_to_drive(uf2, d))
        elif what in ("picotool", "bootloader"):
            r = subprocess.run(arg)
            if r.returncode != 0 and what == "picotool":
                raise FlashError("picotool failed (exit %d)" % r.returncode)
        elif what == "config":
            # The flashed board comes back as a USB serial port.
            _wait(lambda: os.path.exists(port), 30, port + " after flashing")
            write = True
            if arg is not None:
                out = subprocess.run(arg, capture_output=True, text=True)
                # Only the board's own "write" says there is no config.py: a
                # check that failed must not replace its OPTS (shunt, cells).
                words = out.stdout.split()
                if out.returncode != 0 or ("keep" not in words and "write" not in words):
                    raise FlashError("could not check for config.py on %s (%s): the image is "
                                     "flashed, config.py left as it is; --config writes a "
                                     "new one" % (port, (out.stderr or out.stdout).strip()
                                                  or "exit %d" % out.returncode))
                write = "write" in words
                kept = words[words.index("keep") + 1:] if "keep" in words else []
                if kept and kept[0] != board:
                    raise FlashError("config.py on the board says BOARD = %r: it runs the %s "
                                     "image as %s; --config replaces it with BOARD = %r"
                                     % (kept[0], board, kept[0], board))
            if write:
                path = os.path.join(ROOT, "build", board, "config.py")
                with open(path, "w") as f:
                    f.write(config_text(board, opts))
                subprocess.run([mpremote(), "connect", port, "fs", "cp", path, ":config.py",
                                "+", "reset"], check=True)
                print("config.py written (BOARD = %r)" % board)
            else:
                print("config.py on the board kept (--config replaces it)")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="pico")
    ap.add_argument("--port", default=None)
    ap.add_argument("--drive", default=None, help="the RPI-RP2 mount point")
    ap.add_argument("--config", action="store_true", help="replace config.py on the board")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    try:
        return run(a.board, a.port, a.drive, a.config, dry_run=a.dry_run)
    except (FlashError, fwbuild.BuildError) as e:
        print("flash: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
