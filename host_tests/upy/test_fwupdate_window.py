"""The update and persistent-log windows through raw RTU frames (MicroPython-compatible).

Frames are built by the rig (CRC computed independently); the Updater and
PersistLog run on the fake flash.
"""
from bms import update as U
from bms.persistlog import PersistLog
from comms.regs import update as RU
from comms.regs import plog as RPL
from comms.registers import A_PLOG, A_UPDATE
from fakeflash import FakeFlash
from modbus_rig import ModbusRig, crc_ok, exception_code, with_crc
from update_rig import NEW_FW, package

KEY = b"k" * 32


def _rig():
    r = ModbusRig()
    fs = FakeFlash()
    up = U.Updater(fs, key=KEY)
    pl = PersistLog(fs)
    pl.attach(r.bms.meas, r.bms.soc)
    r.regs.attach_update(up, pl)
    return r, fs, up, pl


def _regs(b):
    if len(b) & 1:
        b = bytes(b) + b"\0"
    return [(b[i] << 8) | b[i + 1] for i in range(0, len(b), 2)]


def _write_long(r, addr, values):
    """FC16 of a long frame: the 64-byte reads of the server need > 6 ms to collect it."""
    pdu = bytearray((1, 16, addr >> 8, addr & 0xFF, 0, len(values), 2 * len(values)))
    for v in values:
        pdu.append((v >> 8) & 0xFF)
        pdu.append(v & 0xFF)
    return r.send_raw(with_crc(bytes(pdu)), gap_ms=12)


def _begin(r, size, digest, sig):
    regs = [size >> 16, size & 0xFFFF] + _regs(digest)
    if sig is not None:
        regs += _regs(sig)
    return _write_long(r, A_UPDATE + RU.UP_BEGIN, regs)


def _send(r, pkg):
    off = 0
    while off < len(pkg):
        data = pkg[off:off + 240]
        resp = _write_long(r, A_UPDATE + RU.UP_CHUNK,
                           [off >> 16, off & 0xFFFF, len(data)] + _regs(data))
        if not crc_ok(resp):
            return resp
        off += len(data)
    return None


def _text(r):
    regs = r.read(A_UPDATE + RU.UP_ERR_TEXT, RU.UP_TEXT_REGS)
    b = bytearray()
    for v in regs:
        b.append(v >> 8)
        b.append(v & 0xFF)
    return bytes(b).split(b"\0")[0].decode()


def test_update_over_rtu_frames_needs_unlock_then_stages():
    r, fs, up, _pl = _rig()
    pkg, digest, sig = package(NEW_FW, KEY)
    assert exception_code(_begin(r, len(pkg), digest, sig), 16) == 1   # locked
    assert up._f is None
    assert crc_ok(r.unlock())
    assert crc_ok(_begin(r, len(pkg), digest, sig))
    st = r.read(A_UPDATE + RU.UP_STATUS, 6)
    assert st[0] == RU.US_RECEIVING and st[3:5] == [len(pkg) >> 16, len(pkg) & 0xFFFF]
    # A byte count that does not match the data: exception 03, nothing written.
    resp = _write_long(r, A_UPDATE + RU.UP_CHUNK, [0, 0, 238] + [0] * 120)
    assert exception_code(resp, 16) == 3 and up.offset == 0
    assert _send(r, pkg) is None
    assert r.read(A_UPDATE + RU.UP_PROGRESS, 1)[0] == 1000
    assert crc_ok(r.write1(A_UPDATE + RU.UP_CMD, RU.UC_FINISH))
    # The finish runs in the background, one bounded step per loop pass.
    seen = _run_finish(r, up)
    assert seen[0][0] == RU.US_VERIFYING and seen[-1] == (RU.US_STAGED, 1000)
    assert RU.US_UNPACKING in [s for s, _pm in seen]
    pms = [pm for _s, pm in seen]
    assert pms == sorted(pms) and len(set(pms)) > 3, seen
    assert up.state == U.ST_PENDING
    assert r.read(A_UPDATE + RU.UP_FW_STATE, 1)[0] == U.ST_PENDING
    assert crc_ok(r.write1(A_UPDATE + RU.UP_CMD, RU.UC_RESTART))
    r.run(60)
    assert r.bms.restart_requested
    up2 = U.Updater(fs, key=KEY)
    assert up2.select_at_boot() == "/fw/a"


def _run_finish(r, up, limit=500):
    """Loop passes (control step, Modbus poll, update step) until the finish ends;
    (status, finish progress) read through RTU frames after every step."""
    seen = []
    for _ in range(limit):
        r.run(1)
        up.poll()
        st = r.read(A_UPDATE + RU.UP_STATUS, 1)[0]
        pm = r.read(A_UPDATE + RU.UP_FIN_PM, 1)[0]
        seen.append((st, pm))
        if st in (RU.US_STAGED, RU.US_ERROR):
            return seen
    raise AssertionError("finish did not end: %r" % seen[-3:])


def test_flash_error_found_by_a_finish_step_is_readable():
    r, fs, up, _pl = _rig()
    pkg, digest, sig = package(NEW_FW, KEY)
    assert crc_ok(r.unlock())
    assert crc_ok(_begin(r, len(pkg), digest, sig))
    assert _send(r, pkg) is None
    fs.files["/fw/stage.pkg"][1000] ^= 0x10       # the flash lost a bit after the write
    assert crc_ok(r.write1(A_UPDATE + RU.UP_CMD, RU.UC_FINISH))   # received hash is fine
    seen = _run_finish(r, up)
    assert seen[-1][0] == RU.US_ERROR
    assert r.read(A_UPDATE + RU.UP_ERROR, 1)[0] == U.E_FLASH
    assert "update refused (flash): staged file differs" in _text(r), _text(r)
    assert "/fw/stage.pkg" not in fs.files and "/fw/a/main.py" not in fs.files
    assert up.state == U.ST_OK and U.Updater(fs, key=KEY).select_at_boot() == ""


def test_restart_refused_when_nothing_staged():
    r, _fs, _up, _pl = _rig()
    assert crc_ok(r.unlock())
    assert exception_code(r.write1(A_UPDATE + RU.UP_CMD, RU.UC_RESTART), 6) == 3
    assert "no update staged" in _text(r)
    r.run(60)
    assert not r.bms.restart_requested


def test_wrong_hash_and_signature_refused_with_reason():
    r, fs, up, _pl = _rig()
    pkg, digest, sig = package(NEW_FW, KEY)
    assert crc_ok(r.unlock())
    assert exception_code(_begin(r, len(pkg), digest, b"x" * 32), 16) == 3
    assert "bad signature" in _text(r)
    assert r.read(A_UPDATE + RU.UP_ERROR, 1)[0] == U.E_SIGNATURE
    bad = bytearray(pkg)
    bad[600] ^= 1
    assert crc_ok(_begin(r, len(pkg), digest, sig))
    assert _send(r, bytes(bad)) is None
    assert exception_code(r.write1(A_UPDATE + RU.UP_CMD, RU.UC_FINISH), 6) == 3
    assert "sha256 mismatch" in _text(r)
    assert r.read(A_UPDATE + RU.UP_STATUS, 1)[0] == RU.US_ERROR
    assert up.state == U.ST_OK and up.active == U.ROOT_SLOT
    assert U.Updater(fs, key=KEY).state == U.ST_OK


def test_persistent_log_window_reads_records_with_snapshot():
    r, _fs, _up, pl = _rig()
    r.run(300)   # measurements in place
    for k in range(9):
        pl.append(1000 + k, 1, k, 3300 + k)   # fault_set, a = k
    pl.flush()
    assert r.read(A_PLOG + RPL.PL_COUNT, 1)[0] == 9
    assert crc_ok(r.write1(A_PLOG + RPL.PL_INDEX, 6))     # no role needed
    w = r.read(A_PLOG + RPL.PL_REC, RPL.PLOG_WINDOW * RPL.PLOG_REC_REGS)
    recs = pl.records()
    for k in range(3):
        f = w[k * RPL.PLOG_REC_REGS:(k + 1) * RPL.PLOG_REC_REGS]
        rec = recs[6 + k]
        assert (f[0] << 16 | f[1]) == rec[0]
        assert f[3] == 1 and (f[6] << 16 | f[7]) == 6 + k and (f[8] << 16 | f[9]) == 3306 + k
        assert f[12] == r.bms.meas.max_mv and f[13] == r.bms.meas.min_mv
        assert f[18] == r.bms.soc.soc_pm
    assert w[3 * RPL.PLOG_REC_REGS:] == [0] * (3 * RPL.PLOG_REC_REGS)   # beyond the last record


def test_persistent_log_window_spans_segments_and_any_read_window():
    # Records index+k at PL_REC + 20k (docs/modbus.md), across a segment
    # boundary and after the oldest segment was recycled; a read may start
    # and end anywhere and holds the same registers as the whole block.
    r = ModbusRig()
    fs = FakeFlash()
    pl = PersistLog(fs, segments=3, per_seg=4)
    pl.attach(r.bms.meas, r.bms.soc)
    r.regs.attach_update(U.Updater(fs, key=KEY), pl)
    r.run(300)
    for k in range(14):          # 3 x 4: the first segment is reused
        pl.append(2000 + k, 1, k, 10 * k)
        pl.flush()
    n = len(pl)
    got = [pl.get(i) for i in range(n)]
    for i in range(-1, n + 2):
        for m in (1, 3, 6):
            want = [got[j] if 0 <= j < n and i >= 0 else None for j in range(i, i + m)]
            assert pl.window(i, m) == want, (i, m)
    for index in (0, 2, n - 3):
        assert crc_ok(r.write1(A_PLOG + RPL.PL_INDEX, index))
        whole = r.read(A_PLOG, 100) + r.read(A_PLOG + 100, RPL.SIZE - 100)  # 125 at most
        assert whole[RPL.PL_COUNT] == n and whole[RPL.PL_INDEX] == index
        for k in range(RPL.PLOG_WINDOW):
            f = whole[RPL.PL_REC + k * RPL.PLOG_REC_REGS:][:RPL.PLOG_REC_REGS]
            if index + k < n:
                rec = got[index + k]
                assert (f[0] << 16 | f[1]) == rec[0] and f[3] == 1
                assert (f[6] << 16 | f[7]) == rec[4] and (f[8] << 16 | f[9]) == rec[5]
            else:
                assert f == [0] * RPL.PLOG_REC_REGS
        for start in range(0, RPL.SIZE, 7):
            for count in (1, 2, 21, 45):
                if start + count <= RPL.SIZE:
                    assert r.read(A_PLOG + start, count) == whole[start:start + count], \
                        (index, start, count)
