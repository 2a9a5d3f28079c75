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

// Python call frames on a dedicated stack (py/pystack.c), not the GC heap.
// Without it the VM takes every frame larger than 11 words, and the argument
// array of every bound-method call with more than 4 arguments, from the heap
// and frees it on return: a GC allocation per call, silently moved to the C
// stack when the heap is locked (so the heap-locked host tests never see it),
// whose search time grows as the heap fills.  On the emulated chip that made
// the fast task ~1 ms slower in the second before a collection.  A pystack
// frame is a pointer bump.  8 KB is about 5 times the deepest call chain
// seen on the emulated chip (1.6 KB, a parameter write over Modbus; `make
// bench` prints the high-water mark; docs/deploy.md section 5, "Call frames
// on the heap"); running out raises RuntimeError("pystack exhausted"), which
// the fail-safe boundaries catch, never a crash.  It costs 8 KB of heap.
#define MICROPY_ENABLE_PYSTACK                  (1)
#define BMS_PYSTACK_WORDS                       (2048)
// Set up once before the first mp_init(); every soft reset starts it empty
// again (an exception unwinds it anyway; this makes a clean start certain).
#define MICROPY_BOARD_EARLY_INIT() \
    do { \
        static mp_obj_t bms_pystack[BMS_PYSTACK_WORDS]; \
        mp_pystack_init(bms_pystack, &bms_pystack[BMS_PYSTACK_WORDS]); \
    } while (0)
#define MICROPY_BOARD_START_SOFT_RESET() \
    do { \
        MP_STATE_THREAD(pystack_cur) = MP_STATE_THREAD(pystack_start); \
    } while (0)
