"""A 32-bit MicroPython unix port with the firmware frozen in, for `make bench`.

The pip `micropython` binary is a 64-bit unix port: its objects are twice an
RP2040's size and it cannot freeze modules.  This builds MicroPython itself
(Debian's source package, checksum-pinned) as a 32-bit unix port (`-m32`)
with firmware/manifest.py frozen in, so "heap after boot" is measured on the
same object layout and with the same code-in-flash as the board image: qstrs,
bytecode, raw-code descriptors and constant tables stay out of the heap.

    python -m tools.upy32            # build (cached) and print the binary's path
    python -m tools.upy32 --check    # print why it cannot be built here, if so

Needs a C compiler that links `-m32` (Debian: gcc-multilib; installed with
apt-get when run as root) and the Debian archive (a package registry).
Everything lives under build/upy32/ (about 60 MB).
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "build", "upy32")
POOL = "http://deb.debian.org/debian/pool/main/m/micropython/"
# (version, orig tarball, sha256 from the package's .dsc); first that downloads wins.
SOURCES = (
    ("1.26.1", "micropython_1.26.1+ds.orig.tar.xz",
     "f5ad2ec89d3e921f753d448955af98b6005655f84ba26087dde6ba0e8d062f34"),
    ("1.25.0", "micropython_1.25.0+ds.orig.tar.xz",
     "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea"),
)
# What the board build leaves out or the Debian source lacks (its +ds tarball
# has no lib/ submodules): nothing the firmware uses.
MAKE_OPTS = ("VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0",
             "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "MICROPY_SSL_AXTLS=0")
PORT_LINE = 'include("$(PORT_DIR)/boards/manifest.py")'


class Unavailable(Exception):
    """The 32-bit build cannot be made on this machine (the reason says why)."""


def _log(msg):
    print("upy32: " + msg, file=sys.stderr)


def _fetch():
    """Path of the extracted source tree (downloaded and verified once)."""
    os.makedirs(WORK, exist_ok=True)
    errors = []
    for ver, name, sha in SOURCES:
        tree = os.path.join(WORK, "micropython-" + ver)
        if os.path.exists(os.path.join(tree, ".extracted")):
            return ver, tree
        tar = os.path.join(WORK, name)
        if not os.path.exists(tar):
            try:
                _log("downloading " + POOL + name)
                with urllib.request.urlopen(POOL + name, timeout=60) as r:
                    data = r.read()
            except OSError as e:
                errors.append("%s: %s" % (name, e))
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                errors.append("%s: sha256 mismatch" % name)
                continue
            with open(tar + ".part", "wb") as f:
                f.write(data)
            os.replace(tar + ".part", tar)
        with tarfile.open(tar) as t:
            try:
                t.extractall(WORK, filter="data")
            except TypeError:  # Python without extraction filters
                t.extractall(WORK)
        # The +ds tarball drops submodules; the frozen-manifest rule only
        # checks that micropython-lib exists (the firmware requires nothing from it).
        lib = os.path.join(tree, "lib", "micropython-lib")
        os.makedirs(lib, exist_ok=True)
        open(os.path.join(lib, "README.md"), "a").close()
        open(os.path.join(tree, ".extracted"), "w").close()
        return ver, tree
    raise Unavailable("no MicroPython source: " + "; ".join(errors))


def _links_m32():
    src = os.path.join(WORK, "m32.c")
    with open(src, "w") as f:
        f.write("int main(void){return sizeof(void*)!=4;}\n")
    r = subprocess.run(["gcc", "-m32", src, "-o", src[:-2]], capture_output=True)
    return r.returncode == 0


def _ensure_m32():
    if shutil.which("gcc") is None:
        raise Unavailable("no gcc")
    if _links_m32():
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        _log("installing gcc-multilib (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-q", "gcc-multilib"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
        if _links_m32():
            return
    raise Unavailable("gcc cannot link -m32 (install gcc-multilib)")


def unix_manifest(path):
    """firmware/manifest.py for the unix port: the board manifest's port line
    becomes the asyncio package (what rp2/esp32 freeze and the firmware uses),
    relative base paths become absolute."""
    with open(os.path.join(ROOT, "firmware", "manifest.py")) as f:
        text = f.read()
    if PORT_LINE not in text:
        raise Unavailable("firmware/manifest.py no longer has " + PORT_LINE)
    text = text.replace(PORT_LINE, 'include("$(MPY_DIR)/extmod/asyncio")')
    text = text.replace('base_path=".."', 'base_path="%s"' % ROOT)
    text = text.replace('base_path="."', 'base_path="%s"' % os.path.join(ROOT, "firmware"))
    with open(path, "w") as f:
        f.write(text)


def build(frozen=True):
    """Path of the 32-bit binary (firmware frozen in when ``frozen``); make
    rebuilds only what changed.  Raises Unavailable with the reason."""
    ver, tree = _fetch()
    _ensure_m32()
    port = os.path.join(tree, "ports", "unix")
    jobs = "-j%d" % (os.cpu_count() or 2)
    if not os.path.exists(os.path.join(tree, "mpy-cross", "build", "mpy-cross")):
        _run(["make", "-C", os.path.join(tree, "mpy-cross"), jobs])
    name = "frozen" if frozen else "plain"
    man = os.path.join(WORK, "manifest_%s.py" % name)
    if frozen:
        unix_manifest(man)
    else:
        with open(man, "w") as f:
            f.write('include("$(MPY_DIR)/extmod/asyncio")\n')
    _run(["make", "-C", port, jobs, "BUILD=build-" + name, "PROG=micropython-" + name,
          "FROZEN_MANIFEST=" + man] + list(MAKE_OPTS))
    exe = os.path.join(port, "build-" + name, "micropython-" + name)
    if not os.path.exists(exe):
        exe = os.path.join(port, "micropython-" + name)
    return exe, ver


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise Unavailable("build failed: %s\n%s" % (" ".join(cmd[:3]), (r.stdout + r.stderr)[-2000:]))


def main(argv):
    try:
        exe, ver = build(frozen="--plain" not in argv)
    except Unavailable as e:
        print("unavailable:", e)
        return 1 if "--check" not in argv else 0
    print(exe)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
