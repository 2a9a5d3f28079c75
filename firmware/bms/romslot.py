"""The application in ROMFS: two image slots in the ROMFS partition, and the
boot-time loader that mounts the chosen one.

Why two halves of one partition: MicroPython 1.27 rp2 has exactly one ROMFS
partition (``vfs.rom_ioctl(2, 0)``, 576 KB on boards/rp2/BMS_PICO) and the
whole application as a ROMFS image of .mpy files is about 200 KB, so the
partition splits into two 256 KB slots (A at the start, B at the middle).
The running application is never written; an update goes into the other
half, and ``vfs.VfsRom`` mounts either half straight from the XIP-mapped
flash, so the bytecode runs in place (no heap per module).  A staging copy
in littlefs plus one partition would need the partition rewritten in place
after the reboot, with a window in which no complete application exists
but the frozen fallback.

A slot: the ROMFS image from offset 0; its descriptor in the slot's last
4 KB sector (only the first 256-byte page is written):

    magic "BMSAPP1\\0" | mpy u16 | flags u16 | image size u32 | sha256 (32) | crc32 u32

``mpy``: the bytecode version of the image, coded as the low 16 bits of
``sys.implementation._mpy`` (version | sub-version << 8 | arch << 10).  An
update package is this descriptor followed by the image (tools/fwpkg.py).
An updater erases the descriptor before it writes any image sector and
writes it after the image was re-hashed from flash, so a slot with a valid
descriptor always holds the whole image; the loader re-hashes it anyway at
every boot (flash decay, a cut while the descriptor page was programmed).

Erase ahead, at boot.  A 4 KB sector erase keeps the flash busy ~45 ms
(W25Q16JV typ, 400 ms max) and the rp2 port runs it with interrupts off,
longer than a main-loop pass may take (20 ms).  So the loader erases the
inactive slot at boot, before main.py starts and before any relay can
close (``prepare``), and the updater then only programs sectors it finds
blank (~7 ms per 4 KB).  Only when the marker is OK: in TRIAL the inactive
slot is the roll-back target, in PENDING it holds the staged update, and
both are kept (a STAGED one whose APPLY never came is dropped by the
selection: the marker is then OK and the slot erased).  Sectors already
blank are skipped, so this costs boot time once after a confirm, a
roll-back or a dropped package (~2.9 s for a 250 KB image), not every
boot.  Erasing runs from the descriptor sector down, so a cut in the middle
leaves a slot without a descriptor (never mounted) that the next boot
finishes erasing.

The marker (which slot, trial, tries) is ``bms.fwslot.Slots`` at
``/fw/rom``: the same PENDING -> TRIAL -> confirm / roll-back rule as the
file slots.  Slot -1 is the application frozen into the firmware image: the
factory fallback, always complete.  No marker and a valid slot A is a
factory install (UF2 with the ROMFS image): it runs.
"""
import struct
import sys

from micropython import const

from bms.fwslot import ROOT_SLOT, ST_OK, ST_TRIAL, U_ROLLED_BACK, Slots

MAGIC = b"BMSAPP1\0"
DESC_FMT = "<8sHHI32s"          # + crc32 u32 of these 48 bytes
DESC_LEN = const(64)            # in a package: the descriptor, padded
SECTOR = const(4096)
PAGE = const(256)
ROOT = "/fw/rom"
MOUNT = "/rom"
MIN_PARTITION = const(128 * 1024)


def partition():
    """(flash object, memoryview) of the ROMFS partition, or None when the
    board has none (unix port, a stock image) or it is too small to split."""
    try:
        import vfs
        if vfs.rom_ioctl(1) < 1:
            return None
        rom = vfs.rom_ioctl(2, 0)
        mv = memoryview(rom)
    except Exception:  # noqa: BLE001 - no VfsRom on this port
        return None
    if len(mv) < MIN_PARTITION or not hasattr(rom, "writeblocks"):
        return None
    return rom, mv


def half(mv):
    return len(mv) // 2 // SECTOR * SECTOR


def board_mpy():
    # CPython (host tests) has no _mpy: call it bytecode v6.3, no native arch.
    return getattr(sys.implementation, "_mpy", 0x306) & 0xFFFF


def mpy_text(v):
    return "v%d.%d arch %d" % (v & 0xFF, (v >> 8) & 3, v >> 10)


def mpy_refusal(pkg, board=None):
    """Why a package's bytecode cannot run here (None: it can)."""
    if board is None:
        board = board_mpy()
    # Bytecode-only .mpy files carry no arch and sub-version (0): the version
    # must match; native code must also match the arch and its sub-version.
    if (pkg & 0xFF) != (board & 0xFF) or (pkg >> 10 and (pkg & 0xFF00) != (board & 0xFF00)):
        return "bytecode %s, this board runs %s" % (mpy_text(pkg), mpy_text(board))
    return None


def pack_desc(mpy, size, digest, flags=0):
    from bms.digest import crc32
    d = struct.pack(DESC_FMT, MAGIC, mpy, flags, size, digest)
    return d + struct.pack("<I", crc32(d))


def parse_desc(b):
    """(mpy, flags, size, sha256) of a descriptor, or None if it is not one."""
    from bms.digest import crc32
    if len(b) < 52 or bytes(b[0:8]) != MAGIC:
        return None
    if struct.unpack_from("<I", b, 48)[0] != crc32(b[0:48]):
        return None
    _m, mpy, flags, size, digest = struct.unpack_from(DESC_FMT, b, 0)
    return mpy, flags, size, bytes(digest)


def slot_desc(mv, slot):
    h = half(mv)
    d = parse_desc(mv[slot * h + h - SECTOR:slot * h + h - SECTOR + 52])
    if d is None or d[2] <= 0 or d[2] > h - SECTOR:
        return None
    return d


def valid(mv, slot):
    """The slot holds a whole image of this board's bytecode (hashed now)."""
    import hashlib
    d = slot_desc(mv, slot)
    if d is None or mpy_refusal(d[0]) is not None:
        return False
    base = slot * half(mv)
    return hashlib.sha256(mv[base:base + d[2]]).digest() == d[3]


def blank(mv, start, n=SECTOR, ref=None):
    """Flash bytes ``mv[start:start + n]`` are all 0xFF (erased)."""
    if ref is None:
        ref = b"\xff" * 512
    k = len(ref)
    for a in range(start, start + n, k):
        if ref != mv[a:a + k]:
            return False
    return True


def prepare(rom, mv, slot, feed=None):
    """Erase every sector of ``slot`` that is not blank, descriptor first, then
    from the top down; returns the number erased.  ``feed``: the watchdog,
    fed after each erase (one is at most 400 ms)."""
    h = half(mv)
    ref = b"\xff" * 1024
    n = 0
    for k in range(h // SECTOR - 1, -1, -1):
        if not blank(mv, slot * h + k * SECTOR, SECTOR, ref):
            rom.ioctl(6, (slot * h) // SECTOR + k)
            n += 1
            if feed is not None:
                feed()
    return n


def image(mv, slot):
    h = half(mv)
    return mv[slot * h:slot * h + h]


def boot(fs, part=None, mount_slot=None, feed=None):
    """boot.py: pick the slot (trial / roll-back rule), mount it at /rom ahead
    of the frozen modules, erase the inactive slot when nothing needs it
    (``prepare``).  Returns the slot (-1 frozen), None without ROMFS.
    ``part`` and ``mount_slot(mv, slot)``: a test's partition and mount;
    ``feed``: the watchdog's feed."""
    p = part or partition()
    if p is None:
        return None
    mv = p[1]
    s = Slots(fs, ROOT)
    try:
        if s.marker.load() is None and valid(mv, 0):
            s.active = 0                 # factory install: image in slot A, no marker yet
            s.save()                     # (an updater must see that A is the running slot)
        s.select_at_boot()
    except OSError:
        # The marker cannot be written (littlefs full or failing).  Never
        # leave the boot to MicroPython's unchecked mount of the partition's
        # start: boot what ran last, without a trial (a staged update waits,
        # a trial is not run uncounted); the next boot that can write goes on.
        # The state stays as it is on flash: in TRIAL or PENDING nothing is
        # erased below (the trial or staged image is kept for that boot).
        s = Slots(fs, ROOT)
        if s.state == ST_TRIAL:
            s.active = s.prev
        elif s.marker.slot < 0 and valid(mv, 0):
            s.active = 0
    while s.active != ROOT_SLOT and not valid(mv, s.active):
        # Never mount a slot that is not whole: back to the previous one, or frozen.
        s.active = s.prev if s.prev != s.active else ROOT_SLOT
        s.prev = ROOT_SLOT
        s.state = ST_OK
        s.tries = 0
        s.event = U_ROLLED_BACK
        try:
            s.save()
        except OSError:
            pass                         # mounted all the same; written at a later boot
        s._note_event()
    (mount_slot or mount)(mv, s.active)
    if s.state == ST_OK:
        # After the mount: an interrupted erase (Ctrl-C, reset) still leaves
        # the chosen application on sys.path, and the next boot finishes it.
        prepare(p[0], mv, s.staged, feed)
    return s.active


def mount(mv, slot):
    import vfs
    try:
        vfs.umount(MOUNT)                # MicroPython mounted the partition's start
    except OSError:
        pass
    p = sys.path
    for d in (MOUNT, MOUNT + "/lib"):
        while d in p:
            p.remove(d)
    if slot != ROOT_SLOT:
        vfs.mount(vfs.VfsRom(image(mv, slot)), MOUNT)
        p.insert(0, MOUNT)               # ahead of '' and .frozen


def slots(fs):
    return Slots(fs, ROOT)
