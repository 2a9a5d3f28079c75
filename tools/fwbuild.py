"""Build the board image a user flashes: MicroPython v1.27.0 rp2 with the BMS
frozen in, as ``build/<board>/firmware.uf2`` (and ``.elf``, ``.bin``).

    python -m tools.fwbuild --board pico           # build (cached, incremental)
    python -m tools.fwbuild --board pico --check   # say what is missing, build nothing
    python -m tools.fwbuild --sources              # print the pinned sources

What goes in:
- MicroPython v1.27.0 and the submodules the rp2 port needs, at the commits
  in ``SOURCES`` below.  Taken from ``../shared/vendor/`` (an offline copy,
  SHA-256 checked against ``ARCHIVE_SHA256``); without it, cloned from the
  public repositories at the same commits (needs git and network).
- The project's board definition ``boards/rp2/BMS_PICO`` (RPI_PICO plus the
  BMS flash layout: 704 KB firmware, 576 KB ROMFS, 768 KB littlefs).
- A frozen manifest made per board (``build/<board>/manifest.py``): the
  project's ``firmware/manifest.py`` plus ``boot.py``, ``main.py`` and
  ``board_image.py`` (the board name), so a freshly flashed Pico runs the BMS
  with nothing on its filesystem.  ``config.py`` on the filesystem still
  chooses the board and options (app.board_name).

Toolchain: arm-none-eabi GCC with newlib, cmake, make and a host C compiler.
When missing and running as root with apt-get, they are installed by Debian
package name (``APT_PACKAGES``); otherwise the build stops and names what is
missing.  Everything else lives under ``build/rp2/`` (sources, picotool,
the port's build tree), so a second build only recompiles what changed.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile

from tools import flashlayout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "build", "rp2")
SRC = os.path.join(WORK, "src")
MPY_DIR = os.path.join(SRC, "micropython-1.27.0")
PICOTOOL_SRC = os.path.join(SRC, "picotool-2.1.1")
PICOTOOL_DIR = os.path.join(WORK, "picotool")
BOARD_DIR = os.path.join(ROOT, "boards", "rp2", "BMS_PICO")
VENDOR = os.path.join(os.path.dirname(ROOT), "shared", "vendor")
ARCHIVE = "rp2-sources-mp1.27.0.tar.xz"
ARCHIVE_SHA256 = "c43930a919e6568472b89a54171c07ee5e0225db9ebdb4cdb51d33739ed10b16"

# (folder under SRC, public repository, commit, tag).  These are the
# submodule commits MicroPython v1.27.0 pins; the vendor archive holds the
# same trees, pruned to what the rp2 port needs.
SOURCES = (
    ("micropython-1.27.0", "https://github.com/micropython/micropython",
     "78ff170de9e32c79db6e64d3e33d2bd60002bdcd", "v1.27.0"),
    ("micropython-1.27.0/lib/pico-sdk", "https://github.com/raspberrypi/pico-sdk",
     "9a4113fbbae65ee82d8cd6537963bc3d3b14bcca", "2.1.1"),
    ("micropython-1.27.0/lib/tinyusb", "https://github.com/hathach/tinyusb",
     "aa0fc2e08f1c2dd6f026a431e8989357fbb4c5bf", ""),
    ("micropython-1.27.0/lib/micropython-lib", "https://github.com/micropython/micropython-lib",
     "6ae440a8a144233e6e703f6759b7e7a0afaa37a4", ""),
    ("micropython-1.27.0/lib/mbedtls", "https://github.com/Mbed-TLS/mbedtls",
     "107ea89daaefb9867ea9121002fbbdf926780e98", "v3.6.2"),
    ("picotool-2.1.1", "https://github.com/raspberrypi/picotool",
     "de8ae5ac334e1126993f72a5c67949712fd1e1a4", "2.1.1"),
)

# Board name (app.board_name) -> rp2 board definition.  The master, the
# 32-cell single board and the slave module are the same Pico; only the
# default board name frozen into the image differs.
BOARDS = {
    "pico": BOARD_DIR,
    "pico32": BOARD_DIR,
    "slave_module": BOARD_DIR,
}
# Why the others cannot be built from these sources (printed on request).
NOT_BUILDABLE = {
    "pico_w": "the Pico W port needs cyw43-driver, lwip and btstack, which the pinned "
              "offline sources do not carry (../shared/vendor/README.md); build RPI_PICO_W "
              "from a full MicroPython v1.27.0 checkout with FROZEN_MANIFEST=firmware/manifest.py",
    "esp32_devkit": "the ESP32 image needs ESP-IDF, which is not among the pinned sources",
}

# Debian package -> a file it provides (what the check looks for).
APT_PACKAGES = (
    ("gcc-arm-none-eabi", "arm-none-eabi-gcc"),
    ("libnewlib-arm-none-eabi", "/usr/lib/arm-none-eabi/include/stdio.h"),
    ("libstdc++-arm-none-eabi-newlib", "/usr/lib/arm-none-eabi/include/c++"),
    ("cmake", "cmake"),
    ("build-essential", "gcc"),
    ("make", "make"),
)
FIRMWARE_MAX = flashlayout.FIRMWARE_MAX   # the firmware region of boards/rp2/BMS_PICO


class BuildError(Exception):
    """The image cannot be built here; the message says why."""


def _log(msg):
    print("fwbuild: " + msg, file=sys.stderr, flush=True)


def _run(cmd, cwd=None, env=None, quiet=True, log=None):
    """Run a build step; on failure show the tail of its output."""
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "w") as f:
            f.write(out.stdout)
    if out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-40:])
        raise BuildError("%s failed (exit %d):\n%s" % (" ".join(cmd[:3]), out.returncode, tail))
    if not quiet:
        sys.stderr.write(out.stdout)
    return out.stdout


# ---- toolchain --------------------------------------------------------------

def _have(probe):
    return os.path.exists(probe) if probe.startswith("/") else shutil.which(probe) is not None


def missing_tools():
    return [pkg for pkg, probe in APT_PACKAGES if not _have(probe)]


def ensure_toolchain(install=True):
    missing = missing_tools()
    if not missing:
        return
    can_apt = shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
    if not (install and can_apt):
        raise BuildError("missing build tools: %s. Install them (Debian/Ubuntu: "
                         "sudo apt-get install %s) and run again."
                         % (", ".join(missing), " ".join(missing)))
    _log("installing " + " ".join(missing) + " with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing
    try:
        _run(cmd, env=env)
    except BuildError:
        _run(["apt-get", "update", "-q"], env=env)
        _run(cmd, env=env)
    still = missing_tools()
    if still:
        raise BuildError("apt-get did not provide: " + ", ".join(still))


# ---- sources ----------------------------------------------------------------

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp_ok():
    try:
        with open(os.path.join(SRC, ".stamp")) as f:
            return f.read().strip() == ARCHIVE_SHA256
    except OSError:
        return False


def ensure_sources(vendor=VENDOR):
    """Unpack the pinned sources into build/rp2/src (once)."""
    if _stamp_ok():
        return
    archive = os.path.join(vendor, ARCHIVE)
    if os.path.exists(archive):
        got = _sha256(archive)
        if got != ARCHIVE_SHA256:
            raise BuildError("%s: SHA-256 %s, expected %s" % (archive, got, ARCHIVE_SHA256))
        _log("unpacking " + archive)
        if os.path.exists(SRC):
            shutil.rmtree(SRC)
        tmp = SRC + ".part"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        with tarfile.open(archive) as t:
            try:
                t.extractall(tmp, filter="data")
            except TypeError:  # Python without extraction filters
                t.extractall(tmp)
        # The archive holds one top folder (rp2-sources/).
        top = os.path.join(tmp, "rp2-sources")
        os.rename(top if os.path.isdir(top) else tmp, SRC)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    else:
        _clone_sources()
    with open(os.path.join(SRC, ".stamp"), "w") as f:
        f.write(ARCHIVE_SHA256 + "\n")


def _clone_sources():
    """The same commits from their public repositories (a machine with internet)."""
    if not shutil.which("git"):
        raise BuildError("no %s beside the project and no git to fetch the pinned "
                         "sources (python -m tools.fwbuild --sources lists them)" % ARCHIVE)
    _log("no vendor archive: cloning the pinned commits (network needed)")
    os.makedirs(SRC, exist_ok=True)
    for folder, url, commit, _tag in SOURCES:
        dest = os.path.join(SRC, folder)
        if os.path.isdir(os.path.join(dest, ".git")):
            continue
        if os.path.exists(dest):
            shutil.rmtree(dest)
        try:
            _run(["git", "init", "-q", dest])
            _run(["git", "-C", dest, "fetch", "-q", "--depth", "1", url, commit])
            _run(["git", "-C", dest, "checkout", "-q", "FETCH_HEAD"])
        except BuildError as e:
            raise BuildError("cannot fetch %s at %s: %s" % (url, commit, e))


# ---- build steps ------------------------------------------------------------

def ensure_picotool(jobs):
    """pico-sdk 2.x wants picotool at configure time; build it once, offline."""
    cfg = os.path.join(PICOTOOL_DIR, "picotool", "picotoolConfig.cmake")
    if os.path.exists(cfg):
        return
    _log("building picotool")
    bdir = os.path.join(WORK, "picotool-build")
    os.makedirs(bdir, exist_ok=True)
    _run(["cmake", "-S", PICOTOOL_SRC, "-B", bdir,
          "-DPICO_SDK_PATH=" + os.path.join(MPY_DIR, "lib", "pico-sdk"),
          "-DPICOTOOL_NO_LIBUSB=1", "-DPICOTOOL_FLAT_INSTALL=1",
          "-DCMAKE_INSTALL_PREFIX=" + PICOTOOL_DIR],
         log=os.path.join(WORK, "picotool-configure.log"))
    _run(["cmake", "--build", bdir, "-j", str(jobs)], log=os.path.join(WORK, "picotool-build.log"))
    _run(["cmake", "--install", bdir], log=os.path.join(WORK, "picotool-install.log"))


def ensure_mpy_cross(jobs):
    if os.path.exists(os.path.join(MPY_DIR, "mpy-cross", "build", "mpy-cross")):
        return
    _log("building mpy-cross")
    _run(["make", "-C", os.path.join(MPY_DIR, "mpy-cross"), "-j", str(jobs)],
         log=os.path.join(WORK, "mpy-cross.log"))


def board_manifest(board):
    """The frozen manifest for one board: the project's, plus the entry files."""
    out = os.path.join(ROOT, "build", board)
    os.makedirs(out, exist_ok=True)
    img = os.path.join(out, "board_image.py")
    _write_if_changed(img, "# Frozen into the %s image by tools/fwbuild.py: the board a "
                      "freshly flashed\n# Pico runs when config.py names none.\nBOARD = %r\n"
                      % (board, board))
    fw = os.path.join(ROOT, "firmware")
    text = ("# Generated by tools/fwbuild.py for board %r\n"
            "include(%r)\n"
            "module('boot.py', base_path=%r, opt=2)\n"
            "module('main.py', base_path=%r, opt=2)\n"
            "module('board_image.py', base_path=%r, opt=2)\n"
            % (board, os.path.join(fw, "manifest.py"), fw, fw, out))
    path = os.path.join(out, "manifest.py")
    _write_if_changed(path, text)
    return path


def _write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def build(board, jobs=None, install=True, vendor=VENDOR):
    """Build (or bring up to date) build/<board>/firmware.uf2; returns its path."""
    if board in NOT_BUILDABLE:
        raise BuildError("board %s: %s" % (board, NOT_BUILDABLE[board]))
    if board not in BOARDS:
        raise BuildError("unknown board %r (one of: %s)" % (board, ", ".join(sorted(BOARDS))))
    jobs = jobs or os.cpu_count() or 2
    ensure_toolchain(install)
    ensure_sources(vendor)
    ensure_picotool(jobs)
    ensure_mpy_cross(jobs)
    manifest = board_manifest(board)
    bdir = os.path.join(WORK, "build-" + board)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = "-Dpicotool_DIR=" + os.path.join(PICOTOOL_DIR, "picotool")
    _log("building the %s image (log: %s)" % (board, os.path.join(bdir, "make.log")))
    os.makedirs(bdir, exist_ok=True)
    _run(["make", "-C", os.path.join(MPY_DIR, "ports", "rp2"), "-j", str(jobs),
          "BOARD_DIR=" + BOARDS[board], "BUILD=" + bdir, "FROZEN_MANIFEST=" + manifest],
         env=env, log=os.path.join(bdir, "make.log"))
    out = os.path.join(ROOT, "build", board)
    for ext in ("uf2", "elf", "bin"):
        src = os.path.join(bdir, "firmware." + ext)
        dst = os.path.join(out, "firmware." + ext)
        if not os.path.exists(dst) or os.path.getmtime(src) > os.path.getmtime(dst) \
                or os.path.getsize(src) != os.path.getsize(dst):
            shutil.copyfile(src, dst)
    size = os.path.getsize(os.path.join(out, "firmware.bin"))
    if size > FIRMWARE_MAX:
        raise BuildError("the %s image is %d bytes: more than the %d-byte firmware region "
                         "of boards/rp2/BMS_PICO; it would overwrite the ROMFS partition"
                         % (board, size, FIRMWARE_MAX))
    return os.path.join(out, "firmware.uf2")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="pico")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--check", action="store_true", help="report what is missing and stop")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--sources", action="store_true", help="print the pinned sources")
    a = ap.parse_args(argv)
    if a.sources:
        for folder, url, commit, tag in SOURCES:
            print("%-42s %s %s %s" % (folder, url, commit, tag))
        return 0
    if a.check:
        why = []
        if a.board in NOT_BUILDABLE:
            why.append(NOT_BUILDABLE[a.board])
        why += ["missing: " + p for p in missing_tools()]
        if not os.path.exists(os.path.join(VENDOR, ARCHIVE)) and not _stamp_ok():
            why.append("no %s (sources will be cloned)" % os.path.join(VENDOR, ARCHIVE))
        print("\n".join(why) or "ok")
        return 1 if why else 0
    try:
        uf2 = build(a.board, a.jobs, install=not a.no_install)
    except BuildError as e:
        _log(str(e))
        return 2
    print(uf2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
