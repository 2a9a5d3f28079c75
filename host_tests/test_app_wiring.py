"""The board entry point builds the whole product: main.build() on the fake
machine (real board file, real drivers, byte-level chip emulators), a fake
flash, a virtual clock, then raw bytes on the RS485 UART and frames on the
emulated CAN bus.

The Modbus CRC used here is the bitwise one typed in from the spec in
host_tests/upy/modbus_rig.py (not the firmware's table)."""
import drv_helpers  # noqa: F401  (tools/sim on sys.path)
from canbus import BusNode, VirtualCanBus
from drv_fakemachine import FakeMachine
from fakeflash import FakeFlash
from modbus_rig import UsClock, ascii_regs, ref_crc, with_crc

import app as main
import tools
from bms.params import ParamSet, index
from bms.store import SettingsStore
from comms.registers import A_AUTH, A_PARAMS, monitor_address

LFP16 = [3300 + i for i in range(16)]
ADDR = 1


class WireUart:
    """machine.UART with a receive queue the test fills and a transmit log."""

    def __init__(self, uid, **kw):
        self.uid = uid
        self.baud = kw.get("baudrate")
        self.rx = bytearray()
        self.tx = bytearray()

    def init(self, baudrate=None, **kw):
        self.baud = baudrate

    def write(self, b):
        self.tx += bytes(b)
        return len(b)

    def flush(self):
        pass

    def any(self):
        return len(self.rx)

    def readinto(self, buf, nbytes=None):
        n = min(len(buf) if nbytes is None else nbytes, len(self.rx))
        if n == 0:
            return None
        buf[:n] = self.rx[:n]
        del self.rx[:n]
        return n


class Rig:
    def __init__(self, fs=None, cells=LFP16, cfg=None, board="pico"):
        self.fm = FakeMachine(cells)
        self.uarts = {}
        rig = self

        def uart(uid, **kw):
            u = WireUart(uid, **kw)
            rig.uarts[uid] = u
            return u
        self.fm.UART = uart
        self.fs = fs if fs is not None else FakeFlash()
        self.clock = UsClock()
        self.clock.elapsed_ms = 0
        self.bus = VirtualCanBus(500000)
        self.bus.attach(self.fm.can)
        self.peer = BusNode(self.bus)
        self.app = main.build(board, machine=self.fm, clock=self.clock, fs=self.fs, cfg=cfg)

    @property
    def rs485(self):
        return self.uarts[0]   # pico: UART0 = RS485 (LC-3)

    def run(self, ms):
        """The main loop in virtual time: 1 ms per pass (IDLE_MAX_MS caps the idle)."""
        for _ in range(ms):
            self.app.step()
            self.bus.step()
            self.clock.advance(1)
            self.clock.elapsed_ms += 1

    def request(self, pdu, wait_ms=30):
        u = self.rs485
        u.tx = bytearray()
        u.rx += with_crc(bytes((ADDR,)) + bytes(pdu))
        self.run(wait_ms)
        return bytes(u.tx)


def crc_ok(r):
    return len(r) >= 4 and ref_crc(r[:-2]) == r[-2] | (r[-1] << 8)


def read_regs(rig, start, count):
    r = rig.request(bytes((3, start >> 8, start & 0xFF, 0, count)))
    assert crc_ok(r), r.hex()
    assert r[0] == ADDR and r[1] == 3 and r[2] == 2 * count, r.hex()
    return [(r[3 + 2 * i] << 8) | r[4 + 2 * i] for i in range(count)]


def write_regs(rig, start, values):
    pdu = bytearray((16, start >> 8, start & 0xFF, 0, len(values), 2 * len(values)))
    for v in values:
        pdu += bytes(((v >> 8) & 0xFF, v & 0xFF))
    return rig.request(pdu)


def test_all_parts_built_and_core_runs():
    rig = Rig()
    app = rig.app
    assert app.failed == [], app.failed
    for name in ("settings", "services", "persistlog", "modbus", "ttl", "inverter"):
        assert name in app.parts, name
    assert app.services is not None and app.bms.log.sink is not None
    rig.run(3000)
    assert app.bms.running and app.bms.exceptions == 0 and app.poll_errors == 0


def test_modbus_read_monitor_block_over_rs485_uart():
    rig = Rig()
    rig.run(3000)
    a = monitor_address("pack_voltage")
    hi, lo = read_regs(rig, a, 2)
    pack_mv = (hi << 16) | lo
    # The emulated BQ76952 stack: the sum of the 16 cells (52.92 V), within ADC rounding.
    assert abs(pack_mv - sum(LFP16)) <= 20, pack_mv
    assert pack_mv == rig.app.bms.meas.pack_mv or abs(pack_mv - rig.app.bms.meas.pack_mv) <= 20
    # cell_count and the cell block come from the same live snapshot
    n = read_regs(rig, monitor_address("cell_count"), 1)[0]
    assert n == 16
    # A frame with a broken CRC is not answered.
    bad = bytearray(with_crc(bytes((ADDR, 3, 1, 0, 0, 2))))
    bad[-1] ^= 0xFF
    rig.rs485.tx = bytearray()
    rig.rs485.rx += bad
    rig.run(30)
    assert bytes(rig.rs485.tx) == b""


def test_param_write_persists_in_flash_and_survives_reboot():
    fs = FakeFlash()
    rig = Rig(fs)
    rig.run(500)
    i = index("alarm_margin_mv")
    old = rig.app.bms.params[i]
    new = old + 20
    # Locked: the write is refused with exception 01.
    r = rig.request(bytes((6, (A_PARAMS + i) >> 8, (A_PARAMS + i) & 0xFF, 0, new)))
    assert crc_ok(r) and r[1] == 0x86 and r[2] == 1, r.hex()
    r = write_regs(rig, A_AUTH, ascii_regs(b"123456", 8))
    assert crc_ok(r) and r[1] == 16, r.hex()
    r = rig.request(bytes((6, (A_PARAMS + i) >> 8, (A_PARAMS + i) & 0xFF, 0, new)))
    assert crc_ok(r) and r[1] == 6, r.hex()
    assert rig.app.bms.params[i] == new
    rig.run(3000)   # services: saved 2 s after the last change
    stored = ParamSet(1, max_cells=16)
    SettingsStore(fs).load_params(stored)
    assert stored[i] == new
    # "Reboot": same flash, fresh machine and App.
    fs.reboot()
    rig2 = Rig(fs)
    assert rig2.app.failed == [], rig2.app.failed
    assert rig2.app.bms.params[i] == new
    rig2.run(500)
    assert read_regs(rig2, A_PARAMS + i, 1)[0] == new


def test_soc_state_restored_after_reboot():
    fs = FakeFlash()
    rig = Rig(fs)
    rig.run(500)
    rig.app.bms.soc.set_pm(730)
    rig.app.save()   # what Ctrl-C / an orderly stop does
    fs.reboot()
    rig2 = Rig(fs)
    assert abs(rig2.app.bms.soc.soc_pm - 730) <= 1


def test_inverter_frames_on_can_bus_without_modules():
    rig = Rig()
    rig.run(3000)
    ids = set(cid for cid, _d, _e in rig.peer.inbox) if rig.peer.inbox else set()
    for cid in (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E):
        assert cid in ids, (hex(cid), sorted(ids))
    name = [bytes(d) for cid, d, _e in rig.peer.inbox if cid == 0x35E][0]
    assert name == b"PYLON   "
    # 0x356: pack voltage in 0.01 V, little-endian
    act = [bytes(d) for cid, d, _e in rig.peer.inbox if cid == 0x356][-1]
    assert abs((act[0] | (act[1] << 8)) - sum(LFP16) // 10) <= 2


def test_failing_poller_does_not_stop_protection():
    rig = Rig()
    app = rig.app
    calls = [0]

    def boom():
        calls[0] += 1
        raise RuntimeError("comms bug")
    app.pollers.insert(0, boom)
    rig.run(3000)
    assert app.bms.running and calls[0] > 1000
    assert app.poll_errors == calls[0]
    fm = rig.fm
    assert fm.pin(12).v == 1 and fm.pin(13).v == 1   # charge (J3), level-2 (J4) closed
    fm.bq.source.cells[5] = 3800                     # above LFP ov2 = 3750 mV
    rig.run(8000)
    assert app.bms.exceptions == 0
    assert fm.pin(12).v == 0 and fm.pin(13).v == 0   # both opened by protection
    # Modbus still answers while the broken poller keeps raising.
    assert read_regs(rig, monitor_address("cell_max"), 1)[0] == 3800


def test_a_pc_port_that_raises_never_stops_the_control_tasks():
    # The PC port is looked at inside the control tasks (the fast task
    # between its steps, the long tasks between theirs): a UART that raises
    # there must cost the protection nothing, not a fail-safe trip.
    rig = Rig()
    app = rig.app
    rig.run(3000)
    fm = rig.fm
    assert fm.pin(12).v == 1 and fm.pin(13).v == 1

    def broken():
        raise OSError(5)
    rig.rs485.any = broken
    rig.run(3000)
    assert app.bms.exceptions == 0 and app.bms.running
    assert fm.pin(12).v == 1 and fm.pin(13).v == 1          # nothing opened for it
    assert app.parts["modbus"].internal_errors > 0
    fm.bq.source.cells[5] = 3800                            # above LFP ov2 = 3750 mV
    rig.run(8000)
    assert app.bms.exceptions == 0
    assert fm.pin(12).v == 0 and fm.pin(13).v == 0          # the protection still acts


def test_modbus_serves_persistent_log_and_update_windows():
    """The board's Modbus map has the updater and the flash log attached."""
    from comms.registers import A_PLOG, A_UPDATE
    from comms.regs import plog as RPL
    from comms.regs import update as RU
    rig = Rig()
    rig.run(3000)
    assert RU.window(rig.app.parts["modbus"].regmap).up is rig.app.updater()
    n = read_regs(rig, A_PLOG + RPL.PL_COUNT, 1)[0]
    assert n >= 1 and n == len(rig.app.parts["persistlog"])   # at least the boot record
    rec = read_regs(rig, A_PLOG + RPL.PL_REC, RPL.PLOG_REC_REGS)
    assert (rec[0] << 16 | rec[1]) == 1                        # oldest record: seq 1
    assert read_regs(rig, A_UPDATE + RU.UP_FW_STATE, 2) == [0, 0xFFFF]   # ok, factory slot


def test_gc_runs_only_in_idle_time_and_at_most_once_a_period(monkeypatch):
    from bms.ticks import VirtualClock
    clock = VirtualClock(0)
    app = main.App({"kind": "master"}, clock=clock)
    calls = []
    monkeypatch.setattr(main, "GC_IDLE", True)
    monkeypatch.setattr(main.gc, "collect", lambda: calls.append(clock.ticks_ms()))
    app.collect_if_idle(main.GC_MIN_IDLE_MS - 1)   # a deadline is close: never
    assert calls == []
    app.collect_if_idle(main.GC_MIN_IDLE_MS)       # idle: collect
    assert calls == [0] and app.collections == 1
    clock.advance(main.GC_PERIOD_MS - 1)
    app.collect_if_idle(main.GC_MIN_IDLE_MS + 50)  # idle, but the period has not passed
    assert calls == [0]
    clock.advance(1)
    app.collect_if_idle(main.GC_MIN_IDLE_MS - 1)   # period passed, deadline close: never
    assert calls == [0]
    app.collect_if_idle(main.GC_MIN_IDLE_MS)
    assert calls == [0, main.GC_PERIOD_MS]
    # No idle gap for GC_FORCE_MS: collected anyway, between tasks.
    clock.advance(main.GC_FORCE_MS - 1)
    app.collect_if_idle(0)
    assert len(calls) == 2
    clock.advance(1)
    app.collect_if_idle(0)
    assert calls[-1] == main.GC_PERIOD_MS + main.GC_FORCE_MS and len(calls) == 3
    # A Modbus request coming in: its reply first (a 16 ms collection there
    # delayed one reply to 20 ms on the emulated RP2040), then idle time again.
    frame = [1500]
    app.frame_serve = (lambda: frame[0], lambda: None)
    clock.advance(main.GC_PERIOD_MS)
    app.collect_if_idle(main.GC_MIN_IDLE_MS + 50)
    assert len(calls) == 3
    frame[0] = -1
    app.collect_if_idle(main.GC_MIN_IDLE_MS + 50)
    assert len(calls) == 4


def test_update_key_from_config_makes_signatures_mandatory():
    from bms import update as U

    class Cfg:
        UPDATE_KEY = "00112233445566778899aabbccddeeff"
    up = Rig(cfg=Cfg).app.updater()
    assert up.key == bytes.fromhex(Cfg.UPDATE_KEY)
    digest = bytes(32)
    try:
        up.begin(1000, digest, None)   # unsigned: refused before anything is written
        raise AssertionError("unsigned package accepted")
    except U.UpdateError as e:
        assert "sign" in e.msg
    up.begin(1000, digest, U.sign(up.key, 1000, digest))
    assert Rig().app.updater().key is None


def test_every_part_is_built_and_logged_through_the_one_part_table():
    """app.part takes an index of PART_NAMES (the names the persistent log
    decodes), never a free string, and the _PT_* indices name their rows."""
    import ast
    import os
    src = open(os.path.join(tools.ROOT, "firmware", "app.py")).read()
    tree = ast.parse(src)
    consts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("_PT_")):
            consts[node.targets[0].id] = node.value.args[0].value
    assert len(set(main.PART_NAMES)) == len(main.PART_NAMES) == len(consts)
    for name, i in consts.items():
        assert main.PART_NAMES[i] == name[4:].lower(), name
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "part"]
    assert len(calls) >= 15
    for c in calls:
        assert isinstance(c.args[0], ast.Name) and c.args[0].id in consts, ast.dump(c.args[0])


def test_part_out_of_memory_marks_the_firmware_degraded(monkeypatch):
    """A part that hits MemoryError is skipped, the core still runs, and the
    services know (a trial update in that state is rejected, see
    test_store_services); a part failing for another reason (hardware absent)
    does not count against the firmware."""
    def oom(app):
        raise MemoryError("memory allocation failed, allocating 2560 bytes")

    def absent(app):
        raise OSError(19)   # ENODEV: no chip on the TTL port
    monkeypatch.setattr(main, "start_modbus", lambda app, machine: oom(app))
    monkeypatch.setattr(main, "start_ttl", absent)
    rig = Rig()
    app = rig.app
    assert app.failed == ["modbus", "ttl"] and app.oom == ["modbus"]
    assert app.services.degraded == ("modbus",)
    rig.run(2000)
    assert app.bms.running and app.bms.exceptions == 0
    # Both are in the persistent log, named, with why.
    from bms import persistlog as PL
    from tools.eventlog_csv import kind_name, subject
    plog = app.parts["persistlog"]
    plog.flush()
    parts = [(kind_name(r[2]), subject(r[2], r[4]), r[5]) for r in plog.records()
             if r[2] == PL.PK_PART]
    assert parts == [("part_failed", "modbus", PL.PART_OOM), ("part_failed", "ttl", PL.PART_ERROR)]


def test_a_slave_package_left_by_a_reset_mid_upload_is_removed_at_boot():
    # docs/can_internal.md: a slave package file left from before a reboot
    # (a reset or power cut mid-upload; the staged state lives in RAM) is
    # removed at boot, before it can keep the master's littlefs full.
    class Cfg:
        MODULES = True

    fs = FakeFlash()
    fs.mkdir("/fw")
    f = fs.open("/fw/slave.pkg", "wb")
    f.write(bytes(5000))
    f.close()
    rig = Rig(fs=fs, cfg=Cfg)
    assert "slave_update" in rig.app.parts, rig.app.failed
    assert "slave.pkg" not in fs.listdir("/fw")


def test_master_with_modules_serves_the_slave_update_window():
    """Slaves updated through the master: forwarder polled by MasterBoard, window attached."""
    from comms.regs import slave_update as RSU
    from comms.regs import update as RU
    from comms.registers import A_AUTH, A_SLAVE_UPDATE
    from comms.regs.auth import AU_ERR_TEXT, AU_UNLOCK

    class Cfg:
        MODULES = True

    rig = Rig(cfg=Cfg)
    app = rig.app
    assert "slave_update" in app.parts, app.failed
    # Built on first use of the window, then shared by every port.
    assert app.parts["can_modules"].master.fw is None
    fwd = RSU.window(app.parts["modbus"].regmap).fwd
    assert fwd is not None and fwd is app.parts["slave_update"]()
    assert app.parts["can_modules"].master.fw is fwd
    rig.run(500)
    pw = b"123456\0\0" + bytes(8)
    write_regs(rig, A_AUTH + AU_UNLOCK, [(pw[i] << 8) | pw[i + 1] for i in range(0, 16, 2)])
    r = write_regs(rig, A_SLAVE_UPDATE + RU.UP_CMD, [RSU.SC_START])
    assert r[1] == 0x90 and r[2] == 3, r.hex()          # exception 03
    text = bytes(b for v in read_regs(rig, A_AUTH + AU_ERR_TEXT, 32) for b in (v >> 8, v & 0xFF))
    assert b"no slave package staged" in text, text
    assert read_regs(rig, A_SLAVE_UPDATE + RSU.SU_PHASE, 1) == [0]


def test_updater_is_built_on_first_use_and_shares_the_boot_marker(monkeypatch):
    """Boot holds only the marker half (bms.fwslot): it drops a staged file a
    reset left behind and confirms a trial; the full updater, built when the
    update window is first used, sees the same marker state."""
    from bms import fwslot as FS
    from bms import services as S
    from bms.store import makedirs
    from comms.regs import update as RU
    from comms.registers import A_UPDATE
    fs = FakeFlash()
    s = FS.Slots(fs)
    s.active, s.prev, s.state, s.tries = 0, FS.ROOT_SLOT, FS.ST_TRIAL, 1
    s.save()
    makedirs(fs, "/fw")
    f = fs.open("/fw/stage.pkg", "wb")
    f.write(bytes(4096))
    f.close()
    monkeypatch.setattr(S, "CONFIRM_MS", 3000)
    rig = Rig(fs=fs)
    app = rig.app
    assert "updater" not in app.parts and app.parts["slots"].state == FS.ST_TRIAL
    assert "stage.pkg" not in fs.listdir("/fw")
    rig.run(1000)
    assert "updater" not in app.parts
    assert read_regs(rig, A_UPDATE + RU.UP_FW_STATE, 2) == [FS.ST_TRIAL, 0]   # builds it
    up = app.parts["updater"]
    assert up.slots is app.parts["slots"] and app.updater() is up
    rig.run(6000)                        # armed and fault-free for CONFIRM_MS
    assert app.parts["slots"].state == FS.ST_OK and up.state == FS.ST_OK
    assert read_regs(rig, A_UPDATE + RU.UP_FW_STATE, 2) == [FS.ST_OK, 0]
    assert FS.Slots(fs).state == FS.ST_OK   # and on flash


def test_swap_and_rollback_done_by_boot_py_reach_the_persistent_log():
    from bms import fwslot as FS
    from bms import persistlog as PL
    fs = FakeFlash()
    s = FS.Slots(fs)
    s.active, s.prev, s.state, s.tries = FS.ROOT_SLOT, FS.ROOT_SLOT, FS.ST_PENDING, 0
    s.save()
    for boot in range(4):       # swap, two more trial boots, then the rollback
        assert FS.Slots(fs).select_at_boot() in ("/fw/a", "")    # what boot.py does
        rig = Rig(fs=fs)
        assert rig.app.parts["slots"].event == (FS.U_SWAPPED, 0, 0, FS.U_ROLLED_BACK)[boot]
        rig.app.parts["persistlog"].flush()
    plog = rig.app.parts["persistlog"]
    events = [(r[4], r[5]) for r in plog.records() if r[2] == PL.PK_UPDATE]
    assert events == [(FS.U_SWAPPED, 0), (FS.U_ROLLED_BACK, FS.ROOT_SLOT)]
    assert "boot_event" not in fs.listdir("/fw")


def test_a_part_built_on_first_use_that_runs_out_of_memory_answers_04(monkeypatch):
    """The updater is built when its window is first read; if that hits
    MemoryError the request gets exception 04, the BMS runs on and the next
    request tries again."""
    from comms.regs import update as RU
    from comms.registers import A_UPDATE
    rig = Rig()
    rig.run(1000)

    def oom(*a):
        raise MemoryError("memory allocation failed, allocating 1024 bytes")
    monkeypatch.setattr(main, "_updater", oom)
    r = rig.request(bytes((3, A_UPDATE >> 8, A_UPDATE & 0xFF, 0, 2)))
    assert crc_ok(r) and r[1] == 0x83 and r[2] == 4, r.hex()
    assert "updater" not in rig.app.parts
    rig.run(1000)
    assert rig.app.bms.running and rig.app.bms.exceptions == 0
    monkeypatch.undo()
    assert read_regs(rig, A_UPDATE + RU.UP_FW_STATE, 2) == [0, 0xFFFF]
    assert "updater" in rig.app.parts


def test_a_register_block_whose_import_runs_out_of_memory_answers_04(monkeypatch):
    """docs/safety.md: a block module is imported when a request first
    touches its block; if that hits MemoryError the request gets exception
    04, the BMS runs on, and the next request imports it again."""
    import builtins
    import sys
    from comms import registers as R
    rig = Rig()
    rig.run(1000)
    b = [row[0] for row in R.BLOCKS].index("temps")
    monkeypatch.setattr(R, "_MODS", [None] * len(R.BLOCKS))     # nothing loaded yet
    monkeypatch.delitem(sys.modules, "comms.regs.temps", raising=False)
    real = builtins.__import__

    def oom(name, *a, **k):
        if name == "comms.regs.temps":
            raise MemoryError("memory allocation failed, allocating 512 bytes")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", oom)
    r = rig.request(bytes((3, R.A_TEMPS >> 8, R.A_TEMPS & 0xFF, 0, 1)))
    assert crc_ok(r) and r[1] == 0x83 and r[2] == 4, r.hex()
    assert R._MODS[b] is None
    rig.run(1000)
    assert rig.app.bms.running and rig.app.bms.exceptions == 0
    monkeypatch.setattr(builtins, "__import__", real)
    assert read_regs(rig, R.A_TEMPS, 1) == [rig.app.bms.meas.n_temps]
    assert R._MODS[b] is not None


# ---- the AFE's hardware backstop on a real board build ------------------------
_EN_PROT_A = 0x9261
_SCD, _OCD1, _OCC, _COV, _CUV = 0x80, 0x20, 0x10, 0x08, 0x04


def test_board_build_enables_the_afe_hardware_protections_from_the_parameters():
    """Short circuit is caught only by the AFE (microseconds); a board build
    must enable it, with thresholds from the parameters, not leave the chip
    with nothing enabled."""
    from bms import params as P
    rig = Rig()
    bq = rig.fm.bq
    en = bq.dm_get(_EN_PROT_A, "<B")
    assert en == _SCD | _OCD1 | _OCC | _COV | _CUV, hex(en)
    assert not bq.sleep_enabled    # no autonomous SLEEP (cells every few seconds there)
    p = rig.app.bms.params
    # COV threshold: 50.6 mV steps, at least level-2 OV + 50 mV (typed: SLUUBY2B).
    cov = bq.dm_get(0x9278, "<B")
    assert cov * 50.6 >= p[P.P_OV2] + 50 and (cov - 1) * 50.6 < p[P.P_OV2] + 50
    # SCD: the first table step at or above short_circuit x shunt (6000 x 0.1 A x 100 uOhm = 60 mV).
    assert bq.dm_get(0x9286, "<B") == 3          # 10, 20, 40, [60] mV


def test_a_parameter_change_moves_the_hardware_backstop():
    from bms import params as P
    rig = Rig()
    rig.run(500)
    bq = rig.fm.bq
    board = rig.app.hw["board"]
    n0 = board.backstop_updates
    rig.app.bms.params.set_many(((P.P_SC, 9000),))        # 900 A x 100 uOhm = 90 mV
    rig.run(200)
    assert bq.dm_get(0x9286, "<B") == 5                      # 100 mV step
    assert board.backstop_updates == n0 + 1
    rig.app.bms.params.set_many(((P.P_BUZZER, 0),))         # no backstop value changed
    rig.run(200)
    assert board.backstop_updates == n0 + 1 and board.afe_ok


def test_short_circuit_seen_only_by_the_afe_opens_the_discharge_relay():
    """The shunt monitor still reads 0 A (its ADC is too slow for a short):
    the AFE's own SCD trip is what opens the discharge path, latched."""
    from bms import faults as F
    rig = Rig()
    rig.run(3000)
    fm = rig.fm
    assert rig.app.bms.running and fm.pin(10).v == 1            # discharge (J1) closed
    fm.bq.source.current = -700000                              # 700 A > 600 A short_circuit
    rig.run(300)
    assert fm.pin(10).v == 0 and fm.pin(12).v == 0
    assert rig.app.bms.prot.active(F.SHORT) or rig.app.bms.prot.active(F.AFE)


def test_master_with_modules_gets_current_protections_only_on_its_own_afe():
    class Cfg:
        MODULES = True
    rig = Rig(cfg=Cfg)
    en = rig.fm.bq.dm_get(_EN_PROT_A, "<B")
    assert en == _SCD | _OCD1 | _OCC, hex(en)    # no cells on the master's AFE


def test_special_charger_is_built_when_the_parameter_turns_it_on():
    from bms import params as P
    rig = Rig()
    rig.run(1000)
    app = rig.app
    assert "charger" not in app.parts and "display" in app.parts
    ttl = rig.uarts[1]
    app.bms.params.set_many(((P.P_SPECIAL_CHARGER, 1),))
    ttl.tx[:] = b""
    rig.run(3000)
    assert "charger" in app.parts
    assert len(ttl.tx) > 0 and app.parts["charger"].port is not None   # it talks on the TTL port
    assert app.poll_errors == 0 and app.bms.exceptions == 0


def test_master_with_modules_sees_its_own_afe_trips():
    """Cells come over CAN, so nothing read the master's own AFE fault bits:
    its short-circuit trip (and a relay's readback) must still reach the core."""
    from bms import faults as F

    class Cfg:
        MODULES = True
    rig = Rig(cfg=Cfg)
    rig.run(500)
    bms = rig.app.bms
    assert not bms.prot.active(F.AFE)
    rig.fm.bq.source.current = -700000              # 700 A through the shunt: SCD trips
    rig.run(300)
    assert bms.board.afe_fault() & 0x001            # drivers.afe FAULT_SCD
    assert bms.prot.active(F.AFE)


def test_a_settings_part_that_fails_keeps_the_latched_faults(monkeypatch):
    """docs/safety.md: latches are "restored before the first cycle: a
    restart, a watchdog reset or a power cut never clears one", and a latch
    record whose read fails brings `internal` back latched.  The settings
    part can fail on a board with flash (a migrated set whose write-back
    finds the flash full, no memory): the latches on flash must still come
    back, and the pack must not run on settings nobody read."""
    from bms import faults as F
    fs = FakeFlash()
    SettingsStore(fs).save_latches([F.OV2])      # ov2 latched before the restart

    def full(fs, params):
        raise OSError(28)                          # ENOSPC
    monkeypatch.setattr(main, "open_settings", full)
    rig = Rig(fs=fs)
    app = rig.app
    assert "settings" in app.failed
    rig.run(3000)
    bms = app.bms
    assert bms.running
    assert bms.prot.active(F.OV2) and bms.prot.active(F.INTERNAL)
    assert not any(bms.contactors.state), list(bms.contactors.state)


def test_a_wrong_password_reaches_flash_from_the_services_not_the_request_handler():
    # docs/storage.md: flash is written only from Services.poll(), right after
    # a fast tick (an erase stalls the RP2040 ~45 ms); the kv store (a wrong
    # password's count, a password change) included.  Its write used to come
    # from the Modbus / BLE request handler, wherever that fell in a cycle,
    # at the word of an unauthenticated peer.
    from comms.regs.auth import AU_UNLOCK
    fs = FakeFlash()
    rig = Rig(fs=fs)
    app = rig.app
    rig.run(500)
    kv = app.parts["kv"]
    svc = app.services
    where = []
    in_poll = [False]
    save, poll = kv.rec.save, svc.poll

    def spy_save(*a):
        where.append(in_poll[0])
        return save(*a)

    def spy_poll():
        in_poll[0] = True
        try:
            poll()
        finally:
            in_poll[0] = False
    kv.rec.save = spy_save
    svc.poll = spy_poll
    app.pollers[app.pollers.index(poll)] = spy_poll
    pw = b"999999\0\0" + bytes(8)
    r = write_regs(rig, A_AUTH + AU_UNLOCK, [(pw[i] << 8) | pw[i + 1] for i in range(0, 16, 2)])
    assert r[1] & 0x80, r.hex()   # refused
    rig.run(100)
    assert where and all(where), where
    # ... and it is on flash: the next boot still counts the wrong password.
    again = Rig(fs=fs)
    assert again.app.parts["auth"].failures >= 1
