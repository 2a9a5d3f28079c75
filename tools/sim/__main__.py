"""`make sim`: the firmware on a simulated pack, reachable by the PC tool.

Default: a live terminal view of a 16S LFP pack running the unchanged
firmware core on the real drivers and byte-level chip emulators (BQ76952,
INA228, NTC ADCs), with a charge / load / rest profile, and its RS485 PC
port on a pseudo-terminal (symlinked at /tmp/bms-pc) where `bmsctl` or any
Modbus RTU client can connect.

    make sim                                   live demo, PC port on /tmp/bms-pc
    make sim ARGS="--speed 20"                 twenty simulated seconds per second
    make sim ARGS="--cells 24"                 the 17S-32S single board: two stacked BQ76952
    make sim ARGS="--slaves 16 --cells 16"     master + 16 CAN slave modules (256S)
    make sim ARGS="--scenario overcharge --out out/overcharge.json"
    make sim ARGS="--list"                     the named scenarios
    make sim ARGS="--target rp2040"            the board image (UF2) on the emulated RP2040;
                                               PC port /tmp/bms-pc, USB REPL /tmp/bms-usb
"""
import argparse
import os
import sys
import time

import tools  # noqa: F401  (sys.path: firmware/, shims)
from bms import faults as F
from bms.contactors import RELAY_NAMES
from bms.core import MODE_NAMES
from bms.measurements import ROLE_NAMES
from tools.sim.scenarios import SCENARIOS, run_scenario
from tools.sim.simulator import Simulation


def demo_profile(sim):
    """Charge, rest, discharge, rest: a 12-minute loop so every page moves."""
    t = (sim.t_ms // 1000) % 720
    p = sim.pack
    if t < 240:
        p.charger_a, p.charger_cv, p.load_a = 40.0, p.n * 3.45, 0.0
    elif t < 300:
        p.charger_a, p.load_a = 0.0, 0.0
    elif t < 600:
        p.charger_a, p.load_a = 0.0, 60.0 if (t // 30) % 2 else 25.0
    else:
        p.charger_a, p.load_a = 0.0, 0.0


def _table(sim, link_path):
    from rich.table import Table
    m = sim.bms.meas
    bms = sim.bms
    t = Table(title="MicroPython BMS on a simulated %dS %s pack - t=%.0f s" % (
        m.n_cells, sim.pack.chem, sim.t_ms / 1000.0), expand=False)
    t.add_column("cell")
    t.add_column("mV", justify="right")
    t.add_column("bal")
    t.add_column(" ")
    t.add_column("pack")
    t.add_column("value", justify="right")
    bal = getattr(sim.board, "balance", bytearray(m.n_cells))
    c = bms.contactors.state
    faults = [F.TABLE[i][F.F_NAME] for i in range(F.N_FAULTS) if bms.prot.active(i)]
    temps = []
    for role in range(len(ROLE_NAMES)):
        n = sum(1 for i in range(m.n_temps) if m.temp_role[i] == role)
        if n:
            temps.append((ROLE_NAMES[role], "%.1f .. %.1f degC (%d)" % (
                m.tmin[role] / 10.0, m.tmax[role] / 10.0, n)))
    lim = getattr(bms, "limits", None)
    right = [
        ("voltage", "%.2f V" % (m.pack_mv / 1000.0)),
        ("current", "%+.1f A" % (m.current_ma / 1000.0)),
        ("SOC", "%.1f %%" % (bms.soc.soc_pm / 10.0)),
        ("true SOC", "%.1f %%" % (sim.pack.true_soc() * 100.0)),
        ("mode", MODE_NAMES[bms.mode]),
        ("max/min", "%d (#%d) / %d (#%d)" % (m.max_mv, m.max_idx + 1, m.min_mv, m.min_idx + 1)),
        ("diff", "%d mV" % m.diff_mv),
        ("relays", " ".join(n for i, n in enumerate(RELAY_NAMES) if c[i]) or "all open"),
        ("faults", ", ".join(faults) or "none"),
        ("level", F.LEVEL_NAMES[bms.prot.level]),
    ]
    if lim is not None and hasattr(lim, "ccl_ma"):
        right.append(("CCL / DCL", "%.0f / %.0f A" % (lim.ccl_ma / 1000.0, lim.dcl_ma / 1000.0)))
    right += [("T " + name, txt) for name, txt in temps]
    if link_path:
        right.append(("PC port", link_path))
    rows = max(m.n_cells if m.n_cells <= 32 else 32, len(right))
    for i in range(rows):
        cell = ("%d" % (i + 1), "%d" % m.cell_mv[i], "*" if bal[i] else "") \
            if i < m.n_cells and i < 32 else ("", "", "")
        r = right[i] if i < len(right) else ("", "")
        t.add_row(cell[0], cell[1], cell[2], "", r[0], r[1])
    if m.n_cells > 32:
        t.caption = "%d cells: showing 1-32 (bmsctl monitor shows all)" % m.n_cells
    return t


def _build(a):
    if a.slaves:
        from tools.sim.modular import build_modular
        return build_modular(a.slaves, a.cells, a.chem)
    factory = None
    if a.board == "chip":
        if a.cells > 32:
            sys.exit("--board chip models one BQ76952 (up to 16 cells) or two stacked "
                     "(17-32 cells, board pico32); use --board fake or --slaves for more")
        from tools.sim.chipboard import ChipBoard
        factory = lambda pack: ChipBoard(pack, seed=a.seed + 1)  # noqa: E731
    return Simulation(chem=a.chem, cells=a.cells, soc=a.soc, seed=a.seed,
                      board_factory=factory)


def run_live(a):
    from rich.console import Console
    from rich.live import Live
    from tools.sim.pclink import PcLink
    sim = _build(a)
    sim.hooks.append(demo_profile)
    link = None
    # A flash directory for the persistent log and firmware updates.
    if getattr(sim, "attach_flash", None) is not None and getattr(sim, "fs", None) is None:
        sim.attach_flash(a.flash or True, a.update_key.encode() if a.update_key else None)
    if not a.no_pc_link:
        link = PcLink(sim, symlink=a.pc_link or None)
    path = (link.path + (" -> " + a.pc_link if a.pc_link else "")) if link else ""
    console = Console()
    if getattr(sim, "fs", None) is not None:
        console.print("flash (persistent log, firmware slots): %s" % sim.fs.path)
    if path:
        console.print("PC port (Modbus RTU 9600 8N1, address 1): %s   try: bmsctl --port %s monitor"
                      % (path, a.pc_link or link.path))
    t0 = time.monotonic()
    v0 = sim.t_ms
    end = None if a.seconds is None else v0 + a.seconds * 1000
    try:
        with Live(_table(sim, path), console=console, refresh_per_second=4,
                  transient=False) as live:
            last = 0.0
            while end is None or sim.t_ms < end:
                target = (time.monotonic() - t0) * 1000.0 * a.speed
                if sim.t_ms - v0 < target:
                    sim.step()
                else:
                    time.sleep(0.001)
                now = time.monotonic()
                if now - last > 0.25:
                    live.update(_table(sim, path))
                    last = now
    except KeyboardInterrupt:
        pass
    finally:
        if link:
            link.close()
    return 0


def run_named(a):
    sc = SCENARIOS[a.scenario]
    t0 = time.time()
    sim = run_scenario(a.scenario, a.board, a.seconds, a.sample_ms)
    wall = time.time() - t0
    print("scenario %s: %s" % (sc.name, " ".join(sc.text.split())))
    print("simulated %.0f s in %.2f s wall (%.0fx real time)" % (
        sim.t_ms / 1000.0, wall, sim.t_ms / 1000.0 / max(wall, 1e-6)))
    for e in sim.events():
        if e["kind"] in ("fault_set", "fault_clear", "relay", "soc_cal", "exception"):
            what = e.get("fault") or e.get("relay") or ""
            print("  %9.2f s  %-11s %-13s %s" % (e["t_s"], e["kind"], what, e["b"]))
    print("final: faults %s, relays %s" % (
        ", ".join(sim.active_faults()) or "none",
        " ".join(n for i, n in enumerate(RELAY_NAMES) if sim.bms.contactors.state[i]) or "open"))
    if a.out:
        d = os.path.dirname(a.out)
        if d:
            os.makedirs(d, exist_ok=True)
        if a.out.endswith(".csv"):
            sim.write_csv(a.out)
        else:
            sim.write_json(a.out, a.scenario)
        print("wrote", a.out)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), help="run one scenario at full speed")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    ap.add_argument("--out", help="timeline file for --scenario (.json or .csv)")
    ap.add_argument("--sample-ms", type=int, default=1000, help="timeline sample period")
    ap.add_argument("--board", choices=("chip", "fake"), default="chip",
                    help="chip: real drivers on chip emulators; fake: value-level board")
    ap.add_argument("--chem", default="LFP", choices=("NMC", "LFP", "LTO", "NA"))
    ap.add_argument("--cells", type=int, default=16, help="cells (per module with --slaves)")
    ap.add_argument("--slaves", type=int, default=0, help="master + N CAN slave modules")
    ap.add_argument("--soc", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this simulated time")
    ap.add_argument("--pc-link", default="/tmp/bms-pc", help="symlink to the PC-port pty")
    ap.add_argument("--no-pc-link", action="store_true")
    ap.add_argument("--flash", help="directory standing in for the board's flash (default: temp)")
    ap.add_argument("--update-key", help="HMAC key the simulated updater requires (default none)")
    ap.add_argument("--target", choices=("host", "rp2040"), default="host",
                    help="host: the firmware under CPython; rp2040: the board image on the "
                         "emulated RP2040 (tools/rp2emu)")
    ap.add_argument("--usb-link", default="/tmp/bms-usb",
                    help="symlink to the USB REPL pty (--target rp2040)")
    a = ap.parse_args(argv)
    if a.target == "rp2040":
        if a.scenario or a.slaves or a.board != "chip":
            ap.error("--target rp2040 runs the live demo of a single board "
                     "(no --scenario, --slaves or --board)")
        from tools.rp2emu import live
        return live.run(a)
    if a.list:
        for name in sorted(SCENARIOS):
            print("%-18s %s" % (name, " ".join(SCENARIOS[name].text.split())))
        return 0
    if a.scenario:
        return run_named(a)
    return run_live(a)


if __name__ == "__main__":
    sys.exit(main())
