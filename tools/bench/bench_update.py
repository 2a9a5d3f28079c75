"""Firmware update finish: bounded work per step (issue 7).

The finish runs in the app's loop, one step per pass; what matters on a
board is the longest step (it delays the next control cycle) against the
blocking finish it replaced (it stalled the control loop for all of it).
Measured under the MicroPython unix port on a RAM fake flash, so the CPU
part only (hashing, tar headers, copying); on an RP2040 add the littlefs
I/O: reading 2 KB ~1-2 ms, programming 2 KB ~5 ms, plus one 4 KB sector
erase (~45 ms typical) when a write needs a fresh block.
"""
from tools.bench.bench_core import RP2040_US_PER_ITER
from tools.bench.common import Row, parse_kv

AREA = "update"


def run(ctx):
    from bms.update import STEP_BYTES
    kb = 64 if ctx.quick else 192
    k = parse_kv(ctx.upy("tools/bench/upy/update_finish.py", kb, STEP_BYTES))
    ref = k["us_ref_iter"]

    def rp(us):
        return "est. RP2040 CPU %.1f ms" % (us / ref * RP2040_US_PER_ITER / 1000.0)

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
    ]
