"""Build a firmware update package: ustar archive + SHA-256 + optional HMAC signature.

    python tools/fwpkg.py --out fw.tar [--key-file device.key] [--mpy]

Writes ``fw.tar`` and ``fw.tar.sig`` (JSON: size, sha256, signature hex) that
``bmsctl update`` sends with the package.
"""
import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile

import tools  # noqa: F401
from bms.update import sign

from tools import FIRMWARE


def build_tar(src=FIRMWARE, mpy=False):
    """Archive bytes of the firmware tree (optionally mpy-cross compiled)."""
    if mpy:
        from tools.build import compile_all
        with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:   # not left behind per run
            compile_all(tmp)
            return build_tar(tmp)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            for f in sorted(files):
                if f.endswith((".py", ".mpy")):
                    full = os.path.join(dirpath, f)
                    info = tar.gettarinfo(full, arcname=os.path.relpath(full, src))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
    return buf.getvalue()


def tar_of(files):
    """Archive bytes of ``{name: bytes}`` (tests, benchmarks, hand-made packages)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for n, data in sorted(files.items()):
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def describe(pkg, key=None):
    digest = hashlib.sha256(pkg).digest()
    meta = {"size": len(pkg), "sha256": digest.hex()}
    if key is not None:
        meta["signature"] = sign(key, len(pkg), digest).hex()
    return meta


def write(path, pkg, key=None):
    """``path`` and its ``path.sig`` (JSON: size, sha256, signature hex)."""
    path = str(path)
    with open(path, "wb") as f:
        f.write(pkg)
    with open(path + ".sig", "w") as f:
        json.dump(describe(pkg, key), f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--src", default=FIRMWARE)
    ap.add_argument("--key-file")
    ap.add_argument("--mpy", action="store_true", help="ship .mpy (mpy-cross) instead of .py")
    a = ap.parse_args(argv)
    pkg = build_tar(a.src, a.mpy)
    key = open(a.key_file, "rb").read() if a.key_file else None
    write(a.out, pkg, key)
    print("%s: %d bytes, sha256 %s" % (a.out, len(pkg), describe(pkg)["sha256"]))


if __name__ == "__main__":
    main()
