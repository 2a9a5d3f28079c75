"""Internal CAN: 256-cell sweep time against the bus limit, master CPU per sweep.

Bus figures come from exact frame bit counts (stuff bits of the real
frames) on the simulated bus; CPU figures from the MicroPython unix port
(x86: an RP2040 at 125 MHz is roughly 30-60x slower; the pure-Python
MCP2515 SPI transfer, about 3 ms per frame on an RP2040, is not included).
"""
from comms import can_ids as C
from tools.bench.common import Row, parse_kv

AREA = "can"


def _sweep_on_sim(seconds):
    from tools.sim.modular import build_modular
    sim = build_modular(slaves=16, cells=16)
    log = []
    sim.bus.sniffers.append(lambda t, i, d, e: log.append((t, i, len(d))))
    sim.run(seconds)
    syncs = [t for t, i, n in log if i == C.ID_SYNC]
    # last complete sweep: from a SYNC to the last module frame before the next SYNC
    t0, t1 = syncs[-3], syncs[-2]
    sweep = [(t, i, n) for t, i, n in log if t0 <= t < t1]
    last_cells = max(t for t, i, n in sweep if C.ID_CELLS <= i < C.ID_CELLS + 64 or
                     C.ID_TEMPS <= i < C.ID_TEMPS + 16)
    busy = sum(sim.bus.frame_time_us(i, bytes(n)) for t, i, n in sweep)
    cell_frames = [x for x in sweep if C.ID_CELLS <= x[1] < C.ID_CELLS + 64]
    return sim, (last_cells - t0) / 1000.0, busy / 1000.0, len(sweep), len(cell_frames)


def run(ctx):
    rows = []
    r = C.BITRATE
    best = 111   # SOF..IFS without a single stuff bit
    worst = 135
    for br in (r, 500000):
        rows.append(Row(AREA, "64 cell frames on the wire @%dk" % (br // 1000),
                        "%.1f-%.1f" % (64 * best * 1e3 / br, 64 * worst * 1e3 / br), "ms",
                        "", "111-135 bits per 8-byte frame"))
    sim, sweep_ms, busy_ms, n_frames, n_cells = _sweep_on_sim(6 if ctx.quick else 12)
    rows.append(Row(AREA, "frames per sweep (16x16)", n_frames, "", "",
                    "%d cell frames + status/temps/SYNC/commands" % n_cells))
    rows.append(Row(AREA, "bus time per sweep @%dk (exact stuffing)" % (r // 1000), busy_ms, "ms",
                    "", "the bus limit for one sweep"))
    rows.append(Row(AREA, "SYNC -> last module frame (TDMA)", sweep_ms, "ms",
                    "< %d" % C.SWEEP_MS, "paced: one frame per %d ms" % C.GAP_MS))
    rows.append(Row(AREA, "bus load", 100.0 * sim.bus.busy_us / (sim.t_ms * 1000.0), "%",
                    "< 30", "%d ms sweep period" % C.SWEEP_MS))
    rows.append(Row(AREA, "master frame rate avg / peak", "%.0f / %.0f" % (
        sim.master_node.rx_count / (sim.t_ms / 1000.0), 1000.0 / C.GAP_MS), "frames/s",
        "< 300", "pure-Python MCP2515 ~300 frames/s"))
    rows.append(Row(AREA, "master RX overflows (2 buffers, 2 ms poll)",
                    sim.master_node.rx_overflow, "", "0"))
    out = parse_kv(ctx.upy("tools/bench/upy/can_sweep.py", 16, 20 if ctx.quick else 100))
    rows.append(Row(AREA, "master CPU per sweep: receive 96 frames (upy unix)",
                    out.get("master_rx_us_per_sweep"), "us", "",
                    "%.2f us/frame" % out.get("master_rx_us_per_frame", 0)))
    rows.append(Row(AREA, "master CPU per sweep: snapshot 256 cells + temps (upy unix)",
                    out.get("master_fill_us_per_sweep"), "us", "", "fill_cells/fill_temps/set_balance"))
    rows.append(Row(AREA, "master heap allocated per sweep", out.get("master_alloc_bytes_per_sweep"),
                    "bytes", "0"))
    rows.append(Row(AREA, "slave CPU per sweep (upy unix, 500 loop passes)",
                    out.get("slave_us_per_sweep"), "us", "", "sample + 6 frames"))
    return rows


if __name__ == "__main__":
    import tools  # noqa: F401
    from tools.bench.common import Ctx
    for row in run(Ctx(quick=True)):
        print(row.as_dict())
