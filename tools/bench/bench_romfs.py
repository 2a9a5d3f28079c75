"""ROMFS application update on the emulated RP2040 (bms.romupdate): the flash
layout, the package, a full update over the RS485 port at 115200 baud
(measured), the same at 9600 baud (computed: measured chip time per chunk
plus the 9600-baud wire time of the same frames), and the longest piece of
update work in one main-loop pass (a chunk with its page program, or a
finish step), measured by the updater on the chip with ticks_us.

The emulated flash keeps the core stalled for the W25Q16JV's typical busy
times (tools/rp2emu/runner.mjs: 45 ms per 4 KB sector erase, 0.4 ms per
256-byte page program), so the step figures include the flash as on
silicon.  Measured too: the boot after the confirm, which erases the old
slot (bms.romslot.prepare), and the slow path - a few sectors sent into a
slot that was not erased ahead, each erased inside its chunk.

Runs the board image on tools/rp2emu (a few minutes of wall time)."""
import hashlib
import os
import tempfile

from tools.bench.common import Row

STEP_GOAL_MS = 20.0
CHUNK = 240
SLOW_SECTORS = 3
CONFIG = b"BOARD = 'pico'\nOPTS = {'modbus_baud': 115200}\nUPDATE_CONFIRM_MS = 2000\n"


def wire_ms(nbytes, baud, bits=10):
    return nbytes * bits * 1000.0 / baud


def chunk_frames():
    """Bytes on the wire per chunk: FC16 of 123 registers and its 8-byte reply."""
    req = 1 + 1 + 2 + 2 + 1 + 2 * (3 + CHUNK // 2) + 2
    return req, 8


def _t35_ms(baud):
    # Modbus RTU: 3.5 characters, fixed 1.75 ms above 19200 baud.
    return 1.75 if baud > 19200 else 3.5 * 10 * 1000.0 / baud


def layout_rows():
    from bms import romslot
    from tools import flashlayout, fwbuild, fwpkg
    half = fwpkg.ROMFS_BYTES // 2
    rows = []
    regions = (
        ("firmware (MicroPython + loader + frozen fallback app)", 0, fwbuild.FIRMWARE_MAX),
        ("ROMFS slot A image", fwpkg.ROMFS_BASE, half - romslot.SECTOR),
        ("ROMFS slot A descriptor", fwpkg.ROMFS_BASE + half - romslot.SECTOR, romslot.SECTOR),
        ("ROMFS slot B image", fwpkg.ROMFS_BASE + half, half - romslot.SECTOR),
        ("ROMFS slot B descriptor", fwpkg.ROMFS_BASE + 2 * half - romslot.SECTOR,
         romslot.SECTOR),
        ("littlefs (config, settings, log, marker)", flashlayout.LITTLEFS_BASE,
         flashlayout.LITTLEFS_BYTES),
    )
    for name, start, size in regions:
        rows.append(Row("romfs", "flash 0x%06X-0x%06X %s" % (start, start + size - 1, name),
                        size // 1024, "KB"))
    return rows


def measure():
    """A full update on the emulated chip: dict of measured figures."""
    from tools import fwpkg
    from tools.bmsctl.client import BmsClient
    from tools.bmsctl.update_cmd import ModbusTransport
    from tools.fwbuild import build
    from tools.rp2emu.board import EmuBoard, VirtualCanBus
    from tools.rp2emu.modbus_sync import EmuModbus
    from tools.rp2emu.repl import Repl
    from tools.sim.pack import Pack
    uf2 = build("pico")
    img1, mpy = fwpkg.romfs_image_of("pico", {"config.py": CONFIG, "fwinfo.txt": b"1"})
    img2, _m = fwpkg.romfs_image_of("pico", {"config.py": CONFIG, "fwinfo.txt": b"2"})
    pkg = fwpkg.romfs_package(img2, mpy)
    out = {"size": len(pkg)}
    with tempfile.TemporaryDirectory(prefix="bench-romfs-") as tmp:
        factory = os.path.join(tmp, "factory.uf2")
        with open(uf2, "rb") as f, open(factory, "wb") as g:
            g.write(f.read())
            g.write(fwpkg.uf2_of(fwpkg.slot_a_bytes(fwpkg.romfs_package(img1, mpy))))
        b = EmuBoard(factory, Pack("LFP", 16, 100.0, 0.5, seed=1), board="pico",
                     can_bus=VirtualCanBus(500000))
        try:
            b.run_ms(2500)
            mb = EmuModbus(b)
            c = BmsClient("emulated RS485", client=mb)
            c.unlock("123456")
            t = ModbusTransport(c, sleep=lambda s: b.run_ms(2), interval=0)
            digest = hashlib.sha256(pkg).digest()
            t.begin(len(pkg), digest, None)
            t0 = b.chip.t_ns
            e0 = b.chip.stats["erases"]
            r0 = mb.requests
            off = 0
            while off < len(pkg):
                off = t.chunk(off, pkg[off:off + CHUNK])
            out["transfer_s"] = (b.chip.t_ns - t0) / 1e9
            out["chunks"] = mb.requests - r0
            t1 = b.chip.t_ns
            p0 = mb.requests
            t.finish()
            out["finish_s"] = (b.chip.t_ns - t1) / 1e9
            out["finish_polls"] = mb.requests - p0
            out["transfer_erases"] = b.chip.stats["erases"] - e0
            r = Repl(b)
            r.enter()
            out["max_chunk_ms"], out["max_step_ms"], out["steps"], out["slow"] = r.eval(
                "(lambda u: (u.max_chunk_us / 1000, u.max_step_us / 1000, u.steps, "
                "u.slow_sectors))(__import__('app').APP.updater())")
            out["boot_hash_ms"] = r.eval(
                "(lambda R, t, t0: (R.valid(R.partition()[1], 1), t.ticks_diff(t.ticks_ms(), t0))"
                "[1])(__import__('bms.romslot').romslot, __import__('time'), "
                "__import__('time').ticks_ms())", 20000)
            # Into the new application, confirmed; then a few sectors of another
            # update before any reboot: slot A still holds app-1 (the slow path).
            b.power_cycle()                   # (bmsctl's restart: the same boot)
            b.run_ms(7000)                    # trial boot, armed 2 s: confirmed
            c.unlock("123456")
            assert t.status()["fw_state"] == "ok", t.status()
            again = fwpkg.romfs_package(img1, mpy)
            t.begin(len(again), hashlib.sha256(again).digest(), None)
            off = 0
            while off < SLOW_SECTORS * 4096 + 64:
                off = t.chunk(off, again[off:off + CHUNK])
            r = Repl(b)
            r.enter()
            out["slow_chunk_ms"], out["slow_sectors"] = r.eval(
                "(lambda u: (u.max_chunk_us / 1000, u.slow_sectors))"
                "(__import__('app').APP.updater())")
            # The next boot erases what slot A holds, before main.py.
            s0 = dict(b.chip.stats)
            b.power_cycle()
            b.run_ms(8000)
            out["boot_erases"] = b.chip.stats["erases"] - s0["erases"]
            out["boot_busy_s"] = (b.chip.stats["flashBusyNs"] - s0["flashBusyNs"]) / 1e9
            r = Repl(b)
            r.enter()
            out["after_boot"] = r.eval(
                "(lambda R: (lambda mv: (R.blank(mv, 0, R.half(mv)), R.slots("
                "__import__('bms.store').store.BoardFs()).active))(R.partition()[1]))"
                "(__import__('bms.romslot').romslot)", 20000)
        finally:
            b.close()
    return out


def measure_slave():
    """A slave module's application forwarded by the master over CAN, on two
    emulated chips: a small real package (slave_main + label) measured, the
    whole slave application (slave_main's import closure) computed from the
    measured forwarding rate.  Dict of figures."""
    from tools import fwpkg
    from tools.bmsctl.update_cmd import SlaveModbusTransport
    from tools.fwbuild import build
    from tools.rp2emu.rack import entry_package, master_and_slave, master_client
    full, _mpy = fwpkg.romfs_image_of("slave_module")
    whole, _mpy = fwpkg.romfs_image_of("slave_module", only=())
    out = {"full": len(full) + 64, "whole": len(whole) + 64}
    r, _bus = master_and_slave(build("pico"), build("slave_module"))
    master = r.boards[0]
    with tempfile.TemporaryDirectory(prefix="bench-slave-") as tmp:
        try:
            c = master_client(r, "MODULES = True\nOPTS = {'modbus_baud': 115200}\n")
            pkg, digest = entry_package(tmp, "bench")
            t = SlaveModbusTransport(c)
            t.begin(len(pkg), digest, None)
            off = 0
            while off < len(pkg):
                off = t.chunk(off, pkg[off:off + CHUNK])
            t.finish()
            out["size"] = len(pkg)
            t.start(1)
            t0 = master.chip.t_ns
            phases = {}
            while True:
                r.run_ms(100)
                st = t.status()
                phases.setdefault(st["phase"], master.chip.t_ns)
                if st["phase"] in ("done", "error") or master.chip.t_ns - t0 > 300e9:
                    break
            if st["phase"] != "done":
                raise RuntimeError("slave update: %s %s" % (st["phase"], st["fwd_text"]))
            end = master.chip.t_ns
            send0 = phases.get("sending", t0)
            send1 = min(v for k, v in phases.items() if k not in ("begin", "sending")
                        and v > send0)
            out["send_s"] = (send1 - send0) / 1e9
            out["total_s"] = (end - t0) / 1e9
        finally:
            r.close()
    out["rate"] = out["size"] / out["send_s"]
    rest = out["total_s"] - out["send_s"]
    out["full_s"] = out["full"] / out["rate"] + rest
    out["whole_s"] = out["whole"] / out["rate"] + rest
    return out


def slave_rows():
    try:
        m = measure_slave()
    except Exception as e:  # noqa: BLE001
        return [Row("romfs", "slave ERROR", str(e).splitlines()[0][:80] if str(e) else repr(e))]
    return [
        Row("romfs", "slave: small package forwarded over CAN (measured)", m["total_s"], "s", "",
            "%d B (slave_main + label): sending %.1f s = %.0f B/s, then verify, reboot, "
            "trial and confirm %.1f s; two emulated chips"
            % (m["size"], m["send_s"], m["rate"], m["total_s"] - m["send_s"])),
        Row("romfs", "slave: whole slave application over CAN (computed)", m["full_s"], "s", "",
            "%d B = slave_main's import closure (fwpkg --romfs --board slave_module), at the "
            "measured rate; the whole tree (%d B) would take %.0f s"
            % (m["full"], m["whole"], m["whole_s"])),
    ]


def run(ctx):
    from bms import romslot
    from tools import fwpkg
    rows = layout_rows()
    slot = fwpkg.slot_image_bytes()
    try:
        m = measure()
    except Exception as e:  # noqa: BLE001 - the layout rows still stand
        rows.append(Row("romfs", "ERROR", str(e).splitlines()[0][:80] if str(e) else repr(e)))
        return rows + slave_rows()
    req, rep = chunk_frames()
    per_chunk = m["transfer_s"] * 1000.0 / m["chunks"]
    wire115 = wire_ms(req + rep, 115200) + 2 * _t35_ms(115200)
    chip_ms = max(0.0, per_chunk - wire115)
    wire96 = wire_ms(req + rep, 9600) + 2 * _t35_ms(9600)
    poll96 = wire_ms(8 + 5 + 2 * 80, 9600) + 2 * _t35_ms(9600)   # one status read
    t96 = m["chunks"] * (chip_ms + wire96) / 1000.0 + m["finish_s"] + poll96 / 1000.0
    t115 = m["transfer_s"] + m["finish_s"]
    rows += [
        Row("romfs", "application package (descriptor + ROMFS image)", m["size"], "B",
            "<= %d" % (slot + romslot.DESC_LEN), "one slot: %d KB" % (slot // 1024)),
        Row("romfs", "full update at 115200 baud (measured)", t115, "s", "",
            "%d chunks, transfer %.1f s + finish %.2f s, emulated time"
            % (m["chunks"], m["transfer_s"], m["finish_s"])),
        Row("romfs", "full update at 9600 baud (computed)", t96, "s", "",
            "chip %.1f ms/chunk (measured at 115200) + %.0f ms wire/chunk at 9600"
            % (chip_ms, wire96)),
        Row("romfs", "longest update work in one loop pass", max(m["max_chunk_ms"],
                                                                  m["max_step_ms"]), "ms",
            "<= %g" % STEP_GOAL_MS, "chunk with its page program %.1f ms, finish step %.1f ms "
            "(%d steps; %d erases during the transfer, %d sectors not blank); the Modbus "
            "window's copy of the chunk (~3 ms) comes on top; flash busy times W25Q16JV typ"
            % (m["max_chunk_ms"], m["max_step_ms"], m["steps"], m["transfer_erases"],
               m["slow"])),
        Row("romfs", "slow path: chunk that erases a sector first", m["slow_chunk_ms"], "ms",
            "<= %g not met" % STEP_GOAL_MS,
            "update started again after the confirm, before a reboot: %d sectors erased in "
            "their chunks (45 ms typ each, interrupts off)" % m["slow_sectors"]),
        Row("romfs", "boot after the confirm: erase of the old slot", m["boot_busy_s"], "s", "",
            "%d flash erases in the first 8 s of that boot (the old slot's sectors before "
            "main.py, and littlefs); slot A blank %s"
            % (m["boot_erases"], m["after_boot"][0])),
        Row("romfs", "boot: re-hash of the slot before mounting it", m["boot_hash_ms"], "ms", "",
            "SHA-256 of the whole image from XIP flash"),
        Row("romfs", "  longest step / goal", max(m["max_chunk_ms"], m["max_step_ms"])
            / STEP_GOAL_MS, "ratio", "<= 1"),
    ]
    return rows + slave_rows()
