"""The Pico image's flash layout, read from the board definition.

``boards/rp2/BMS_PICO/mpconfigboard.h`` is the one source: the build uses
it, and the packager (``tools.fwpkg``), the image build's size check
(``tools.fwbuild``), the emulated chip's kept flash (``tools.rp2emu``) and
the bench read it here, so a new partition size cannot leave one of them
behind.  MicroPython's rp2 port puts littlefs at the top of flash and the
ROMFS partition directly below it (ports/rp2/rp2_flash.c); the firmware
region is everything under the ROMFS partition.
"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "boards", "rp2", "BMS_PICO", "mpconfigboard.h")
FLASH_BYTES = 2 * 1024 * 1024          # PICO_BOARD "pico": a 2 MB W25Q16JV


def _define(text, name):
    m = re.search(r"^#define\s+%s\s+\(?\s*(\d+)\s*\*\s*1024\s*\)?\s*$" % name, text, re.M)
    if not m:
        raise ValueError("%s: no '#define %s (<n> * 1024)'" % (HEADER, name))
    return int(m.group(1)) * 1024


with open(HEADER) as _f:
    _text = _f.read()

LITTLEFS_BYTES = _define(_text, "MICROPY_HW_FLASH_STORAGE_BYTES")
ROMFS_BYTES = _define(_text, "MICROPY_HW_ROMFS_BYTES")
LITTLEFS_BASE = FLASH_BYTES - LITTLEFS_BYTES
ROMFS_BASE = LITTLEFS_BASE - ROMFS_BYTES
FIRMWARE_MAX = ROMFS_BASE
