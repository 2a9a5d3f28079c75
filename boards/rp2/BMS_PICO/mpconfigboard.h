// The BMS board image: MicroPython v1.27.0 rp2 on a Raspberry Pi Pico (2 MB
// flash) with the BMS application frozen in (tools/fwbuild.py).
//
// Flash layout, fixed so that a later image never reformats a user's
// settings (docs/storage.md):
//   0x000000 - 0x0BFFFF  768 KB  firmware: MicroPython + frozen application
//   0x0C0000 - 0x13FFFF  512 KB  ROMFS partition (vfs.rom_ioctl), reserved
//                                for application images
//   0x140000 - 0x1FFFFF  768 KB  littlefs: config.py, settings (A/B
//                                records), persistent log, update staging
// MicroPython places ROMFS directly below the filesystem.
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico (BMS)"
#define MICROPY_HW_FLASH_STORAGE_BYTES          (768 * 1024)
#define MICROPY_HW_ROMFS_BYTES                  (512 * 1024)
