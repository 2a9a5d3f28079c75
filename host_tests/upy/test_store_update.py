"""Firmware update: refusal of bad packages, atomic swap, rollback when not armed."""
from fakeflash import FakeFlash, PowerCut, XorShift
from store_rig import raises
from update_rig import NEW_FW, make_tar, package, send

from bms import update as U
from bms.digest import sha256

KEY = b"device-key-0123456789abcdef"


def _device():
    fs = FakeFlash()
    fs.mkdir("/bms")
    f = fs.open("/bms/core.py", "wb")
    f.write(b"# factory core\n")
    f.close()
    f = fs.open("/main.py", "wb")
    f.write(b"import bms  # factory\n")
    f.close()
    return fs


def _refused(up, fs, code, pkg, digest, sig, size=None, chunks=None):
    before = fs.snapshot("/")
    state = (up.active, up.state)

    def run():
        up.begin(len(pkg) if size is None else size, digest, sig)
        off = 0
        for c in (chunks or [(0, pkg)]):
            off = up.chunk(c[0], c[1])
        up.finish()
    e = raises(U.UpdateError, run)
    assert e.code == code, (e.code, e.msg)
    after = fs.snapshot("/")
    # The running (root) firmware and everything else on flash is untouched.
    for k in before:
        if not k.startswith("/fw/marker"):
            assert after.get(k) == before[k], k
    assert "/fw/stage.pkg" not in fs.files
    assert (up.active, up.state) == state
    assert up.select_at_boot() == ""      # still boots the old firmware
    return e


def test_good_package_swaps_and_confirms():
    fs = _device()
    up = U.Updater(fs, key=KEY)
    pkg, digest, sig = package(NEW_FW, KEY)
    assert send(up, pkg, digest, sig) == "/fw/a"
    assert up.state == U.ST_PENDING
    assert bytes(fs.files["/fw/a/bms/core.py"]) == b"# new core\n" * 100
    assert bytes(fs.files["/bms/core.py"]) == b"# factory core\n"   # running one untouched
    # Restart: boot.py asks which tree to run.
    up2 = U.Updater(fs, key=KEY)
    assert up2.select_at_boot() == "/fw/a" and up2.state == U.ST_TRIAL
    assert up2.event == U.U_SWAPPED
    assert up2.confirm() and up2.event == U.U_CONFIRMED
    up3 = U.Updater(fs, key=KEY)
    for _ in range(5):
        assert up3.select_at_boot() == "/fw/a"
    # Next update goes to the other slot; rollback target is a.
    pkg2, d2, s2 = package([("bms/version.py", b"VERSION = '3.0'\n")], KEY)
    assert send(up3, pkg2, d2, s2) == "/fw/b"
    assert bytes(fs.files["/fw/a/bms/version.py"]) == b"VERSION = '2.0'\n"


def test_corrupt_truncated_unsigned_wrong_signature_refused():
    fs = _device()
    up = U.Updater(fs, key=KEY)
    pkg, digest, sig = package(NEW_FW, KEY)
    bad = bytearray(pkg)
    bad[700] ^= 0x40
    e = _refused(up, fs, U.E_HASH, bytes(bad), digest, sig)
    assert "sha256" in e.msg
    e = _refused(up, fs, U.E_SIZE, pkg[:-600], digest, sig, size=len(pkg))
    assert "truncated" in e.msg
    e = _refused(up, fs, U.E_SIGNATURE, pkg, digest, None)
    assert e.msg == "signature required"
    wrong = U.sign(b"another device key", len(pkg), digest)
    e = _refused(up, fs, U.E_SIGNATURE, pkg, digest, wrong)
    assert e.msg == "bad signature"
    # A correctly signed digest cannot be reused for other content.
    other, d_other, _ = package([("bms/evil.py", b"x")], KEY)
    _refused(up, fs, U.E_SIGNATURE, other, d_other, sig)
    _refused(up, fs, U.E_SIZE, pkg, digest, sig, size=U.MAX_SIZE + 1)
    # The same package, intact, still goes through afterwards.
    assert send(up, pkg, digest, sig) == "/fw/a"


def test_bad_archive_refused_before_extraction():
    fs = _device()
    up = U.Updater(fs)            # no key configured: hash only
    for files, why in (([("../boot.py", b"x")], "bad path"),
                       ([("/main.py", b"x")], "bad name")):
        pkg, digest, _ = package(files)
        e = _refused(up, fs, U.E_FORMAT, pkg, digest, None)
        assert why in e.msg, e.msg
    junk = b"\x01" * 2048
    e = _refused(up, fs, U.E_FORMAT, junk, sha256(junk).digest(), None)
    assert "archive" in e.msg
    assert "/fw/a/bms/core.py" not in fs.files


def test_chunks_duplicates_overlap_and_gap():
    fs = _device()
    up = U.Updater(fs)
    pkg, digest, _ = package(NEW_FW)
    up.begin(len(pkg), digest)
    assert up.chunk(0, pkg[0:100]) == 100
    assert up.chunk(0, pkg[0:100]) == 100          # duplicate: acknowledged, not rewritten
    assert up.chunk(50, pkg[50:300]) == 300        # overlap: only the tail is new
    e = raises(U.UpdateError, up.chunk, 400, pkg[400:500])
    assert e.code == U.E_OFFSET and "expected offset 300" in e.msg
    off = 300
    while off < len(pkg):
        off = up.chunk(off, pkg[off:off + 333])
    assert up.finish() == "/fw/a"
    e = raises(U.UpdateError, up.chunk, 0, b"x")
    assert e.code == U.E_STATE


def test_not_armed_rolls_back():
    fs = _device()
    up = U.Updater(fs, max_tries=3)
    pkg, digest, _ = package(NEW_FW)
    send(up, pkg, digest)
    paths = []
    for _ in range(4):   # each boot: the new firmware hangs or crashes before confirm()
        u = U.Updater(fs, max_tries=3)
        paths.append(u.select_at_boot())
    assert paths == ["/fw/a", "/fw/a", "/fw/a", ""], paths
    assert u.event == U.U_ROLLED_BACK and u.state == U.ST_OK
    u = U.Updater(fs, max_tries=3)
    assert u.select_at_boot() == "" and u.event == 0


def test_no_new_update_during_trial():
    fs = _device()
    up = U.Updater(fs)
    pkg, digest, _ = package(NEW_FW)
    send(up, pkg, digest)
    u = U.Updater(fs)
    u.select_at_boot()
    e = raises(U.UpdateError, u.begin, len(pkg), digest)
    assert e.code == U.E_STATE and "trial" in e.msg


def test_power_cut_during_staging_keeps_old_firmware():
    rng = XorShift(99)
    pkg, digest, _ = package(NEW_FW)
    probe = _device()
    u0 = U.Updater(probe)
    start = probe.units
    send(u0, pkg, digest)
    cost = probe.units - start
    for k in range(60):
        fs = _device()
        up = U.Updater(fs)
        n = rng.below(cost + 1) if k > 1 else cost - k  # k=0: no cut, k=1: the very last unit
        fs.cut_after(n)
        try:
            send(up, pkg, digest)
            ok = True
        except PowerCut:
            ok = False
        fs.reboot()
        u = U.Updater(fs)
        path = u.select_at_boot()
        # Either the old firmware, or (cut after the marker commit) the complete new one.
        assert path in ("", "/fw/a") and (path or not ok), (n, cost, path)
        assert bytes(fs.files["/bms/core.py"]) == b"# factory core\n"
        if path:
            assert bytes(fs.files["/fw/a/bms/core.py"]) == b"# new core\n" * 100


# ---- incremental finish ------------------------------------------------------
def _transfer(up, pkg, digest, sig=None):
    up.begin(len(pkg), digest, sig)
    off = 0
    while off < len(pkg):
        off = up.chunk(off, pkg[off:off + 200])


def _finish_steps(fs, pkg, digest, step_bytes):
    up = U.Updater(fs, step_bytes=step_bytes)
    _transfer(up, pkg, digest)
    assert up.finish_start() == U.FS_BUSY
    n = 0
    r = U.FS_BUSY
    while r == U.FS_BUSY:
        r = up.finish_step()
        n += 1
    assert r == U.FS_DONE
    return n


BIG_FW = NEW_FW + [("drivers/", b""), ("drivers/afe.py", b"# afe driver\n" * 300),
                   ("bms/empty.py", b"")]


def test_finish_steps_are_bounded_and_report_progress():
    _bounded(1024)
    _bounded(128)


def _bounded(step):
    fs = _device()
    pkg, digest, _ = package(BIG_FW)
    up = U.Updater(fs, step_bytes=step)
    _transfer(up, pkg, digest)
    assert up.finish_start() == U.FS_BUSY and up.phase == U.PH_VERIFY
    phases = []
    pms = []
    worst_writes = 0
    r = U.FS_BUSY
    while r == U.FS_BUSY:
        before = fs.units
        r = up.finish_step()
        worst_writes = max(worst_writes, fs.units - before)
        phases.append(up.phase)
        pms.append(up.finish_pm())
        assert up.step_io <= 2 * step + 512, up.step_io   # read + written
        if r == U.FS_BUSY:
            assert up.state == U.ST_OK      # bootable only after the very last step
    assert r == U.FS_DONE and up.state == U.ST_PENDING and pms[-1] == 1000
    assert pms == sorted(pms), pms
    for ph in (U.PH_CHECK, U.PH_CLEAR, U.PH_EXTRACT, U.PH_COMMIT):
        assert ph in phases, ph
    assert worst_writes <= step + 16, worst_writes   # data plus a few metadata operations
    assert up.steps == len(phases) and up.steps > len(pkg) // step
    assert bytes(fs.files["/fw/a/drivers/afe.py"]) == b"# afe driver\n" * 300
    assert bytes(fs.files["/fw/a/bms/empty.py"]) == b""
    assert "/fw/stage.pkg" not in fs.files
    assert up.finish_step() == U.FS_IDLE


def test_abort_and_new_begin_cancel_a_running_finish():
    fs = _device()
    pkg, digest, _ = package(BIG_FW)
    up = U.Updater(fs, step_bytes=512)
    _transfer(up, pkg, digest)
    up.finish_start()
    while up.phase != U.PH_EXTRACT:
        assert up.finish_step() == U.FS_BUSY
    for _ in range(4):
        up.finish_step()
    assert up.phase == U.PH_EXTRACT and "/fw/a/bms/version.py" in fs.files
    e = raises(U.UpdateError, up.chunk, 0, b"x")
    assert e.code == U.E_STATE and "finish in progress" in e.msg
    up.abort()
    assert up.phase == U.PH_NONE and up.finish_step() == U.FS_IDLE
    assert "/fw/stage.pkg" not in fs.files and up.state == U.ST_OK
    assert U.Updater(fs).select_at_boot() == ""
    assert send(up, pkg, digest) == "/fw/a"
    assert bytes(fs.files["/fw/a/drivers/afe.py"]) == b"# afe driver\n" * 300


def _check_after_reset(fs):
    """The next boot after a reset in the middle of a finish."""
    u = U.Updater(fs, step_bytes=512)      # the next boot
    assert "/fw/stage.pkg" not in fs.files             # garbage removed
    assert u.phase == U.PH_NONE and u._f is None
    assert bytes(fs.files["/bms/core.py"]) == b"# factory core\n"
    assert bytes(fs.files["/main.py"]) == b"import bms  # factory\n"
    return u


def test_reset_after_every_finish_step_keeps_old_firmware_and_allows_retry():
    pkg, digest, _ = package(BIG_FW)
    total = _finish_steps(_device(), pkg, digest, 512)
    assert total > 20
    for n in range(total + 1):
        fs = _device()
        up = U.Updater(fs, step_bytes=512)
        _transfer(up, pkg, digest)
        up.finish_start()
        for _ in range(n):
            up.finish_step()
        fs.reboot()                       # reset: open handles gone, RAM state gone
        u = _check_after_reset(fs)
        path = U.Updater(fs).select_at_boot()
        if n < total:
            assert u.state == U.ST_OK and path == "", (n, total, path)
            # A later retry goes through.
            assert send(u, pkg, digest) == "/fw/a", n
            assert U.Updater(fs).select_at_boot() == "/fw/a"   # the retry's package boots
        else:
            assert u.state == U.ST_PENDING and path == "/fw/a"
        assert bytes(fs.files["/fw/a/drivers/afe.py"]) == b"# afe driver\n" * 300


def test_reset_during_finish_over_a_staged_update_never_boots_a_mixed_slot():
    """A staged (pending, not yet booted) update A in /fw/a, then update B into the
    same slot: a reset at any step boots either complete A or the old firmware,
    or (after the last step) complete B - never a half-rewritten slot."""
    pkg_a, d_a, _ = package(NEW_FW)
    pkg_b, d_b, _ = package(BIG_FW)
    probe = _device()
    send(U.Updater(probe), pkg_a, d_a)
    total = _finish_steps(probe, pkg_b, d_b, 512)
    outcomes = []
    for n in range(total + 1):
        fs = _device()
        send(U.Updater(fs), pkg_a, d_a)
        up = U.Updater(fs, step_bytes=512)
        assert up.state == U.ST_PENDING
        _transfer(up, pkg_b, d_b)
        up.finish_start()
        for _ in range(n):
            up.finish_step()
        fs.reboot()
        _check_after_reset(fs)
        u = U.Updater(fs)
        path = u.select_at_boot()
        if path == "":
            outcomes.append("old")
        else:
            assert path == "/fw/a"
            if "/fw/a/drivers/afe.py" in fs.files:
                assert n == total
                assert bytes(fs.files["/fw/a/drivers/afe.py"]) == b"# afe driver\n" * 300
                outcomes.append("B")
            else:
                assert bytes(fs.files["/fw/a/bms/core.py"]) == b"# new core\n" * 100
                outcomes.append("A")
    assert outcomes[0] == "A" and outcomes[-1] == "B" and "old" in outcomes, outcomes


def test_boot_event_is_left_for_the_app_once():
    from bms import fwslot as FS
    fs = FakeFlash()
    s = FS.Slots(fs)
    assert s.select_at_boot() == "" and s.event == 0
    assert FS.Slots(fs).take_boot_event() == 0       # nothing happened: no file
    s.state = FS.ST_PENDING
    s.save()
    assert FS.Slots(fs).select_at_boot() == "/fw/a"   # boot.py swaps
    app_side = FS.Slots(fs)
    assert app_side.take_boot_event() == FS.U_SWAPPED and app_side.event == FS.U_SWAPPED
    assert FS.Slots(fs).take_boot_event() == 0       # read once


# ---- a slave module's update: swapped in only after the master's APPLY ----------
class _Unaddressed:
    addr = 0          # a slave receiver without an address sends no acknowledgement


def _slave_device(pkg=None, digest=None):
    """A module's flash, its Updater as slave.fw.SlaveFw sets it up (the finish
    commits STAGED) and that receiver; with ``pkg`` the package is staged."""
    from slave.fw import SlaveFw
    fs = _device()
    up = U.Updater(fs)
    fw = SlaveFw(_Unaddressed(), up)
    if pkg is not None:
        send(up, pkg, digest)
    return fs, up, fw


def _apply(fw):
    """The master's APPLY, as the receiver of a staged transfer (session 7) gets it."""
    fw.phase = 3                  # slave.fw: staged
    fw.session = 7
    fw.on_ctl(bytes([4, 0, 0, 0, 0, 0, 0, 7]), 8, 0)


def _boot(fs):
    from bms import fwslot
    return fwslot.Slots(fs).select_at_boot()         # boot.py


def test_slave_update_power_cut_anywhere_leaves_one_whole_firmware_swapped_only_after_apply():
    # docs/can_internal.md: a module's staged package is swapped in only by the
    # reset after the master's APPLY (sent while it holds the relays open);
    # without it a reset keeps the running firmware.  A power cut at any point
    # (staging, the APPLY mark, between the mark and the reset, the boot that
    # drops an unapplied package) leaves the old or the new firmware, whole,
    # and a new firmware that never confirms still rolls back.
    pkg, digest, _ = package(NEW_FW)
    fs, up, fw = _slave_device()
    start = fs.units
    send(up, pkg, digest)
    cost = fs.units - start
    staged = (U.STATE_NAMES[up.state], up.finish_pm())
    rng = XorShift(7)
    for k in range(40):      # 1. staging cut anywhere (k=0: not cut): no APPLY, old firmware
        fs, up, fw = _slave_device()
        fs.cut_after(rng.below(cost + 1) if k else cost)
        try:
            send(up, pkg, digest)
        except PowerCut:
            pass
        fs.reboot()
        assert _boot(fs) == "", k
        assert _boot(fs) == "" and U.Updater(fs).state == U.ST_OK, k
        assert bytes(fs.files["/bms/core.py"]) == b"# factory core\n"
    assert staged == ("staged", 1000), staged
    fs, up, fw = _slave_device(pkg, digest)
    start = fs.units
    _apply(fw)
    mark = fs.units - start
    assert mark > 0 and up.state == U.ST_PENDING and fw._reboot_at is not None
    outcomes = []
    for n in range(mark + 1):   # 2. the APPLY mark cut anywhere; n == mark: cut before the reset
        fs, up, fw = _slave_device(pkg, digest)
        fs.cut_after(n)
        try:
            _apply(fw)
        except PowerCut:
            pass
        fs.reboot()
        path = _boot(fs)
        assert path in ("", "/fw/a") and (path == "/fw/a") == (n == mark), (n, mark, path)
        assert bytes(fs.files["/bms/core.py"]) == b"# factory core\n"
        if path:
            assert bytes(fs.files["/fw/a/bms/core.py"]) == b"# new core\n" * 100
            assert U.Updater(fs).state == U.ST_TRIAL
            for _i in range(2):                 # never confirmed: max_tries (3) boots ...
                assert _boot(fs) == "/fw/a"
            assert _boot(fs) == ""              # ... then the rollback
            assert U.Updater(fs).state == U.ST_OK
        outcomes.append(path)
    assert outcomes[0] == "" and outcomes[-1] == "/fw/a"
    probe, up, fw = _slave_device(pkg, digest)
    start = probe.units
    assert _boot(probe) == ""
    drop = probe.units - start
    assert drop > 0
    for n in range(drop + 1):   # 3. the boot that drops the unapplied package, cut anywhere
        fs, up, fw = _slave_device(pkg, digest)
        fs.cut_after(n)
        try:
            assert _boot(fs) == ""
        except PowerCut:
            pass
        fs.reboot()
        assert _boot(fs) == "" and U.Updater(fs).state == U.ST_OK, n
