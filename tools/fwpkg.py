"""Build a firmware update package, its SHA-256 and optional HMAC signature.

    python tools/fwpkg.py --romfs --board pico --out app.rom [--key-file device.key]
    python tools/fwpkg.py --out fw.tar [--key-file device.key] [--mpy]

``--romfs``: the ROMFS application package for boards with a ROMFS
partition (the product image, boards/rp2/BMS_PICO): a ``bms.romslot``
descriptor (magic, bytecode version read from the compiled files, image
size, image SHA-256) followed by a ROMFS image of the board's modules
compiled with mpy-cross (tools/deploy.plan; ``boot.py`` and ``main.py``
stay frozen, ``config.py`` on the filesystem).  The board writes the image
into its inactive ROMFS slot and runs the bytecode in place.

Without it: a ustar archive of the firmware tree for the file slots
``/fw/a|b`` (development installs on stock MicroPython, small patches).

Writes the package and ``<out>.sig`` (JSON: size, sha256, signature hex)
that ``bmsctl update`` sends with it.
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

from tools import FIRMWARE, flashlayout


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


def mpy_of(path):
    """The ``sys.implementation._mpy`` value (low 16 bits) a .mpy file needs."""
    with open(path, "rb") as f:
        h = f.read(4)
    if len(h) < 4 or h[0] != ord("M"):
        raise ValueError("%s is not a .mpy file" % path)
    return h[1] | (h[2] & 3) << 8 | (h[2] >> 2) << 10


# What a board's ROMFS application must hold: the modules its entry imports,
# directly or not (ENTRIES; None = the whole tree).  A slave module runs
# ``slave_main`` (the frozen main.py -> app.main dispatches to it on a
# slave board): its image is that closure, about a fifth of the tree, so a
# forward over CAN (~1.5 KB/s) takes a fifth of the time.  A package in
# /rom shadows the frozen one whole (``bms`` found in /rom is searched only
# there), so the closure includes every import in a function body too.
ENTRIES = {"slave_module": ("slave_main", "boards.slave_module"), "slave": None}
ENTRIES["slave"] = ENTRIES["slave_module"]
# The module a package's image must hold to be accepted (bms.romupdate ``entry``).
ENTRY_FILE = {"slave_module": "slave_main.mpy", "slave": "slave_main.mpy"}


def _imports(path):
    import ast
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out += [node.module + "." + a.name for a in node.names]
    return out


def closure(entries, roots=None):
    """Firmware-relative .py paths of ``entries`` and all they import (packages'
    ``__init__.py`` included), searched in firmware/ and the repository root."""
    roots = roots or (FIRMWARE, os.path.dirname(FIRMWARE))
    seen = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for root in roots:
            hit = None
            for cand in (os.path.join(root, *parts) + ".py",
                         os.path.join(root, *parts, "__init__.py")):
                if os.path.isfile(cand):
                    hit = cand
                    break
            if hit is None:
                continue
            rel = os.path.relpath(hit, root).replace(os.sep, "/")
            if rel not in seen:
                seen[rel] = hit
                todo += _imports(hit)
                for k in range(1, len(parts)):
                    todo.append(".".join(parts[:k]))     # the parent packages
            break
    return sorted(seen)


def romfs_image_of(board="pico", extra=None, only=None):
    """(ROMFS image bytes, mpy value) of a board's application.  ``extra``:
    {name: bytes} added to the image (tests: a label file, a config.py, a
    broken app.mpy); ``boot.py``/``main.py`` stay frozen and ``config.py``
    on the filesystem unless ``extra`` puts one in.  ``only``: entry modules
    whose import closure is the image (default ``ENTRIES[board]``; () = the
    whole compiled tree)."""
    import contextlib
    import shutil
    from mpremote.romfs import make_romfs
    from tools import deploy
    with tempfile.TemporaryDirectory(prefix="romapp-") as tmp:
        files = deploy.plan(board, os.path.join(tmp, "mpy"))
        only = ENTRIES.get(board) if only is None else only
        if only:
            keep = set(r[:-3] + ".mpy" for r in closure(only))
            files = [(loc, rem) for loc, rem in files if rem in keep]
        mpys = [loc for loc, rem in files if rem.endswith(".mpy")]
        mpy = mpy_of(mpys[0])
        tree = os.path.join(tmp, "tree")
        for loc, rem in files:
            if rem in deploy.FS_ONLY:
                continue
            dst = os.path.join(tree, rem)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(loc, dst)
        for name, data in (extra or {}).items():
            dst = os.path.join(tree, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as f:
                f.write(data)
        with contextlib.redirect_stdout(io.StringIO()):   # make_romfs prints the tree
            return make_romfs(tree, mpy_cross=False), mpy


def romfs_package(image, mpy):
    """Descriptor (64 bytes, bms.romslot) + image."""
    from bms import romslot
    d = romslot.pack_desc(mpy, len(image), hashlib.sha256(image).digest())
    return d + b"\xff" * (romslot.DESC_LEN - len(d)) + image


ROMFS_BASE = flashlayout.ROMFS_BASE      # boards/rp2/BMS_PICO: the ROMFS partition
ROMFS_BYTES = flashlayout.ROMFS_BYTES
_XIP = 0x10000000
_RP2040_FAMILY = 0xE48BFF56


def slot_image_bytes(partition=ROMFS_BYTES):
    """Room for an image in one ROMFS slot: half the partition (whole
    sectors, as bms.romslot.half) less the sector of its descriptor."""
    from bms import romslot
    return partition // 2 // romslot.SECTOR * romslot.SECTOR - romslot.SECTOR


def slot_a_bytes(pkg, partition=ROMFS_BYTES):
    """{flash offset in the partition: bytes} that install a package's image
    in ROMFS slot A with its descriptor (a factory install)."""
    from bms import romslot
    room = slot_image_bytes(partition)
    img = pkg[romslot.DESC_LEN:]
    desc = pkg[:romslot.DESC_LEN]
    if len(img) > room:
        # Past this the image would run into its own descriptor's sector.
        raise ValueError("the application image is %d bytes: more than the %d-byte ROMFS slot "
                         "(partition %d KB in boards/rp2/BMS_PICO/mpconfigboard.h)"
                         % (len(img), room, partition // 1024))
    return {0: img, room: desc}


def uf2_of(regions, base=ROMFS_BASE):
    """UF2 blocks (256 data bytes each) writing ``{offset: bytes}`` at
    ``base + offset``: flash it after (or appended to) the firmware UF2."""
    import struct
    pages = []
    for off, data in sorted(regions.items()):
        for i in range(0, len(data), 256):
            page = data[i:i + 256]
            pages.append((_XIP + base + off + i, page + b"\xff" * (256 - len(page))))
    out = bytearray()
    for n, (addr, page) in enumerate(pages):
        out += struct.pack("<IIIIIIII", 0x0A324655, 0x9E5D5157, 0x2000, addr, 256, n,
                           len(pages), _RP2040_FAMILY)
        out += page + bytes(476 - 256) + struct.pack("<I", 0x0AB16F30)
    return bytes(out)


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
    ap.add_argument("--romfs", action="store_true",
                    help="ROMFS application package (boards with a ROMFS partition)")
    ap.add_argument("--board", default="pico", help="with --romfs: the board's modules")
    ap.add_argument("--uf2", help="with --romfs: also write a UF2 that installs the image "
                    "in ROMFS slot A (factory install, after the firmware UF2)")
    a = ap.parse_args(argv)
    if a.romfs:
        img, mpy = romfs_image_of(a.board)
        pkg = romfs_package(img, mpy)
    else:
        pkg = build_tar(a.src, a.mpy)
    key = open(a.key_file, "rb").read() if a.key_file else None
    write(a.out, pkg, key)
    if a.romfs and a.uf2:
        with open(a.uf2, "wb") as f:
            f.write(uf2_of(slot_a_bytes(pkg)))
    print("%s: %d bytes, sha256 %s" % (a.out, len(pkg), describe(pkg)["sha256"]))


if __name__ == "__main__":
    main()
