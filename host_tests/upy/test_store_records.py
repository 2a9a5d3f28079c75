"""Settings store: migration by name, factory reset, state record, format fallback."""
from fakeflash import FakeFlash
from store_rig import raises

from bms import params as P
from bms import store as S
from bms.digest import crc32, hmac_sha256


def _pairs_payload(pairs):
    out = bytearray()
    import struct
    out.extend(struct.pack("<H", len(pairs)))
    for name, v in pairs:
        b = name.encode()
        out.append(len(b))
        out.extend(b)
        out.extend(struct.pack("<i", v))
    return out


def test_crc32_and_hmac_vectors():
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC check value
    # RFC 4231 test case 2
    mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac == bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    # RFC 4231 test case 6: key longer than the block
    mac = hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert mac == bytes.fromhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")


def test_roundtrip_and_alternating_slots():
    fs = FakeFlash()
    p = P.ParamSet(P.CHEM_NMC, max_cells=16)
    st = S.SettingsStore(fs)
    assert st.load_params(p)[0][3].startswith("no stored settings")
    p.set(P.P_CAPACITY, 2800)
    st.save_params(p)
    assert "/data/params.a" in fs.files and "/data/params.b" not in fs.files
    p.set(P.P_CAPACITY, 2900)
    st.save_params(p)
    assert "/data/params.b" in fs.files
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    assert S.SettingsStore(fs).load_params(p2) == []
    assert p2[P.P_CAPACITY] == 2900 and p2[P.P_CHEMISTRY] == P.CHEM_NMC
    assert list(p2.values) == list(p.values)


def test_corrupt_newest_slot_falls_back():
    fs = FakeFlash()
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    st = S.SettingsStore(fs)
    st.load_params(p)
    p.set(P.P_CAPACITY, 1111)
    st.save_params(p)   # slot a, seq 1
    p.set(P.P_CAPACITY, 2222)
    st.save_params(p)   # slot b, seq 2
    fs.files["/data/params.b"][20] ^= 0x01   # one flipped bit
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    S.SettingsStore(fs).load_params(p2)
    assert p2[P.P_CAPACITY] == 1111


def test_unknown_format_from_newer_firmware_is_skipped():
    fs = FakeFlash()
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    st = S.SettingsStore(fs)
    st.load_params(p)
    p.set(P.P_CAPACITY, 1500)
    st.save_params(p)
    # A newer firmware wrote format 9 with a higher sequence number, then rolled back.
    rec = S.encode_record(S.KIND_PARAMS, 9, 7, b"whatever")
    fs.files["/data/params.b"] = bytearray(rec)
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    st2 = S.SettingsStore(fs)
    st2.load_params(p2)
    assert p2[P.P_CAPACITY] == 1500
    p2.set(P.P_CAPACITY, 1600)
    st2.save_params(p2)   # overwrites the unreadable slot, keeps the good one
    assert S.decode_record(bytes(fs.files["/data/params.a"]), S.KIND_PARAMS, (1,)) is not None


def test_migration_by_name():
    fs = FakeFlash()
    d = P.defaults(P.CHEM_NMC)
    pairs = []
    for i in range(P.N_PARAMS):
        name = P.TABLE[i][0]
        if name == "heat_on":
            continue                          # a parameter this old table lacked
        v = d[i]
        if name == "capacity":
            v = 4321                          # kept
        if name == "ov_delay":
            v = 99999                         # out of range now
        pairs.append((name, v))
    pairs.insert(5, ("old_thing", 7))         # a parameter since removed
    rec = S.ABRecord(fs, "/data/params", S.KIND_PARAMS)
    rec.save(1, _pairs_payload(pairs))
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    st = S.SettingsStore(fs)
    report = st.load_params(p)
    why = {}
    for name, old, new, reason in report:
        why[name] = (old, new, reason)
    assert p[P.P_CHEMISTRY] == P.CHEM_NMC
    assert p[P.P_CAPACITY] == 4321
    assert why["ov_delay"] == (99999, 5000, "out of range") and p[P.P_OV_DELAY] == 5000
    assert why["heat_on"][2] == "new parameter" and p[P.P_HEAT_ON] == d[P.P_HEAT_ON]
    assert why["old_thing"][2] == "dropped"
    assert P.check(p.values, 16) is None
    # The migrated set was written back: the next boot is clean.
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    assert S.SettingsStore(fs).load_params(p2) == []
    assert list(p2.values) == list(p.values)


def test_migration_repairs_broken_rule_and_board_limit():
    fs = FakeFlash()
    d = P.defaults(P.CHEM_LFP)
    pairs = [(P.TABLE[i][0], d[i]) for i in range(P.N_PARAMS)]
    pairs[P.P_OV_REC] = ("ov_rec", 3700)      # in range but above ov1 (3650): rule broken
    pairs[P.P_CELL_COUNT] = ("cell_count", 200)  # more cells than this 16-cell board
    S.ABRecord(fs, "/data/params", S.KIND_PARAMS).save(1, _pairs_payload(pairs))
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    report = S.SettingsStore(fs).load_params(p)
    names = [r[0] for r in report]
    assert "ov_rec" in names and "cell_count" in names
    assert p[P.P_OV_REC] == d[P.P_OV_REC] and p[P.P_CELL_COUNT] == 16
    assert P.check(p.values, 16) is None


def test_migration_repairs_an_unreachable_overcurrent_retry_window():
    # A set an older firmware accepted (oc_release 300 s: 3 retries cannot
    # come within the default 600 s window) loses only that parameter.
    fs = FakeFlash()
    d = P.defaults(P.CHEM_LFP)
    pairs = [(P.TABLE[i][0], d[i]) for i in range(P.N_PARAMS)]
    pairs[P.P_OC_RELEASE] = ("oc_release", 300)
    pairs[P.P_CAPACITY] = ("capacity", 2800)
    S.ABRecord(fs, "/data/params", S.KIND_PARAMS).save(1, _pairs_payload(pairs))
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    report = S.SettingsStore(fs).load_params(p)
    assert [r[0] for r in report] == ["oc_release"], report
    assert p[P.P_OC_RELEASE] == d[P.P_OC_RELEASE] and p[P.P_CAPACITY] == 2800
    assert P.check(p.values, 16) is None


def test_factory_reset():
    fs = FakeFlash()
    p = P.ParamSet(P.CHEM_LFP, max_cells=16)
    st = S.SettingsStore(fs)
    st.load_params(p)
    p.set_many(((P.P_CAPACITY, 3000), (P.P_CELL_COUNT, 8)))
    st.save_params(p)
    st.factory_reset(p, P.CHEM_NMC)
    assert p[P.P_CHEMISTRY] == P.CHEM_NMC and p[P.P_CAPACITY] == 1000 and p[P.P_CELL_COUNT] == 16
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    S.SettingsStore(fs).load_params(p2)
    assert list(p2.values) == list(P.defaults(P.CHEM_NMC))


def test_state_record():
    fs = FakeFlash()
    st = S.SettingsStore(fs)
    assert st.load_state() is None
    s = S.State()
    s.soc_pm = 734
    s.cycles = 12
    s.op_s = 123456
    s.lease_counter = 3
    st.save_state(s)
    s.soc_pm = 700
    st.save_state(s)
    got = S.SettingsStore(fs).load_state()
    assert got.soc_pm == 700 and got.cycles == 12 and got.op_s == 123456 and got.lease_counter == 3
    assert st.state_rec.writes == 2
    raises(ValueError, S.State().unpack, b"short")


def test_log_sink_allocates_nothing():
    """The sink runs inside the control cycle: heap-locked under MicroPython."""
    import micropython
    from bms.measurements import Measurements
    from bms.persistlog import PersistLog
    log = PersistLog(FakeFlash())
    log.attach(Measurements(16, (0, 1, 2, 2)), None)
    log.sink(1, 5, 1, 3, 4)
    micropython.heap_lock()
    try:
        for k in range(8):
            log.sink(k, 5, 1, 3, 4)
    finally:
        micropython.heap_unlock()
    assert log.pending == 9


def test_legacy_data_dir_moves_out_of_the_code_package_name():
    # The board image's code is the frozen package ``bms``: a /bms directory
    # on the flash would shadow it at the next boot.  Data an older firmware
    # left there moves to /data; code files of a file-based install stay.
    fs = FakeFlash()
    p = P.ParamSet(P.CHEM_NMC, max_cells=16)
    p.set(P.P_CAPACITY, 2800)
    S.SettingsStore(fs, root="/bms").save_params(p)
    fs.mkdir("/bms/log")
    f = fs.open("/bms/log/log.0", "wb")
    f.write(b"x")
    f.close()
    assert S.move_legacy_data(fs) == 2            # params.a and log/
    assert "/bms/params.a" not in fs.files and "/data/params.a" in fs.files
    assert bytes(fs.files["/data/log/log.0"]) == b"x"
    assert not S.exists(fs, "/bms")               # nothing left: the name is free again
    p2 = P.ParamSet(P.CHEM_LFP, max_cells=16)
    assert S.SettingsStore(fs).load_params(p2) == []
    assert p2[P.P_CAPACITY] == 2800
    assert S.move_legacy_data(fs) == 0            # once


def test_legacy_data_move_keeps_code_and_newer_data():
    fs = FakeFlash()
    fs.mkdir("/bms")
    for path, data in (("/bms/core.mpy", b"code"), ("/bms/state.a", b"old")):
        f = fs.open(path, "wb")
        f.write(data)
        f.close()
    fs.mkdir("/data")
    f = fs.open("/data/state.a", "wb")
    f.write(b"new")
    f.close()
    assert S.move_legacy_data(fs) == 0
    assert bytes(fs.files["/bms/core.mpy"]) == b"code"
    assert bytes(fs.files["/data/state.a"]) == b"new"
