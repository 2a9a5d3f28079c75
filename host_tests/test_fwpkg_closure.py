"""The slave module's ROMFS application is slave_main's import closure
(tools.fwpkg.closure): smaller than the whole tree, and whole - every module
in it imports under the MicroPython unix port with nothing but the closure
on the path (a package found in /rom is searched only there on the board)."""
import os
import shutil
import subprocess

import pytest

import tools
from tools import fwpkg


def test_slave_closure_holds_what_slave_main_imports_and_not_the_master():
    files = fwpkg.closure(fwpkg.ENTRIES["slave_module"])
    for need in ("slave_main.py", "slave/core.py", "slave/fw.py", "bms/romupdate.py",
                 "bms/romslot.py", "comms/can_ids.py", "boards/slave_module.py",
                 "bms/__init__.py", "slave/__init__.py", "comms/__init__.py"):
        assert need in files, need
    for master_only in ("app.py", "bms/soc.py", "bms/protection.py", "comms/modbus_rtu.py"):
        assert master_only not in files, master_only


def test_slave_image_is_a_fraction_of_the_whole_tree():
    img, _mpy = fwpkg.romfs_image_of("slave_module")
    whole, _m = fwpkg.romfs_image_of("slave_module", only=())
    assert len(img) < len(whole) // 2, (len(img), len(whole))


def _upy():
    import sys
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


@pytest.mark.skipif(_upy() is None, reason="no micropython unix port")
def test_every_module_of_the_slave_closure_imports_from_the_closure_alone(tmp_path):
    files = fwpkg.closure(fwpkg.ENTRIES["slave_module"])
    roots = (tools.FIRMWARE, os.path.dirname(tools.FIRMWARE))
    for rel in files:
        src = next(os.path.join(r, rel) for r in roots if os.path.isfile(os.path.join(r, rel)))
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    mods = [r[:-3].replace("/", ".").replace(".__init__", "") for r in files]
    code = "import sys\nfor m in %r:\n    __import__(m)\nprint('ok', len(sys.modules))\n" % mods
    # The closure's directory and the unix port's own frozen modules, nothing else.
    env = dict(os.environ, MICROPYPATH=str(tmp_path) + ":.frozen")
    r = subprocess.run([_upy(), "-c", code], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr


def test_factory_install_refuses_an_image_larger_than_a_slot():
    from bms import romslot
    from tools import flashlayout
    half = flashlayout.ROMFS_BYTES // 2 // romslot.SECTOR * romslot.SECTOR
    room = half - romslot.SECTOR                      # the slot's own descriptor sector follows
    assert fwpkg.slot_image_bytes() == room
    fits = fwpkg.slot_a_bytes(bytes(romslot.DESC_LEN) + b"\x01" * room)
    assert fits[half - romslot.SECTOR][:1] == b"\x00" and len(fits[0]) == room
    with pytest.raises(ValueError, match="more than the"):
        fwpkg.slot_a_bytes(bytes(romslot.DESC_LEN) + b"\x01" * (room + 1))


def test_flash_layout_is_the_board_definition():
    # One source: the sizes the build uses (mpconfigboard.h), the rest derived.
    from tools import flashlayout as f
    text = open(f.HEADER).read()
    assert "(%d * 1024)" % (f.ROMFS_BYTES // 1024) in text
    assert "(%d * 1024)" % (f.LITTLEFS_BYTES // 1024) in text
    # The firmware image the build made fits the region below the partition.
    import os
    bins = [os.path.join(f.ROOT, "build", b, "firmware.bin") for b in ("pico", "slave_module")]
    for b in bins:
        if os.path.exists(b):
            assert os.path.getsize(b) <= f.FIRMWARE_MAX, b
