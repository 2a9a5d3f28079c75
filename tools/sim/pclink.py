"""The simulated board's RS485-2 (PC) port as a pseudo-terminal.

``PcLink(sim)`` opens a pty, prints nothing by itself (``.path`` names the
slave side; ``symlink`` adds a stable name such as ``/tmp/bms-pc``) and runs
the real firmware Modbus server (``comms.modbus_rtu``) on the simulated
Bms.  Any serial client (bmsctl, pymodbus, minimalmodbus, QModMaster ...)
opens the path like a USB-RS485 adapter.

The pty, the stale-link handling and the wire pacing live in
``tools.sim.ptylink`` (shared with the TTL port).  Timing is that of the
wire, in the simulation's virtual time: bytes from the client are released
to the server's port one character time apart (10 bits per character: the
line is 8N1, start + 8 data + stop), and the reply goes back to the pty at
the same rate, so the firmware's t1.5/t3.5 framing and the throughput
figures are those of a real 9600-baud line.  The server is polled the way
the board's main loop polls it: every 1 ms of virtual time, and also at the
moment a byte arrives (the board's loop idles in ``select.poll`` on the
UART and wakes on input), on a clock with the link's sub-millisecond time.

Wiring: ``sim.pollers.append(link.poll)`` (done by ``attach=True``); the
simulation must then be stepped (``run_realtime`` below paces it against
the wall clock, which is what an interactive client needs).

Run standalone:  python -m tools.sim.pclink [--symlink /tmp/bms-pc]
"""
import argparse
import sys
import time

import tools  # noqa: F401  (firmware on sys.path)
from bms.auth import Auth
from comms.modbus_rtu import ModbusRTU
from comms.registers import RegisterMap
from comms.regs.identity import DeviceInfo
from tools.sim.ptylink import LinkClock as _LinkClock, PtyLink, SimPort as _SimPort  # noqa: F401

BITS_PER_CHAR = 10   # 8N1


class PcLink(PtyLink):
    bits_per_char = BITS_PER_CHAR

    def __init__(self, sim, symlink=None, baud=9600, auth=None, info=None, attach=True):
        super().__init__(sim, symlink=symlink, baud=baud, attach=False)
        if auth is None:
            auth = getattr(sim, "auth", None)
        if auth is None:
            # One Auth per board, shared by every channel of the simulation.
            auth = Auth(sim.clock, {}, factory_password=b"factory")
            sim.auth = auth
        self.auth = auth
        self.info = info or DeviceInfo(model="MPY-BMS-SIM", serial="SIM00001",
                                       mfg_date="2026-01-01", bt_addr="26541C98068E")
        self.regs = RegisterMap(sim.bms, auth, self.info)
        self.regs.services = getattr(sim, "services", None)   # lease, flash log
        if getattr(sim, "updater", None) is not None or getattr(sim, "plog", None) is not None:
            self.regs.attach_update(sim.updater, sim.plog)   # update and log windows
        if getattr(sim, "slave_fw", None) is not None:
            self.regs.attach_slave_update(lambda: sim.slave_fw)   # slaves via the master
        self.server = ModbusRTU(self.port, self.regs, self.clock, params=sim.params)
        if attach:
            sim.pollers.append(self.poll)

    def service(self):
        self.server.poll()


def run_realtime(sim, seconds=None, speed=1.0, stop=None):
    """Step ``sim`` so that virtual time follows the wall clock times ``speed``."""
    t0 = time.monotonic()
    v0 = sim.t_ms
    while True:
        if stop is not None and stop.is_set():
            return
        wall_ms = (time.monotonic() - t0) * 1000.0 * speed
        if seconds is not None and sim.t_ms - v0 >= seconds * 1000:
            return
        if sim.t_ms - v0 < wall_ms:
            sim.step()
        else:
            time.sleep(0.001)


def main(argv=None):
    from tools.sim.simulator import Simulation
    ap = argparse.ArgumentParser(description="Simulated BMS with its PC port on a pty")
    ap.add_argument("--symlink", default="/tmp/bms-pc")
    ap.add_argument("--chem", default="LFP")
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--speed", type=float, default=1.0, help="virtual seconds per wall second")
    ap.add_argument("--seconds", type=float, default=None)
    a = ap.parse_args(argv)
    sim = Simulation(chem=a.chem, cells=a.cells, flash_dir=True)
    link = PcLink(sim, symlink=a.symlink or None)
    print("PC port (Modbus RTU, 9600 8N1, address 1): %s%s" % (
        link.path, (" -> " + a.symlink) if a.symlink else ""), flush=True)
    try:
        run_realtime(sim, a.seconds, a.speed)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
