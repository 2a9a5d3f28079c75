"""`make sim`: the firmware on a simulated pack, reachable by the PC tool.

Default: a live terminal view of a 16S LFP pack running the unchanged
firmware core on the real drivers and byte-level chip emulators (BQ76952,
INA228, NTC ADCs), with a charge / load / rest profile, and its RS485 PC
port on a pseudo-terminal (symlinked at /tmp/bms-pc) where `bmsctl` or any
Modbus RTU client can connect, its TTL port on another (/tmp/bms-ttl, JBD
read mode or the display protocol), and with ``--can`` the inverter CAN on
SocketCAN or python-can's virtual bus.  The emulated flash (settings,
persistent log, firmware slots) is a named folder under build/sim/, kept
between runs.  Piped, it prints one plain line every ``--every`` seconds.

    make sim                                   live demo, PC port on /tmp/bms-pc
    make sim ARGS="--speed 20"                 twenty simulated seconds per second
    make sim ARGS="--can vcan0"                inverter frames on SocketCAN vcan0
    make sim ARGS="--ttl display"              TTL port: display protocol only
    make sim ARGS="--fresh"                    forget the stored settings and log
    make sim ARGS="--cells 24"                 the 17S-32S single board: two stacked BQ76952
    make sim ARGS="--slaves 16 --cells 16"     master + 16 CAN slave modules (256S)
    make sim ARGS="--scenario overcharge --out out/overcharge.json"
    make sim ARGS="--list"                     the named scenarios
    make sim ARGS="--target rp2040"            the board image (UF2) on the emulated RP2040;
                                               PC port /tmp/bms-pc, USB REPL /tmp/bms-usb
"""
import argparse
import os
import shutil
import sys
import time

import tools  # noqa: F401  (sys.path: firmware/, shims)
from bms.contactors import RELAY_NAMES
from tools.sim.scenarios import SCENARIOS, run_scenario
from tools.sim.pack import demo_cycle
from tools.sim.simulator import Simulation

STATE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "build", "sim")


def demo_profile(sim):
    demo_cycle(sim.pack, sim.t_ms // 1000)


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


def state_dir(a):
    """The sim's named state folder (its flash) under build/sim/; --fresh empties it."""
    if a.flash:
        if a.fresh:
            # Not emptied for the user (it is their directory), not claimed fresh either.
            sys.exit("--fresh starts a state folder under %s over; with --flash, empty %s "
                     "yourself" % (STATE_ROOT, a.flash))
        return a.flash
    name = a.state or ("%s-%dS%s" % (a.chem, a.cells, "-%dM" % a.slaves if a.slaves else ""))
    if os.sep in name or name in ("", ".", ".."):
        sys.exit("--state takes a plain name (a folder under %s)" % STATE_ROOT)
    path = os.path.join(STATE_ROOT, name)
    if a.fresh and os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    return path


def open_ports(sim, a, say=print):
    """PC Modbus pty, TTL pty, inverter CAN (and the module bus mirror): [(name, where)]."""
    from tools.sim.pclink import PcLink
    from tools.sim.ptylink import TtlLink
    links, ports = [], []
    if not a.no_pc_link:
        pc = PcLink(sim, symlink=a.pc_link or None)
        links.append(pc)
        ports.append(("PC port", pc.where))
        say("PC port (Modbus RTU 9600 8N1, address 1): %s   try: bmsctl --port %s monitor"
            % (pc.where, a.pc_link or pc.path))
    if not a.no_ttl_link:
        ttl = TtlLink(sim, symlink=a.ttl_link or None, protocol=a.ttl)
        links.append(ttl)
        ports.append(("TTL port", ttl.where))
        say("TTL port (%s, 9600 8N1): %s" % (
            "JBD read mode + display protocol" if a.ttl == "jbd" else "display protocol",
            ttl.where))
    if a.can:
        from tools.sim.canlink import InverterLink, ModuleBusMirror
        inv = InverterLink(sim, a.can, report=say)
        links.append(inv)
        ports.append(("inverter CAN", inv.where))
        say("inverter CAN (Pylontech, 500 kbit/s): %s   try: candump %s | "
            "python -m cantools decode docs/inverter_pylon.dbc" % (inv.where, a.can))
        if getattr(sim, "bus", None) is not None:
            mod_ch = a.module_can or a.can
            mirror = ModuleBusMirror(sim, mod_ch, report=say)
            links.append(mirror)
            ports.append(("module CAN", mirror.where))
            say("module bus (internal CAN, copied): %s" % mirror.where)
    else:
        say("inverter CAN: off (--can vcan0 puts it on SocketCAN or python-can's virtual bus)")
    return links, ports


def run_live(a):
    from rich.console import Console
    from tools.sim import live as L
    sim = _build(a)
    sim.hooks.append(demo_profile)
    console = Console()
    path = state_dir(a)
    sim.attach_flash(path, a.update_key.encode() if a.update_key else None)
    sim.attach_settings()
    console.print("state folder (flash: settings, persistent log, firmware slots): %s%s" % (
        path, "  (fresh)" if a.fresh else "  (kept between runs; --fresh starts over)"),
        soft_wrap=True)
    links, ports = open_ports(sim, a, lambda text: console.print(text, soft_wrap=True))
    t0 = time.monotonic()
    v0 = sim.t_ms
    end = None if a.seconds is None else v0 + a.seconds * 1000
    interactive = console.is_terminal and not a.plain

    def pace():
        target = (time.monotonic() - t0) * 1000.0 * a.speed
        if sim.t_ms - v0 < target:
            sim.step()
        else:
            time.sleep(0.001)

    try:
        if interactive:
            from rich.live import Live
            with Live(L.table(sim, ports), console=console, refresh_per_second=4,
                      transient=False) as live:
                last = 0.0
                while end is None or sim.t_ms < end:
                    pace()
                    now = time.monotonic()
                    if now - last > 0.25:
                        live.update(L.table(sim, ports))
                        last = now
        else:
            next_line = v0
            while end is None or sim.t_ms < end:
                pace()
                if sim.t_ms >= next_line:
                    print(L.plain_line(sim), flush=True)
                    next_line += int(a.every * 1000)
    except KeyboardInterrupt:
        pass
    finally:
        for link in links:
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
    ap.add_argument("--ttl-link", default="/tmp/bms-ttl", help="symlink to the TTL-port pty")
    ap.add_argument("--no-ttl-link", action="store_true")
    ap.add_argument("--ttl", choices=("jbd", "display"), default="jbd",
                    help="TTL port protocol: JBD read mode (also answers the display "
                         "protocol) or the display protocol only")
    ap.add_argument("--can", help="inverter CAN on this SocketCAN interface (e.g. vcan0); "
                                  "python-can's virtual bus if it does not exist")
    ap.add_argument("--module-can", help="with --slaves: copy the module bus here "
                                         "(default: the --can interface)")
    ap.add_argument("--state", help="state folder name under build/sim/ "
                                    "(default: CHEM-NS, e.g. LFP-16S)")
    ap.add_argument("--fresh", action="store_true", help="start the state folder over")
    ap.add_argument("--flash", help="a directory of your own instead of the state folder")
    ap.add_argument("--plain", action="store_true", help="plain periodic lines, no live table")
    ap.add_argument("--every", type=float, default=5.0,
                    help="simulated seconds between plain lines (piped output)")
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
