"""A master and its slave modules, each its own emulated RP2040 on one
simulated CAN bus, advanced together in slices of emulated time; and the
slave-side ROMFS package the slave-update tests and the bench forward.

``Rack.chip`` / ``Rack.pins`` are the master's, so bmsctl's in-loop Modbus
client (tools.rp2emu.modbus_sync.EmuModbus) can talk to the master while
every chip keeps running."""
import hashlib
import os

SLICE_MS = 2


class Rack:
    def __init__(self, master, slaves):
        self.boards = [master] + list(slaves)
        self.chip = master.chip
        self.pins = master.pins

    def run_ms(self, ms):
        for _ in range(int(ms) // SLICE_MS or 1):
            for b in self.boards:
                b.run_ms(SLICE_MS)

    def close(self):
        for b in self.boards:
            b.close()


def master_and_slave(master_uf2, slave_uf2):
    """(Rack, bus): a master (pico image) and slave module 1 (cells 0-15 of
    the same 16S pack) on one simulated CAN bus."""
    from comms import can_ids as C
    from tools.rp2emu.board import EmuBoard, VirtualCanBus
    from tools.sim.pack import Pack
    pack = Pack("LFP", 16, 100.0, 0.5, seed=5)
    bus = VirtualCanBus(C.BITRATE)
    master = EmuBoard(master_uf2, pack, board="pico", can_bus=bus)
    slave = EmuBoard(slave_uf2, pack, board="slave_module", can_bus=bus,
                     cells=(0, 16), physics=False, module_addr=1, seed=11)
    return Rack(master, [slave]), bus


def master_client(rack, config):
    """Boot the master with ``config`` written as its /config.py, then
    bmsctl's client on its RS485 port, unlocked, with the relays opened (a
    slave update starts only then)."""
    from bms.params import index
    from tools.bmsctl.client import BmsClient
    from tools.rp2emu.modbus_sync import EmuModbus
    from tools.rp2emu.repl import Repl
    repl = Repl(rack)
    rack.run_ms(2500)
    repl.enter()
    repl.exec("f = open('/config.py', 'w')\nf.write(%r)\nf.close()" % config)
    repl.soft_reset()
    rack.run_ms(3000)
    c = BmsClient("emulated RS485", client=EmuModbus(rack))
    c.unlock("123456")
    c.set_params({index("chg_switch"): 0, index("dsg_switch"): 0})
    rack.run_ms(1000)
    return c


def entry_package(tmp, label, entry="slave_main"):
    """(package, SHA-256): a real but small ROMFS application package - the
    entry module compiled from this tree and a ``fwinfo.txt`` label; on the
    board every other module then comes from the frozen image (the ROMFS
    holds no package directory to shadow them)."""
    import contextlib
    import io
    import subprocess
    from mpremote.romfs import make_romfs
    import tools
    from tools import fwpkg
    from tools.build import mpy_cross
    d = os.path.join(tmp, "%s-%s" % (entry, label))
    os.makedirs(d)
    out = os.path.join(d, entry + ".mpy")
    subprocess.run([mpy_cross(), "-march=armv6m", "-O2", "-o", out, "-s", entry + ".py",
                    os.path.join(tools.FIRMWARE, entry + ".py")], check=True)
    with open(os.path.join(d, "fwinfo.txt"), "wb") as f:
        f.write(label.encode())
    with contextlib.redirect_stdout(io.StringIO()):   # make_romfs prints the tree
        img = make_romfs(d, mpy_cross=False)
    pkg = fwpkg.romfs_package(img, fwpkg.mpy_of(out))
    return pkg, hashlib.sha256(pkg).digest()
