"""Firmware update finish: bounded work per step.

The finish runs in the app's loop, one step per pass; what matters on a
board is the longest step (it delays the next control cycle) against the
blocking finish it replaced (it stalled the control loop for all of it).
Measured under the MicroPython unix port on a RAM fake flash, so the CPU
part only (hashing, tar headers, copying); on an RP2040 add the littlefs
I/O: reading 2 KB ~1-2 ms, programming 2 KB ~5 ms, plus one 4 KB sector
erase (~45 ms typical) when a write needs a fresh block.
"""
from tools.bench.common import Row, parse_kv

AREA = "update"


def run(ctx):
    from bms.update import STEP_BYTES
    kb = 64 if ctx.quick else 192
    k = parse_kv(ctx.upy("tools/bench/upy/update_finish.py", kb, STEP_BYTES))
    ref = k["us_ref_iter"]

    def rp(us):
        # Host figure only; the chip's own step times are the romfs rows.
        return "%.0f ref-loop iterations (unix port); the chip: romfs rows" % (us / ref)

    return [
        Row(AREA, "finish of a %d KB package: steps" % (k["pkg_bytes"] // 1024), k["steps"], "",
            "", "step_bytes %d" % STEP_BYTES),
        Row(AREA, "finish: flash I/O per step, worst", k["max_step_io"], "B", "<= %d"
            % (2 * STEP_BYTES + 512), "read + written"),
        Row(AREA, "finish: longest step (unix port)", k["worst_step_us"], "us", "", rp(
            k["worst_step_us"]) + " incl. the pure-Python fake flash; + real flash I/O; "
            "control period 50 ms"),
        Row(AREA, "finish: all steps (unix port)", k["total_us"], "us", "", rp(k["total_us"])),
        Row(AREA, "blocking finish it replaces (unix port)", k["blocking_us"], "us", "",
            rp(k["blocking_us"]) + ": one stall of the control loop"),
    ] + slave_rows(ctx)


def _slave_package(kb):
    """A slave package of about ``kb`` KB (modular sim firmware model: the
    version line in comms/can_ids.py is what the slave reports)."""
    from tools.fwpkg import tar_of
    body = b"# slave firmware\n" * (kb * 1024 // 17)
    return tar_of({"comms/can_ids.py": b"FW_VERSION = (0, 2, 0)\n" + body[: len(body) // 2],
                   "slave/core.py": body[len(body) // 2:]})


def slave_rows(ctx):
    """One slave of a 16 x 16 modular pack updated through the master over the
    simulated CAN bus (exact frame timing, MCP2515 buffer depths)."""
    import hashlib
    import tempfile
    from bms.params import P_CHG_SWITCH, P_DSG_SWITCH
    from comms import slave_update as SU
    from tools.sim.modular import build_modular
    kb = 16 if ctx.quick else 40
    with tempfile.TemporaryDirectory() as d:
        sim = build_modular(slaves=16, cells=16, chem="LFP", flash_dir=d)
        fwd = sim.enable_slave_update()
        sim.params.set(P_CHG_SWITCH, 0)
        sim.params.set(P_DSG_SWITCH, 0)
        sim.run(3)
        bits0, t0 = sim.bus.busy_us, sim.t_ms
        sim.run(10)
        idle_load = (sim.bus.busy_us - bits0) / ((sim.t_ms - t0) * 10.0)
        pkg = _slave_package(kb)
        st = sim.pkgstore
        st.begin(len(pkg), hashlib.sha256(pkg).digest(), None)
        off = 0
        while off < len(pkg):
            off = st.chunk(off, pkg[off:off + 240])
        st.finish()
        ovf0 = sim.master_node.rx_overflow
        fwd.start(1, sim.clock.ticks_ms())
        bits0, t0 = sim.bus.busy_us, sim.t_ms
        not_ok = 0
        send_ms = None
        while fwd.phase < SU.FP_DONE and sim.t_ms - t0 < 600000:
            sim.run(0.1)
            if fwd.phase == SU.FP_SEND:
                send_ms = sim.t_ms - t0
                if any(s != "ok" for s in sim.module_states()[1:]):
                    not_ok += 1
        total_ms = sim.t_ms - t0
        load = (sim.bus.busy_us - bits0) / (total_ms * 10.0)
        ok = fwd.phase == SU.FP_DONE
        state, _slot, ver = sim.slave_firmware(1)
        ok = ok and state == "ok" and ver == (0, 2, 0)
    return [
        Row(AREA, "slave update over CAN: %d KB package, 16x16 pack" % (len(pkg) // 1024),
            round(total_ms / 1000.0, 1), "s", "", "upload done -> slave confirmed: %s%s"
            % ("reports %d.%d.%d" % ver if ok else "FAILED: " + fwd.err_text, "")),
        Row(AREA, "slave update: transfer rate", round(len(pkg) / (send_ms or total_ms), 2),
            "KB/s", "", "sending phase only"),
        Row(AREA, "slave update: bus load during the update", round(load, 1), "%", "< 30",
            "%.1f %% without an update" % idle_load),
        Row(AREA, "slave update: other modules not ok while sending", not_ok, "samples", 0,
            "master RX overflows %d" % (sim.master_node.rx_overflow - ovf0)),
    ]
