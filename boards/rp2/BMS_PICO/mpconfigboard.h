// The BMS board image: MicroPython v1.27.0 rp2 on a Raspberry Pi Pico (2 MB
// flash) with the BMS application frozen in (tools/fwbuild.py).
//
// Flash layout, fixed so that a later image never reformats a user's
// settings (docs/storage.md):
//   0x000000 - 0x0AFFFF  704 KB  firmware: MicroPython + frozen application
//                                (610 KB used, 2026-12-06)
//   0x0B0000 - 0x13FFFF  576 KB  ROMFS partition (vfs.rom_ioctl): two 288 KB
//                                application slots (bms.romslot)
//   0x140000 - 0x1FFFFF  768 KB  littlefs: config.py, settings (A/B
//                                records), persistent log, update staging
// MicroPython places ROMFS directly below the filesystem.  The host tools
// read these two sizes from this file (tools/flashlayout.py).  The ROMFS
// partition grew from 512 KB (firmware 768 KB) when the application filled
// its 252 KB slot to within 3 KB; littlefs did not move, so settings survive.
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico (BMS)"
#define MICROPY_HW_FLASH_STORAGE_BYTES          (768 * 1024)
#define MICROPY_HW_ROMFS_BYTES                  (576 * 1024)
