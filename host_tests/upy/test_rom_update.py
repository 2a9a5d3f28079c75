"""Application update into ROMFS slots (bms.romupdate, bms.romslot): refusals,
A/B swap, trial and roll-back, a power cut at every flash operation and at
every step boundary never leaves a slot selected that is not whole."""
from fakeflash import FakeFlash
from rom_rig import FakeRom, PowerCutRom, app, check, package, send
from store_rig import raises

from bms import romslot as R
from bms import update as U
from bms.fwslot import ROOT_SLOT, ST_OK, ST_PENDING, ST_TRIAL
from bms.romupdate import RomUpdater

KEY = b"device-key-0123456789abcdef"


def _device():
    return FakeFlash(), FakeRom()


def _boot(fs, rom):
    return R.boot(fs, rom.part(), lambda mv, s: None)


def _updater(fs, rom, key=None):
    return RomUpdater(fs, rom.part(), key=key, check=check)


def _label(rom, slot):
    """Which application a slot runs ('frozen' for -1), read from its image."""
    if slot == ROOT_SLOT:
        return "frozen"
    mv = rom.part()[1]
    assert R.valid(mv, slot), "slot %d selected but not whole" % slot
    img = bytes(R.image(mv, slot))
    i = img.find(b"fwinfo.txt")
    n = img[i + 11]
    return img[i + 12:i + 12 + n].decode()


def _install(fs, rom, label, confirm=True):
    up = _updater(fs, rom)
    pkg, digest, sig = package(app(label, pad=9000))
    send(up, pkg, digest, sig)
    up.finish()
    slot = _boot(fs, rom)
    if confirm:
        R.slots(fs).confirm()
    return slot


def test_update_goes_to_the_other_half_and_confirms():
    fs, rom = _device()
    assert _boot(fs, rom) == ROOT_SLOT                 # nothing in ROMFS: the frozen app
    assert _install(fs, rom, "one") == 0
    s = R.slots(fs)
    assert (s.active, s.state) == (0, ST_OK)
    assert _install(fs, rom, "two") == 1
    # Until the next boot the old application is still whole in slot A.
    assert _label(rom, 0) == "one"
    assert _label(rom, _boot(fs, rom)) == "two"
    # That boot (marker OK: nothing needs slot A) erased it for the next update.
    mv = rom.part()[1]
    assert R.blank(mv, 0, R.half(mv)) and not R.valid(mv, 0)


def _used_sectors(rom, slot):
    mv = rom.part()[1]
    h = R.half(mv)
    return sum(1 for k in range(h // R.SECTOR) if not R.blank(mv, slot * h + k * R.SECTOR))


def test_inactive_slot_is_erased_at_boot_only_when_no_trial_or_staged_update_needs_it():
    fs, rom = _device()
    _install(fs, rom, "one")
    _install(fs, rom, "two", confirm=False)             # B on trial, boot 1
    for _i in range(2):                                 # boots 2, 3 of the trial
        assert _boot(fs, rom) == 1
        assert _label(rom, 0) == "one"                  # the roll-back target is kept
    R.slots(fs).confirm()
    used = _used_sectors(rom, 0)
    assert used >= 3
    e0 = rom.erases
    assert _boot(fs, rom) == 1
    assert rom.erases - e0 == used and _used_sectors(rom, 0) == 0
    e0 = rom.erases
    assert _boot(fs, rom) == 1 and rom.erases == e0     # once: blank sectors are skipped
    # An update into the erased slot only programs: no erase in any chunk or
    # step, and at most one page per 240-byte chunk (the bound of a loop pass).
    up = _updater(fs, rom)
    pkg, digest, sig = package(app("three", pad=9000))
    up.begin(len(pkg), digest, sig)
    off = 0
    while off < len(pkg):
        ops = rom.ops
        off = up.chunk(off, pkg[off:off + 240])
        assert rom.ops - ops <= 1, (off, rom.ops - ops)
    up.finish()
    assert rom.erases == e0 and up.slow_sectors == 0
    assert R.slots(fs).state == ST_PENDING
    # The boot that takes the staged update keeps the old slot (now the roll-back target).
    assert _label(rom, _boot(fs, rom)) == "three"
    assert rom.erases == e0 and _label(rom, 1) == "two"


def test_an_update_over_a_slot_not_erased_erases_each_sector_it_writes():
    fs, rom = _device()
    _install(fs, rom, "one")
    _install(fs, rom, "two")              # confirmed, no boot since: slot A still holds "one"
    used = _used_sectors(rom, 0)
    up = _updater(fs, rom)
    pkg, digest, sig = package(app("three", pad=3000))
    send(up, pkg, digest, sig)
    up.finish()
    assert up.slow_sectors >= 2 and up.slow_sectors <= used
    assert _label(rom, _boot(fs, rom)) == "three"


def test_power_cut_at_every_boot_erase_boots_the_running_app_and_the_erase_completes():
    def confirmed():
        fs, rom = _device()
        _install(fs, rom, "one")
        _install(fs, rom, "two")
        return fs, rom
    fs, rom = confirmed()
    used = _used_sectors(rom, 0)
    for cut in range(1, used + 1):
        fs, rom = confirmed()
        rom.ops = 0
        rom.cut_at = cut
        try:
            _boot(fs, rom)
        except PowerCutRom:
            pass
        rom.cut_at = None
        fs.reboot()
        mv = rom.part()[1]
        if cut > 1:                             # (cut 1 stops the first erase before it starts)
            assert not R.valid(mv, 0), cut      # the descriptor went first
        assert _label(rom, _boot(fs, rom)) == "two"
        assert _used_sectors(rom, 0) == 0, cut


def test_factory_install_in_slot_a_runs_without_a_marker():
    fs, rom = _device()
    pkg = package(app("factory"))[0]
    img = pkg[R.DESC_LEN:]
    rom.buf[0:len(img)] = img
    h = R.half(rom.part()[1])
    rom.buf[h - R.SECTOR:h - R.SECTOR + 52] = pkg[0:52]
    assert _label(rom, _boot(fs, rom)) == "factory"
    # The marker now names slot A as running: an update goes to B, never over A.
    assert R.slots(fs).active == 0
    up = _updater(fs, rom)
    assert up._staged == 1


def test_bad_hash_signature_size_and_format_are_refused_and_change_nothing():
    fs, rom = _device()
    _install(fs, rom, "one")
    up = _updater(fs, rom, key=KEY)
    pkg, digest, sig = package(app("two"), key=KEY)

    def refused(code, fn):
        e = raises(U.UpdateError, fn)
        assert e.code == code, (e.code, e.msg)
        s = R.slots(fs)
        assert (s.active, s.state) == (0, ST_OK)
        assert _label(rom, _boot(fs, rom)) == "one"
        return e.msg
    bad = bytes(32)
    refused(U.E_HASH, lambda: (send(up, pkg, bad, _sig(bad, pkg)), up.finish()))
    refused(U.E_SIGNATURE, lambda: send(up, pkg, digest, bytes(32)))
    refused(U.E_SIGNATURE, lambda: send(up, pkg, digest, None))
    refused(U.E_SIZE, lambda: up.begin(600 * 1024, digest, sig))
    # A byte flipped in transit: the SHA-256 of what arrived differs.
    bent = pkg[:100] + bytes((pkg[100] ^ 1,)) + pkg[101:]
    refused(U.E_HASH, lambda: (send(up, bent, digest, sig), up.finish()))
    # A tar archive (the file-slot package) is not a ROMFS application.
    tar = b"bms/core.py" + bytes(600)
    tdig = _sha(tar)
    msg = refused(U.E_FORMAT, lambda: send(up, tar, tdig, _sig(tdig, tar)))
    assert "BMSAPP1" in msg


def test_bytecode_version_mismatch_is_refused_with_the_reason_before_any_flash_write():
    fs, rom = _device()
    up = _updater(fs, rom)
    board = R.board_mpy()
    other = (board & ~0xFF) | ((board & 0xFF) - 1)          # mpy v5 on a v6 board
    pkg, digest, _s = package(app("old-mpy"), mpy=other)
    ops = rom.ops
    e = raises(U.UpdateError, lambda: send(up, pkg, digest))
    assert e.code == U.E_FORMAT
    assert "MicroPython mismatch" in e.msg and R.mpy_text(other) in e.msg, e.msg
    assert rom.ops == ops                                   # refused on the first chunk
    assert up.last_error[1] == e.msg
    assert _boot(fs, rom) == ROOT_SLOT


def _sha(b):
    from bms.digest import sha256
    return sha256(b).digest()


def _sig(digest, pkg):
    from bms.update import sign
    return sign(KEY, len(pkg), digest)


def test_finish_steps_are_bounded():
    fs, rom = _device()
    up = _updater(fs, rom)
    pkg, digest, sig = package(app("big", pad=40000))
    send(up, pkg, digest, sig)
    r = up.finish_start()
    ops = rom.ops
    hashed = []
    while r == U.FS_BUSY:
        pos = up._pos
        r = up.finish_step()
        hashed.append(up._pos - pos if up.phase == U.PH_VERIFY else 0)
        assert rom.ops - ops <= 2                            # one sector (erase + program) or page
        ops = rom.ops
    assert r == U.FS_DONE
    assert max(hashed) <= up.step_bytes
    assert up.steps >= len(pkg) // up.step_bytes
    assert R.slots(fs).state == ST_PENDING


def test_a_trial_that_never_confirms_rolls_back_to_the_previous_slot():
    fs, rom = _device()
    _install(fs, rom, "one")
    _install(fs, rom, "two", confirm=False)           # boot 1 of the trial
    s = R.slots(fs)
    assert (s.active, s.state, s.tries) == (1, ST_TRIAL, 1)
    e = raises(U.UpdateError, lambda: _updater(fs, rom).begin(1000, bytes(32)))
    assert e.code == U.E_STATE                          # the roll-back target is kept
    assert _boot(fs, rom) == 1 and _boot(fs, rom) == 1  # boots 2, 3
    assert _label(rom, _boot(fs, rom)) == "one"         # boot 4: rolled back
    s = R.slots(fs)
    assert (s.active, s.state) == (0, ST_OK)
    assert s.take_boot_event() == U.U_ROLLED_BACK


def test_a_corrupt_slot_is_never_mounted():
    fs, rom = _device()
    _install(fs, rom, "one")
    _install(fs, rom, "two")
    rom.buf[R.half(rom.part()[1]) + 40] ^= 0x10          # one bit of slot B's image decays
    assert _label(rom, _boot(fs, rom)) == "one"
    rom.buf[40] ^= 0x10
    assert _boot(fs, rom) == ROOT_SLOT


def _old_and_new():
    fs, rom = _device()
    _install(fs, rom, "one")
    return fs, rom, package(app("two", pad=20000))


def _run_update(fs, rom, pkg, digest, sig, stop_at_step=None):
    up = _updater(fs, rom)
    send(up, pkg, digest, sig)
    r = up.finish_start()
    n = 0
    while r == U.FS_BUSY:
        if n == stop_at_step:
            return False
        r = up.finish_step()
        n += 1
    return r == U.FS_DONE


def test_power_cut_at_every_flash_operation_boots_a_whole_old_or_new_app():
    fs, rom, (pkg, digest, sig) = _old_and_new()
    rom.ops = 0
    assert _run_update(fs, rom, pkg, digest, sig)
    total = rom.ops
    seen = set()
    for cut in range(1, total + 1):
        fs, rom, _p = _old_and_new()
        rom.ops = 0
        rom.cut_at = cut
        try:
            _run_update(fs, rom, pkg, digest, sig)
        except PowerCutRom:
            pass
        rom.cut_at = None
        seen.add(_label(rom, _boot(fs, rom)))
    assert seen == {"one"}                 # the marker write comes after the last flash op


def test_power_cut_at_every_step_boundary_and_marker_write():
    fs, rom, (pkg, digest, sig) = _old_and_new()
    fs.reboot()
    assert _run_update(fs, rom, pkg, digest, sig)
    steps = _updater(fs, rom)                             # count the finish steps
    fs, rom, _p = _old_and_new()
    up = _updater(fs, rom)
    send(up, pkg, digest, sig)
    r = up.finish_start()
    nsteps = 0
    while r == U.FS_BUSY:
        r = up.finish_step()
        nsteps += 1
    del steps
    got = []
    for k in range(nsteps + 1):
        fs, rom, _p = _old_and_new()
        done = _run_update(fs, rom, pkg, digest, sig, stop_at_step=k)
        got.append(_label(rom, _boot(fs, rom)))
        assert got[-1] == ("two" if done else "one"), (k, got)
    assert got[-1] == "two" and got[0] == "one"
    # The marker write itself: a cut at any byte keeps the old record.
    for n in range(1, 200, 7):
        fs, rom, _p = _old_and_new()
        up = _updater(fs, rom)
        send(up, pkg, digest, sig)
        r = up.finish_start()
        while up.phase != U.PH_COMMIT:
            up.finish_step()
        fs.cut_after(n)
        try:
            up.finish_step()
        except Exception:  # noqa: BLE001 - the fake flash's power cut
            pass
        fs.reboot()
        assert _label(rom, _boot(fs, rom)) in ("one", "two")


class _NoRoom:
    """The littlefs holding the marker is full: writes fail with ENOSPC."""

    def __init__(self, fs):
        self.fs = fs
        self.full = True

    def open(self, path, mode="r"):
        if self.full and ("w" in mode or "a" in mode):
            raise OSError(28)
        return self.fs.open(path, mode)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_a_marker_that_cannot_be_written_at_boot_boots_the_last_whole_app():
    # docs/storage.md (the loader): the loader never lets a slot run that
    # it has not checked.  A marker write at boot that fails (littlefs full
    # or failing) must not end the loader with an exception: boot.py then
    # left MicroPython's own, unchecked mount of the partition's start (slot
    # A, whatever it holds) and a trial ran without its boots counted.  It
    # boots the application that ran last; the next boot that can write the
    # marker goes on with the update.
    fs, rom = _device()
    _install(fs, rom, "one")
    up = _updater(fs, rom)
    pkg, digest, sig = package(app("two", pad=9000))
    send(up, pkg, digest, sig)
    up.finish()
    assert R.slots(fs).state == ST_PENDING
    nr = _NoRoom(fs)
    assert _label(rom, _boot(nr, rom)) == "one"        # the staged update waits
    assert R.slots(fs).state == ST_PENDING
    nr.full = False
    assert _label(rom, _boot(nr, rom)) == "two"        # trial, boot 1
    nr.full = True
    assert _label(rom, _boot(nr, rom)) == "one"        # a trial is not run uncounted
    nr.full = False
    for _i in range(2):                                # boots 2 and 3 of the trial
        assert _label(rom, _boot(nr, rom)) == "two"
    assert _label(rom, _boot(nr, rom)) == "one"        # never confirmed: rolled back
    # No marker yet and slot A whole (a factory install): A, marker or not.
    fs2, rom2 = _device()
    _install(fs2, rom2, "one")
    fs2.remove("/fw/rom/marker.a")
    fs2.remove("/fw/rom/marker.b")
    assert _label(rom2, _boot(_NoRoom(fs2), rom2)) == "one"


def test_a_new_transfer_over_a_pending_slot_unpends_it_first():
    fs, rom = _device()
    _install(fs, rom, "one")
    up = _updater(fs, rom)
    pkg, digest, sig = package(app("two", pad=9000))
    send(up, pkg, digest, sig)
    up.finish()
    assert R.slots(fs).state == ST_PENDING
    pkg3, d3, s3 = package(app("three", pad=9000))
    up = _updater(fs, rom)
    up.begin(len(pkg3), d3, s3)
    up.chunk(0, pkg3[:R.DESC_LEN + R.SECTOR])            # the first sector is written
    assert R.slots(fs).state == ST_OK
    assert _label(rom, _boot(fs, rom)) == "one"


def test_bytecode_rule_version_always_arch_only_for_native_code():
    board = 6 | 3 << 8 | 4 << 10                    # rp2 1.27: v6.3, armv6m
    assert R.mpy_refusal(6, board) is None          # bytecode-only .mpy: no arch, no sub-version
    assert R.mpy_refusal(board, board) is None
    assert R.mpy_refusal(5, board) is not None
    assert R.mpy_refusal(6 | 3 << 8 | 9 << 10, board) is not None   # native code for xtensawin
    assert R.mpy_refusal(6 | 2 << 8 | 4 << 10, board) is not None   # native ABI sub-version
