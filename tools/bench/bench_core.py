"""Core figures: heap and cycle cost under the MicroPython unix port,
protection reaction time in simulated ms, simulator speed."""
import time

from tools.bench.common import Row, parse_kv



def _upy(ctx, cells):
    return parse_kv(ctx.upy("tools/bench/upy/core_cycle.py", cells))


def _reaction_rows():
    """Time from condition to relay open, on the value-level board."""
    import sys
    import os
    from tools.bench.common import ROOT
    sys.path.insert(0, os.path.join(ROOT, "host_tests", "core"))
    from harness import Rig
    from bms import faults as F
    from bms.contactors import RELAY_CHG, RELAY_DSG
    rows = []
    for name, setup, relay, fid in (
            ("ov1", lambda r: r.board.cells.__setitem__(3, 3700), RELAY_CHG, F.OV1),
            ("dsg_oc", lambda r: setattr(r.board, "current_ma", -160000), RELAY_DSG, F.DSG_OC),
            ("peak", lambda r: setattr(r.board, "current_ma", -310000), RELAY_DSG, F.PEAK),
            ("short", lambda r: setattr(r.board, "current_ma", -700000), RELAY_DSG, F.SHORT)):
        worst = 0
        delay = F.spec_value(F.TABLE[fid][F.F_DELAY], None and [] or Rig().params.values)
        for phase in range(0, 250, 25):  # condition appears at every phase of the sweep
            r = Rig()
            r.run(2000 + phase, step=1)
            setup(r)
            t = r.run_until(lambda: not r.bms.contactors.state[relay], delay + 2000, step=1)
            worst = max(worst, t)
        rows.append(Row("core", "reaction %s (worst of 10 phases)" % name, worst, "ms",
                        "<= %d + 300" % delay, "configured delay %d ms" % delay))
    return rows


def _sim_speed(board, seconds):
    from tools.sim.simulator import Simulation
    fac = None
    if board == "chip":
        from tools.sim.chipboard import ChipBoard
        fac = lambda p: ChipBoard(p, seed=2)  # noqa: E731
    s = Simulation("LFP", 16, soc=0.5, board_factory=fac)
    s.pack.load_a = 20.0
    t = time.perf_counter()
    s.run(seconds)
    return seconds / (time.perf_counter() - t)



def run(ctx):
    rows = []
    img = ctx.pico_image()[2]
    for cells in (16, 256):
        k = _upy(ctx, cells)
        rom = parse_kv(ctx.upy("tools/bench/upy/core_cycle.py", cells, img))
        rows.append(Row("core", "heap after boot, %dS core, from .py" % cells,
                        k["heap_after_boot"], "B", "",
                        "imports + Bms, bytecode compiled into the heap (64-bit unix port)"))
        rows.append(Row("core", "heap after boot, %dS core, bytecode in flash" % cells,
                        rom["heap_after_boot"], "B", "",
                        "same, from a ROMFS image, 64-bit (the board figure: ram rows, frozen 32-bit)"))
        rows.extend(_cycle_rows(k, cells))
    rows.extend(_reaction_rows())
    secs = 300 if ctx.quick else 1800
    rows.append(Row("sim", "speed, 16S value-level board", _sim_speed("fake", secs), "x real time",
                    "> 100"))
    rows.append(Row("sim", "speed, 16S on chip emulators", _sim_speed("chip", secs // 3),
                    "x real time", "> 20", "real drivers, byte-level BQ76952/INA228"))
    return rows


def _cycle_rows(k, cells):
    rows = []
    if cells == 16:
        for t in ("fast", "cells", "slow"):
            rows.append(Row("core", "heap per %s task" % t, k["bytes_" + t], "B", 0,
                            "heap_lock ok" if k["locked_" + t] else "ALLOCATES under heap_lock"))
        rows.append(Row("core", "exceptions in 300 heap-locked cycles",
                        k["locked_cycle_exceptions"], "", 0,
                        "all tasks, %s SOC estimator updates locked" % k.get("locked_cycle_soc_updates", "?")))
        ref = k["us_ref_iter"]
        for t in ("fast", "cells", "slow"):
            us = k["us_" + t]
            rows.append(Row("core", "%s task cost (unix port)" % t, us, "us", "",
                            "%.0f ref-loop iterations; the chip's figure: rp2040 rows" % (
                                us / ref)))
    else:
        rows.append(Row("core", "fast task cost 256S (unix port)", k["us_fast"], "us", "",
                        "%.0f ref-loop iterations" % (k["us_fast"] / k["us_ref_iter"])))
    return rows
