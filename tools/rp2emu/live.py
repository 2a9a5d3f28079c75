"""`make sim ARGS="--target rp2040"`: the board image on the emulated RP2040
around the pack model, its RS485 PC port on a pty (the same /tmp/bms-pc as
the host simulator, so `bmsctl` and any Modbus client connect the same way)
and its USB REPL on a second pty (`mpremote connect /tmp/bms-usb`).

The chip runs at up to ``--speed`` times real time (the emulator manages
about a quarter of real time while the firmware is busy, and idle time is
nearly free), so the pack's demo profile moves in emulated time.  The status
line is read off the pins and the pack model, never through the REPL, so
mpremote has the USB port to itself.
"""
import time

from bms.contactors import RELAY_NAMES
from tools import fwbuild
from tools.rp2emu.board import Background, EmuBoard, VirtualCanBus
from tools.sim.pack import Pack, demo_cycle


def status(board):
    pack = board.pack
    rel = " ".join("%s=%d" % (n[:3], board.relay(n)) for n in RELAY_NAMES if n in
                   ("discharge", "charge", "precharge", "level2"))
    v = pack.cell_voltages()
    return "t=%7.1f s  pack %.2f V %+7.1f A  cells %.3f..%.3f V  %s  cpu %.0f%%" % (
        board.chip.t_ns / 1e9, sum(v), pack.current_a, min(v), max(v), rel,
        100.0 * board.chip.busy_ns / max(1, board.chip.t_ns))


def run(a):
    board_name = "pico32" if a.cells > 16 else "pico"
    uf2 = fwbuild.build(board_name)
    pack = Pack(a.chem, a.cells, 100.0, a.soc, seed=a.seed)
    board = EmuBoard(uf2, pack, board=board_name, can_bus=VirtualCanBus(500000))
    pc = board.open_rs485(None if a.no_pc_link else a.pc_link)
    usb = board.open_usb(None if a.no_pc_link else a.usb_link)
    print("the %s image (%s) on the emulated RP2040, %dS %s pack" % (
        board_name, uf2, a.cells, a.chem))
    print("PC port (RS485 Modbus RTU, 9600 8N1): %s%s" % (
        pc.path, "" if a.no_pc_link else " -> " + a.pc_link))
    print("USB REPL (mpremote connect ...):      %s%s" % (
        usb.path, "" if a.no_pc_link else " -> " + a.usb_link))
    print("Ctrl-C to stop", flush=True)
    bg = Background(board, speed=a.speed)
    t_end = a.seconds
    try:
        with bg:
            last = 0.0
            while True:
                time.sleep(0.2)
                t = board.chip.t_ns / 1e9
                demo_cycle(pack, t)
                if bg.error is not None:
                    raise bg.error
                if time.monotonic() - last >= 2.0:
                    last = time.monotonic()
                    print(status(board), flush=True)
                if t_end is not None and t >= t_end:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        board.close()
    return 0
