"""Slave firmware update over the internal CAN bus (master forwarder + slave receiver).

Byte-level: the frames are checked against layouts typed in here
(docs/can_internal.md), not against the packers.  MicroPython-compatible.
"""
from can_fwrig import FwRig, drop_frames, slave_package
from store_rig import raises

from bms import update as U
from bms.digest import sha256
from comms import can_ids as C
from comms import slave_update as SU

KEY = b"slave-fleet-key-0123456789"
LIMIT_MS = 120000


def _ready(n=2, **kw):
    r = FwRig(n=n, **kw)
    assert r.run_until(lambda: all(r.master.mod_state[k] == 1 for k in range(n)), 5000) >= 0
    return r


def _done(r):
    return r.fwd.phase >= SU.FP_DONE


def _untouched(r, k):
    fs = r.fss[k]
    up = U.Updater(fs)
    assert up.state == U.ST_OK and up.active == U.ROOT_SLOT
    assert not fs.snapshot("/fw/a") and not fs.snapshot("/fw/b")


def test_one_slave_updated_the_other_untouched():
    r = _ready(3)
    pkg, digest, sig = slave_package(version=(0, 2, 0))
    r.upload(pkg, digest, sig)
    assert r.version(1) == (0, 1, 0) and r.version(2) == (0, 1, 0)
    r.fwd.start(2, r.clock.ticks_ms())
    assert r.bms.inhibit & SU.INHIBIT            # relays held open from the start
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_DONE, r.fwd.err_text
    assert list(r.fwd.results[:3]) == [SU.SR_NONE, SU.SR_UPDATED, SU.SR_NONE]
    # Slave 2 rebooted into slot a, confirmed it, and reports the new version.
    up = r.slaves[1].fw.up
    assert (up.state, up.active) == (U.ST_OK, 0)
    assert r.boots[1] == 2
    r.run(3000)
    assert r.version(2) == (0, 2, 0)
    assert r.version(1) == (0, 1, 0) and r.version(3) == (0, 1, 0)
    _untouched(r, 0)
    _untouched(r, 2)
    assert r.bms.inhibit == 0                     # released at the end
    assert r.fwd.retransmits == 0


def test_begin_and_data_frames_byte_exact():
    r = _ready(2)
    pkg, digest, sig = slave_package(key=KEY)
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    r.run_until(lambda: len(r.data_frames(1)) >= 12, 5000)
    begin = r.ctl_frames(1)[0]
    n = len(pkg)
    # op 1 | size u32 LE | flags bit0 signed | 16 segments per block | session 1
    assert begin == bytes([1, n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, n >> 24, 1, 16, 1])
    data = r.data_frames(1)
    stream = digest + sig + pkg
    for i in range(12):
        assert data[i] == bytes([i]) + stream[7 * i:7 * i + 7], i
    # The slave's acknowledgement of the first block: op 6 (data), ok, next = 112 bytes,
    # fw byte: marker ok (0), factory slot (-1 + 1 = 0), no tries; session 1.
    r.run_until(lambda: any(i == C.ID_FWACK and d[0] == 6 for i, d in r.snodes[0].sent), 2000)
    acks = [d for i, d in r.snodes[0].sent if i == C.ID_FWACK]
    assert acks[0] == bytes([1, 0, 0, 0, 0, 0, 0, 1])     # BEGIN accepted
    assert acks[1] == bytes([6, 0, 112, 0, 0, 0, 0, 1])


def test_relays_closed_refuses_to_start():
    r = _ready(2)
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, sig)
    r.bms.contactors.state[0] = 1    # discharge closed
    e = raises(U.UpdateError, lambda: r.fwd.start(1, r.clock.ticks_ms()))
    assert "relays closed" in e.msg
    assert r.fwd.phase == SU.FP_IDLE and r.bms.inhibit == 0
    r.step()
    assert not r.ctl_frames(1)


def test_start_refusals():
    r = _ready(2)
    e = raises(U.UpdateError, lambda: r.fwd.start(1, r.clock.ticks_ms()))
    assert "no slave package" in e.msg
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, sig)
    e = raises(U.UpdateError, lambda: r.fwd.start(5, r.clock.ticks_ms()))
    assert "does not exist" in e.msg
    r.afes[1].dead = True
    r.run_until(lambda: r.master.mod_state[1] != 1, 5000)
    e = raises(U.UpdateError, lambda: r.fwd.start(SU.TARGET_ALL, r.clock.ticks_ms()))
    assert "slave 2 is not ok" in e.msg


def test_master_store_refuses_corrupt_and_truncated_uploads():
    r = _ready(1)
    pkg, digest, sig = slave_package()
    bad = bytearray(pkg)
    bad[600] ^= 1
    e = raises(U.UpdateError, lambda: r.upload(bytes(bad), digest, sig))
    assert e.code == U.E_HASH and "sha256" in e.msg
    st = r.store
    st.begin(len(pkg), digest)
    st.chunk(0, pkg[:len(pkg) - 100])
    e = raises(U.UpdateError, st.finish)
    assert e.code == U.E_SIZE and "truncated" in e.msg
    assert not st.staged
    e = raises(U.UpdateError, lambda: r.fwd.start(1, r.clock.ticks_ms()))
    assert "no slave package" in e.msg


def test_an_upload_that_does_not_complete_leaves_nothing_on_the_master_flash():
    # docs/can_internal.md: an upload that does not complete leaves nothing
    # on the master's flash.  A package up to 1 MB goes to a littlefs of
    # 768 KB: before, the write that found the flash full was refused but
    # its partial file stayed, for good (nothing removed it, not even a
    # reboot), and with it a full flash under the master's latch, settings
    # and state records (a latch that cannot be saved is cleared by a restart).
    from fakeflash import FakeFlash
    from bms.pkgstore import PackageStore
    from bms.store import exists
    pkg, digest, sig = slave_package()
    fs = FakeFlash()
    st = PackageStore(fs)
    st.begin(len(pkg), digest, sig)
    st.chunk(0, pkg[:240])

    def full(_buf):
        raise OSError(28)   # ENOSPC
    st._f.write = full
    e = raises(U.UpdateError, lambda: st.chunk(240, pkg[240:480]))
    assert e.code == U.E_FLASH
    assert not exists(fs, st.path)
    # Refused at the finish (hash), or dropped mid-transfer: gone too.
    bad = bytearray(pkg)
    bad[600] ^= 1
    st.begin(len(pkg), digest, sig)
    st.chunk(0, bytes(bad))
    raises(U.UpdateError, st.finish)
    assert not exists(fs, st.path)
    st.begin(len(pkg), digest, sig)
    st.chunk(0, pkg[:240])
    st.abort()
    assert not exists(fs, st.path)
    # One left from before a reboot (the staged state lives in RAM) is
    # dropped when the store is built.
    f = fs.open(st.path, "wb")
    f.write(pkg)
    f.close()
    PackageStore(fs)
    assert not exists(fs, st.path)


def _refused(r, k, words):
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_ERROR
    assert r.fwd.results[k] == SU.SR_REFUSED
    for w in words:
        assert w in r.fwd.err_text, r.fwd.err_text
    assert r.bms.inhibit == 0
    _untouched(r, k)
    assert r.slaves[k].fw_version == (0, 1, 0) and r.boots[k] == 1


def test_wrongly_signed_package_refused_by_the_slave():
    r = _ready(2, key=KEY)
    pkg, digest, sig = slave_package(key=b"another-key")
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    _refused(r, 0, ("slave 1 refused", "signature"))
    # Refused after the first block: the rest was never sent.
    assert len(r.data_frames(1)) <= 2 * 16


def test_unsigned_package_refused_when_the_slave_has_a_key():
    r = _ready(1, key=KEY)
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, None)
    r.fwd.start(1, r.clock.ticks_ms())
    _refused(r, 0, ("signature",))


def test_package_corrupted_on_the_master_flash_refused_by_the_slave_hash():
    r = _ready(2)
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, sig)
    f = r.mfs.open(r.store.path, "r+b")
    f.seek(3000)
    f.write(b"X")
    f.close()
    r.fwd.start(1, r.clock.ticks_ms())
    _refused(r, 0, ("sha256 mismatch",))


def test_not_an_archive_refused_by_the_slave():
    r = _ready(1)
    pkg = b"this is not a tar archive" * 100
    digest = sha256(pkg).digest()
    r.upload(pkg, digest)
    r.fwd.start(1, r.clock.ticks_ms())
    _refused(r, 0, ("format",))


def test_frame_loss_completes_through_retransmission():
    r = _ready(2)
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, sig)
    lost = drop_frames(r.snodes[0], C.ID_FWDATA, 23)        # data frames lost at the slave
    lost_ack = drop_frames(r.mnode, C.ID_FWACK, 9)           # acknowledgements lost
    lost_ctl = drop_frames(r.snodes[0], C.ID_FWCTL, 3)       # every third control frame
    fw = r.slaves[0].fw     # the receiver of this boot (the slave reboots at the end)
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_DONE, r.fwd.err_text
    assert lost[0] >= 100 and lost_ack[0] >= 9 and lost_ctl[0] >= 2
    assert r.fwd.retransmits > 0
    assert fw.gaps > 0 and fw.duplicates > 0
    r.run(3000)
    assert r.version(1) == (0, 2, 0)


def test_all_slaves_one_after_another():
    r = _ready(3)
    pkg, digest, sig = slave_package(version=(1, 0, 3))
    r.upload(pkg, digest, sig)
    r.fwd.start(SU.TARGET_ALL, r.clock.ticks_ms())
    order = []

    def watch():
        a = r.fwd.addr
        if not order or order[-1] != a:
            order.append(a)
        # never two slaves away at once
        busy = [k for k in range(3) if r.fwd.results[k] == SU.SR_ACTIVE]
        assert len(busy) <= 1
        return _done(r)
    assert r.run_until(watch, 3 * LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_DONE, r.fwd.err_text
    assert order == [1, 2, 3]
    assert list(r.fwd.results[:3]) == [SU.SR_UPDATED] * 3
    r.run(3000)
    assert [r.version(a) for a in (1, 2, 3)] == [(1, 0, 3)] * 3


def test_slave_that_does_not_confirm_rolls_back():
    r = _ready(2, trial_timeout_ms=4000)
    pkg, digest, sig = slave_package(version=(0, 3, 0), defect="afe")
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_ERROR
    assert r.fwd.results[0] == SU.SR_ROLLED_BACK
    assert "rolled back" in r.fwd.err_text
    # boot 1 factory, then max_tries (3) boots of the new slot, then the rollback boot
    assert r.boots[0] == 5
    up = r.slaves[0].fw.up
    assert (up.state, up.active) == (U.ST_OK, U.ROOT_SLOT)
    assert r.slaves[0].fw_version == (0, 1, 0)
    assert r.bms.inhibit == 0
    r.run(4000)
    assert r.master.mod_state[0] == 1 and r.version(1) == (0, 1, 0)


def test_all_stops_at_the_first_failure():
    r = _ready(3, key=KEY)
    pkg, digest, sig = slave_package(key=KEY)
    r.slaves[1].fw.up.key = b"other-key"     # slave 2 holds another key
    r.upload(pkg, digest, sig)
    r.fwd.start(SU.TARGET_ALL, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), 3 * LIMIT_MS) >= 0
    assert list(r.fwd.results[:3]) == [SU.SR_UPDATED, SU.SR_REFUSED, SU.SR_ABORTED]
    assert "slave 2 refused" in r.fwd.err_text
    _untouched(r, 2)


def test_abort_mid_transfer_closes_the_slave_staging():
    r = _ready(1)
    pkg, digest, sig = slave_package()
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    r.run_until(lambda: r.fwd.base > 40, 10000)
    r.fwd.abort(r.clock.ticks_ms())
    r.run(200)
    assert r.fwd.phase == SU.FP_ERROR and r.fwd.results[0] == SU.SR_ABORTED
    assert r.slaves[0].fw.phase == 0            # idle: staging file closed and removed
    assert not r.fss[0].snapshot("/fw/stage.pkg")
    assert r.bms.inhibit == 0


def test_window_name_tables_mirror_the_forwarder():
    from comms.regs import slave_update as RSU
    assert RSU.PHASE_NAMES == SU.FP_NAMES
    assert RSU.RESULT_NAMES == SU.SR_NAMES
    assert RSU.TARGET_ALL == SU.TARGET_ALL


def test_slave_finish_runs_in_bounded_steps_while_it_keeps_reporting():
    """The slave verifies and unpacks one Updater.finish_step per loop pass: many
    passes, each within the step's flash budget, and its status frames keep
    coming meanwhile (a blocking finish would starve its 2 s watchdog)."""
    r = _ready(2)
    pkg, digest, sig = slave_package(version=(0, 2, 0))
    r.upload(pkg, digest, sig)
    s = r.slaves[0]
    up = s.fw.up
    up.step_bytes = 256             # a small budget: many steps for this package
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: s.fw.phase == 2, LIMIT_MS) >= 0   # PH_FINISHING
    passes = 0
    not_ok = 0
    while s.fw.phase == 2 and passes < 10000:
        r.step()
        passes += 1
        if r.master.mod_state[0] != 1:
            not_ok += 1
    assert passes > 10, passes                       # not one blocking call
    assert up.steps > 10 and up.max_step_io <= 2 * 256 + 512, (up.steps, up.max_step_io)
    assert up.state == U.ST_STAGED                   # staged, not yet applied
    assert not_ok == 0                               # its sweeps kept coming
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_DONE, r.fwd.err_text


def test_slave_whose_new_firmware_cannot_talk_rolls_back():
    # docs/can_internal.md: "A slave that does not get there [back in normal
    # operation] within trial_timeout_ms resets itself, and select_at_boot
    # rolls back to the previous slot after max_tries such boots"; a new
    # firmware whose CAN controller never comes up is the plainest case.
    r = _ready(2, trial_timeout_ms=4000)
    pkg, digest, sig = slave_package(version=(0, 3, 0), defect="can")
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.results[0] == SU.SR_ROLLED_BACK, r.fwd.err_text
    assert r.boots[0] == 5
    up = r.slaves[0].fw.up
    assert (up.state, up.active) == (U.ST_OK, U.ROOT_SLOT)
    r.run(4000)
    assert r.master.mod_state[0] == 1 and r.version(1) == (0, 1, 0)


def test_a_package_staged_without_apply_is_not_swapped_in_by_a_reset():
    # docs/can_internal.md: the update refuses to start unless the relays are
    # open, and the master holds them open during it; the slave's staged
    # package is swapped in only by the reset that follows the master's APPLY.
    # The master restarts between FINISH and APPLY: the package stays staged
    # at the slave, the relays close again, the pack is in use - and the
    # slave's next reset (watchdog, power cycle) must not boot the new
    # firmware nobody asked for.
    r = _ready(2)
    pkg, digest, sig = slave_package(version=(0, 2, 0))
    r.upload(pkg, digest, sig)
    r.fwd.start(1, r.clock.ticks_ms())
    before = r.restart_master_before_apply(0)
    r.run(500)
    assert r.slaves[0].fw.phase == 3 and r.boots[0] == 1     # staged, on its old firmware
    assert r.bms.inhibit == 0
    r.bms.contactors.state[0] = 1        # discharge closed: the pack is in use
    for boot in (2, 3):                  # a watchdog reset, then a power cycle
        r.boot(0)
        up = r.slaves[0].fw.up
        assert (up.state, up.active) == (U.ST_OK, U.ROOT_SLOT), (boot, up.state, up.active)
        assert r.slaves[0].fw_version == (0, 1, 0) and r.boots[0] == boot
    r.run(3000)
    assert r.master.mod_state[0] == 1 and r.version(1) == (0, 1, 0)
    # The master saw it as staged (activation not asked for), not as pending.
    assert U.STATE_NAMES[before.last_fw & 3] == "staged", before.last_fw
    # With the relays open the update can be asked for again and goes through.
    r.bms.contactors.state[0] = 0
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.results[0] == SU.SR_UPDATED, r.fwd.err_text
    r.run(3000)
    assert r.version(1) == (0, 2, 0)


def test_apply_never_answered_ends_with_an_abort_that_drops_the_staged_package():
    # The master gives up on an APPLY the slave never answers (lost frames):
    # it stops holding the relays open, so it must not leave behind a package
    # that the slave's next reset would swap in; its ABORT drops it at once.
    r = _ready(2)
    pkg, digest, sig = slave_package(version=(0, 2, 0))
    r.upload(pkg, digest, sig)
    node = r.snodes[0]
    orig = node.deliver

    def deliver(cid, data, ext):
        if cid == C.ID_FWCTL and data[0] == C.FW_APPLY:
            return
        orig(cid, data, ext)
    node.deliver = deliver
    r.fwd.start(1, r.clock.ticks_ms())
    assert r.run_until(lambda: _done(r), LIMIT_MS) >= 0
    assert r.fwd.phase == SU.FP_ERROR and "does not answer" in r.fwd.err_text, r.fwd.err_text
    assert r.bms.inhibit == 0
    r.run(200)
    fw = r.slaves[0].fw
    assert fw.phase == 0 and (fw.up.state, fw.up.active) == (U.ST_OK, U.ROOT_SLOT)
    r.boot(0)
    assert r.slaves[0].fw.up.active == U.ROOT_SLOT and r.slaves[0].fw_version == (0, 1, 0)
