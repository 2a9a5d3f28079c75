"""Frame packing of the internal CAN protocol, byte for byte (values typed from the DBC)."""
from comms import can_ids as C


def test_ids_by_hand():
    # docs/bms_internal.dbc: M01_STATUS = 0x100, M16_CELLS_3 = 0x23F, M07_BAL = 0x026
    assert C.ID_STATUS + 0 == 0x100
    assert C.cells_id(1, 0) == 0x200
    assert C.cells_id(16, 3) == 0x23F
    assert C.cells_id(13, 1) == 0x231
    assert C.ID_BAL + 6 == 0x026
    assert C.ID_TEMPS + 15 == 0x28F
    # master frames outrank every slave frame
    assert max(C.ID_SYNC, C.ID_ASSIGN, C.ID_REQUEST, C.ID_BAL + 15, C.ID_CONFIG + 15) < C.ID_STATUS


def test_sync_bytes():
    b = bytearray(8)
    assert C.sync_pack(b, 0x1234, C.SYNC_BAL_OK | C.SYNC_SLEEP, 16, 1000, 40, 6) == 8
    assert bytes(b) == bytes([0x34, 0x12, 0x03, 0x10, 0xE8, 0x03, 0x28, 0x06])


def test_status_bytes_and_age_saturation():
    b = bytearray(8)
    C.status_pack(b, C.ST_RUN | C.STATE_LOCKED, 16, 0x1FF, C.LF_OV | C.LF_AFE, 0x8001, 3, 120)
    assert bytes(b) == bytes([0x11, 16, 0xFF, 0x11, 0x01, 0x80, 3, 12])
    C.status_pack(b, 0, 5, 0, 0, 0, 0, 99999)
    assert b[7] == 255


def test_bal_timeout_rounds_up():
    b = bytearray(8)
    assert C.bal_pack(b, 0xA5A5, 3000, 258) == 4
    assert bytes(b[:4]) == bytes([0xA5, 0xA5, 30, 2])
    C.bal_pack(b, 1, 150, 0)
    assert b[2] == 2   # never shorter than asked
    C.bal_pack(b, 1, 60000, 0)
    assert b[2] == 255


def test_config_negative_temperature():
    b = bytearray(8)
    C.config_pack(b, 12, 3, 3800, 2150, -5, C.CFG_SET_CELLS)
    assert bytes(b) == bytes([12, 3, 0xD8, 0x0E, 0x66, 0x08, 0xFB, 0x01])


def test_uid_and_signed_helpers():
    b = bytearray(8)
    C.announce_pack(b, 0xA1B2C3D4E5F6, 16)
    assert bytes(b) == bytes([0xF6, 0xE5, 0xD4, 0xC3, 0xB2, 0xA1, 16, C.PROTO_VERSION])
    assert C.uid48(b, 0) == 0xA1B2C3D4E5F6
    C.assign_pack(b, 0x010203040506, 9)
    assert bytes(b) == bytes([6, 5, 4, 3, 2, 1, 9, 0])
    b[0] = 0x00
    b[1] = 0x80
    assert C.i16(b, 0) == -32768
    b[0] = 0x38
    b[1] = 0xFF
    assert C.i16(b, 0) == -200
    assert C.u16(b, 0) == 0xFF38


def test_version_frame():
    b = bytearray(8)
    C.version_pack(b, 0xAABBCCDDEEFF)
    assert bytes(b[:4]) == bytes([C.FW_VERSION[0], C.FW_VERSION[1], C.FW_VERSION[2], C.PROTO_VERSION])
    assert bytes(b[4:]) == bytes([0xFF, 0xEE, 0xDD, 0xCC])


def test_schedule_fits_the_sweep():
    # 16 module slots plus the master's slot 0 inside one sweep, and every
    # module's frames (status, 4 cell frames, temps, version) inside its slot.
    assert (C.MAX_MODULES + 1) * C.SLOT_MS <= C.SWEEP_MS
    assert (1 + C.CELL_FRAMES + 1 + 1 - 1) * C.GAP_MS < C.SLOT_MS
    # the master sees at most one frame per GAP_MS: within a 300 frame/s driver
    assert 1000 // C.GAP_MS < 300
