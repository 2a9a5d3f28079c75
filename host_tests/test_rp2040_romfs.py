"""The application update on the image users run, on the emulated RP2040:
the application as a ROMFS image in one half of the ROMFS partition
(bms.romslot), replaced over the RS485 port by ``bmsctl update``'s Modbus
transport (bms.romupdate), the chip rebooting into it and confirming it.

Slow suite (tools/rp2emu; the full update moves ~231 KB over the emulated
UART, 46 s of emulated time): part of ``make test`` (pytest host_tests) and
so of ``.ci/run``.  Emulated time only; the Modbus port runs at 115200 baud
here, set by a config.py inside the test images (the 9600-baud time is
computed by ``make bench``, area romfs, from a measured run at 115200).
The Modbus master is ``tools.rp2emu.modbus_sync`` (bmsctl's own client
and update transport over it), so no wall-clock wait enters the figures.

Power cuts: the flash (ROMFS + littlefs) is saved at every status poll of
the finish, at two points of the transfer and after each reboot; every
distinct flash state is then booted on a fresh chip, which must run a whole
old or new application (expected from the update status at the cut).
The unix-port suite (host_tests/upy/test_rom_update.py) cuts at every
single flash operation and every finish step boundary.
"""
import hashlib
import os
import subprocess

import pytest

from tools.rp2emu.modbus_sync import EmuModbus
from rp2_rig import CanLog, uf2

import tools  # noqa: F401
from tools import fwpkg
from tools.bmsctl.client import BmsClient, BmsError
from tools.bmsctl.update_cmd import ModbusTransport
from bms.update import sign
from tools.rp2emu.board import EmuBoard, VirtualCanBus
from tools.rp2emu.repl import Repl
from tools.sim.pack import Pack

CONFIG = (b"BOARD = 'pico'\nOPTS = {'modbus_baud': 115200}\nUPDATE_CONFIRM_MS = 2000\n")
KEY = b"fleet-key-0123456789abcdef"
KEYED = CONFIG + b"UPDATE_KEY = '" + KEY.hex().encode() + b"'\n"
HEAP_TOL = 2048            # issue 17: heap after an update = after a fresh flash +-2 KB


def _mpy_cross_compile(src, tmp):
    from tools.build import mpy_cross
    p = os.path.join(tmp, "broken_app.py")
    with open(p, "w") as f:
        f.write(src)
    out = os.path.join(tmp, "app.mpy")
    subprocess.run([mpy_cross(), "-march=armv6m", "-o", out, p], check=True)
    with open(out, "rb") as f:
        return f.read()


def _small_image(tmp, files):
    """A ROMFS image of just ``files`` (the rest comes from the frozen modules)."""
    import contextlib
    import io
    from mpremote.romfs import make_romfs
    d = os.path.join(tmp, "small")
    for name, data in files.items():
        p = os.path.join(d, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    with contextlib.redirect_stdout(io.StringIO()):
        return make_romfs(d, mpy_cross=False)


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    """Two versions of the whole application, a broken one, and the factory UF2."""
    tmp = str(tmp_path_factory.mktemp("romapp"))
    out = {}
    for label in ("app-1", "app-2"):
        img, mpy = fwpkg.romfs_image_of("pico", {"fwinfo.txt": label.encode(),
                                                "config.py": CONFIG})
        out[label] = fwpkg.romfs_package(img, mpy)
    out["mpy"] = mpy
    broken = _mpy_cross_compile("raise ImportError('deliberately broken application')\n", tmp)
    out["broken"] = fwpkg.romfs_package(_small_image(tmp, {"app.mpy": broken,
                                                           "fwinfo.txt": b"broken",
                                                           "config.py": CONFIG}), mpy)
    img, _m = fwpkg.romfs_image_of("pico", {"fwinfo.txt": b"app-1", "config.py": KEYED})
    for name, app1 in (("factory", out["app-1"]), ("factory_keyed", fwpkg.romfs_package(img, mpy))):
        factory = os.path.join(tmp, name + ".uf2")
        with open(uf2(), "rb") as f, open(factory, "wb") as g:
            g.write(f.read())
            g.write(fwpkg.uf2_of(fwpkg.slot_a_bytes(app1)))
        out[name] = factory
    out["tmp"] = tmp
    return out


def _board(uf2_path, flash_file=None, ms=2500):
    pack = Pack("LFP", 16, 100.0, 0.5, seed=1)
    bus = VirtualCanBus(500000)
    b = EmuBoard(uf2_path, pack, board="pico", can_bus=bus, flash_file=flash_file)
    b.can_log = CanLog(bus)
    if ms:
        b.run_ms(ms)
    return b


def _settle(b):
    """Run until the app is up after a boot that may first erase the inactive
    slot in boot.py (bms.romslot.prepare): the erase goes on while the
    emulator counts sector erases; the app is built ~2 s after it."""
    b.run_ms(1500)
    while True:
        e = b.chip.stats.get("erases", 0)
        b.run_ms(300)
        if b.chip.stats.get("erases", 0) == e:
            break
    b.run_ms(2000)


def _who(board):
    """(label, app file, failed parts, running, active slot, slot whole) off the chip."""
    r = Repl(board)
    r.enter()
    got = r.eval("(lambda a: (open('/rom/fwinfo.txt').read() if a.__file__.startswith('/rom') "
                 "else 'frozen', a.__file__, a.APP.failed, a.APP.bms.running))"
                 "(__import__('app'))")
    slot = r.eval("(lambda R, fs: (lambda s: (s.active, s.state, s.tries))"
                  "(R.slots(fs)))(__import__('bms.romslot').romslot, "
                  "__import__('bms.store').store.BoardFs())")
    whole = slot[0] < 0 or r.eval("(lambda R: R.valid(R.partition()[1], %d))"
                                  "(__import__('bms.romslot').romslot)" % slot[0])
    heap = r.eval("(__import__('gc').collect(), __import__('gc').mem_free())[1]")
    return {"label": got[0], "file": got[1], "failed": got[2], "running": got[3],
            "slot": slot, "whole": whole, "heap": heap}


class _Snaps:
    """Flash snapshots (ROMFS + littlefs) of one board, one file per distinct state."""

    def __init__(self, board, snapdir):
        self.board = board
        self.snapdir = snapdir
        self.snaps = []          # (path, expected label, what)
        self.seen = set()

    def snap(self, expect, what):
        p = os.path.join(self.snapdir, "snap%03d.bin" % (len(self.snaps) + len(self.seen)))
        self.board.chip.save_flash(p)
        with open(p, "rb") as f:
            h = hashlib.sha256(f.read()).digest()
        if h in self.seen:
            os.remove(p)
            return False
        self.seen.add(h)
        self.snaps.append((p, expect, what, h))
        return True

    def relabel_last(self, what):
        p, e, _w, h = self.snaps[-1]
        self.snaps[-1] = (p, e, what, h)

    def drop_last(self):
        p, _e, _w, h = self.snaps.pop()
        os.remove(p)
        self.seen.discard(h)


def _client(board):
    mb = EmuModbus(board)
    c = BmsClient("emulated RS485", client=mb)
    c.unlock("123456")
    return c, mb


def _send(t, pkg, digest, at=None, sig=None):
    t.begin(len(pkg), digest, sig)
    off = 0
    marks = list(at or ())
    while off < len(pkg):
        off = t.chunk(off, pkg[off:off + 240])
        if marks and off >= marks[0][0]:
            marks.pop(0)[1](off)
    return off


@pytest.mark.timeout(900)   # minutes of emulation on a busy 2-core machine
def test_full_update_over_rs485_reboots_confirms_and_survives_power_cuts(pkgs):
    # A fresh flash: firmware UF2 plus the application in ROMFS slot A.
    board = _board(pkgs["factory"])
    try:
        fresh = _who(board)
        assert fresh["label"] == "app-1" and fresh["file"].startswith("/rom/"), fresh
        assert fresh["failed"] == [] and fresh["running"] and fresh["slot"][0] == 0, fresh
        board.power_cycle()
        board.run_ms(2500)
        snaps = _Snaps(board, pkgs["tmp"])
        c, mb = _client(board)
        pkg = pkgs["app-2"]
        digest = hashlib.sha256(pkg).digest()
        polls = []

        def sleep(_s):
            # Between status polls of the finish: a power-cut point, then the
            # status, then 2 ms more.  The status only moves forward, so one
            # still short of "staged" read after the snapshot proves the
            # snapshot was taken before the commit: the old application.  (A
            # status read first is already old when the snapshot is taken:
            # the loop may commit right after it replied.)  Later states are
            # the explicit "staged" snapshot's.
            taken = snaps.snap("app-1", "finish")
            st = t.status()
            polls.append(st["status"])
            if taken:
                if st["status"] in ("verifying", "unpacking"):
                    snaps.relabel_last("finish " + st["status"])
                else:
                    snaps.drop_last()
            board.run_ms(2)
        t = ModbusTransport(c, sleep=sleep, interval=0)
        t0 = board.chip.t_ns
        r0 = mb.requests
        third = len(pkg) // 3
        _send(t, pkg, digest, [(third, lambda o: snaps.snap("app-1", "transfer %d" % o)),
                               (2 * third, lambda o: snaps.snap("app-1", "transfer %d" % o))])
        t_transfer = (board.chip.t_ns - t0) / 1e9
        n_chunks = mb.requests - r0
        snaps.snap("app-1", "received")
        t1 = board.chip.t_ns
        t.finish()
        t_finish = (board.chip.t_ns - t1) / 1e9
        snaps.snap("app-2", "staged")
        st = t.status()
        assert st["status"] == "staged" and st["fw_state"] == "pending", st
        resets = len(board.chip.resets)
        t.restart()
        # The restart: the chip reboots into the new application on trial.
        for _i in range(40):
            board.run_ms(100)
            if len(board.chip.resets) > resets:
                break
        assert len(board.chip.resets) > resets, "no reboot after the restart command"
        board.run_ms(1500)
        snaps.snap("app-2", "trial boot")
        board.run_ms(4000)                 # armed and fault-free 2 s (UPDATE_CONFIRM_MS)
        after = _who(board)
        assert after["label"] == "app-2" and after["failed"] == [] and after["running"], after
        assert after["slot"] == (1, 0, 0), after           # slot B, confirmed (ok)
        assert after["whole"]
        snaps.snap("app-2", "confirmed")
    finally:
        board.close()
    print("update %d B in %d chunks at 115200: transfer %.1f s, finish %.2f s (emulated); "
          "heap free fresh %d B, after update %d B" % (len(pkg), n_chunks, t_transfer, t_finish,
                                                       fresh["heap"], after["heap"]))
    assert abs(after["heap"] - fresh["heap"]) <= HEAP_TOL
    assert "verifying" in polls
    # Every distinct flash state seen boots a whole old or new application.
    whats = [w for _p, _e, w, _h in snaps.snaps]
    print("power-cut states: %s" % ", ".join(whats))
    assert len(snaps.snaps) >= 6, whats
    for path, expect, what, _h in snaps.snaps:
        b = _board(uf2(), flash_file=path, ms=0)
        _settle(b)
        try:
            got = _who(b)
        finally:
            b.close()
        assert got["label"] == expect, (what, got)
        assert got["failed"] == [] and got["running"] and got["whole"], (what, got)


def _refused_at_begin(t, pkg, sig):
    with pytest.raises(BmsError):
        t.begin(len(pkg), hashlib.sha256(pkg).digest(), sig)
    st = t.status()
    assert st["status"] == "error" and st["error"] == "signature", st
    return st["error_text"]


@pytest.mark.timeout(900)   # minutes of emulation on a busy 2-core machine
def test_signed_packages_bad_hash_and_bytecode_mismatch_refused_broken_app_rolls_back(pkgs):
    # This board's application has UPDATE_KEY in its config.py: every package
    # must carry the HMAC-SHA256 signature (tools/fwpkg --key-file) made with it.
    board = _board(pkgs["factory_keyed"])
    try:
        c, _mb = _client(board)
        t = ModbusTransport(c, sleep=lambda s: board.run_ms(2), interval=0)
        pkg = pkgs["broken"]
        digest = hashlib.sha256(pkg).digest()
        sig = sign(KEY, len(pkg), digest)
        # Unsigned, and signed with another key: refused with the reason, nothing written.
        assert "signature required" in _refused_at_begin(t, pkg, None)
        assert "bad signature" in _refused_at_begin(t, pkg, sign(b"another key", len(pkg),
                                                                 digest))
        # A bad hash: signed for its SHA-256, but the bytes that arrive differ.
        bad = bytearray(pkg)
        bad[len(bad) // 2] ^= 0x55
        _send(t, bytes(bad), digest, sig=sig)
        with pytest.raises(BmsError) as e:
            t.finish()
        assert "sha256" in str(e.value) or "hash" in str(e.value), e.value
        assert t.status()["fw_state"] == "ok"
        # A package built for another bytecode version: refused at its first chunk.
        other = pkgs["mpy"] - 1
        img = pkg[64:]
        wrong = fwpkg.romfs_package(img, other)
        wd = hashlib.sha256(wrong).digest()
        t.begin(len(wrong), wd, sign(KEY, len(wrong), wd))
        with pytest.raises(BmsError) as e:
            t.chunk(0, wrong[:240])
        assert "MicroPython mismatch" in str(e.value), e.value
        # The broken application, correctly signed: accepted and staged, rebooted
        # into, never armed, rolled back.
        _send(t, pkg, digest, sig=sig)
        t.finish()
        assert t.status()["fw_state"] == "pending"
        t.restart()
        t0 = board.chip.t_ns
        resets = len(board.chip.resets)
        # Trial boots 1..3 fail at import (watchdog resets), boot 4 rolls back.
        for _i in range(60):
            board.run_ms(1000)
            if len(board.chip.resets) >= resets + 4:
                break
        board.run_ms(3000)
        back = _who(board)
        t_rollback = (board.chip.t_ns - t0) / 1e9
    finally:
        board.close()
    print("broken application rolled back after %.1f s emulated, %d resets"
          % (t_rollback, len(board.chip.resets) - resets))
    assert back["label"] == "app-1" and back["failed"] == [] and back["running"], back
    assert back["slot"][0] == 0 and back["slot"][1] == 0, back
