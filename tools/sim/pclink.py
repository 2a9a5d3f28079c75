"""The simulated board's RS485-2 (PC) port as a pseudo-terminal.

``PcLink(sim)`` opens a pty, prints nothing by itself (``.path`` names the
slave side; ``symlink`` adds a stable name such as ``/tmp/bms-pc``) and runs
the real firmware Modbus server (``comms.modbus_rtu``) on the simulated
Bms.  Any serial client (bmsctl, pymodbus, minimalmodbus, QModMaster ...)
opens the path like a USB-RS485 adapter.

Timing is that of the wire, in the simulation's virtual time: bytes from the
client are released to the server's port one character time apart (10
bits per character: the line is 8N1, start + 8 data + stop), and the reply
goes back to the pty at the same rate, so the firmware's t1.5/t3.5 framing
and the throughput figures are those of a real 9600-baud line.  The server
is polled the way the board's main loop polls it (firmware/app.py): every
1 ms of virtual time, and also at the moment a byte arrives, because the
board's loop idles in ``select.poll`` on the UART and wakes on input.  Its
clock (``ticks_us``) has the link's sub-millisecond time, so the silence it
measures after the last byte is the wire's, not rounded to the next ms.

Wiring: ``sim.pollers.append(link.poll)`` (done by ``attach=True``); the
simulation must then be stepped (``run_realtime`` below paces it against
the wall clock, which is what an interactive client needs).

Run standalone:  python -m tools.sim.pclink [--symlink /tmp/bms-pc]
"""
import argparse
import collections
import errno
import os
import sys
import time
import tty

import tools  # noqa: F401  (firmware on sys.path)
from bms.auth import Auth
from bms.ticks import TICKS_MAX
from comms.modbus_rtu import ModbusRTU
from comms.registers import RegisterMap
from comms.regs.identity import DeviceInfo

BITS_PER_CHAR = 10   # 8N1


class _LinkClock:
    """The server's clock: ms steps of the link, also as ticks_us like a board has."""

    def __init__(self, t):
        self.t = t
        self.us = t * 1000

    def ticks_ms(self):
        return self.t & TICKS_MAX

    def ticks_us(self):
        return self.us & TICKS_MAX


class _SimPort:
    """The firmware side of the link: the UART-like interface of the brief."""

    def __init__(self, link):
        self.link = link
        self.rx = bytearray()

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        if n == 0:
            return None
        buf[:n] = self.rx[:n]
        del self.rx[:n]
        return n

    def write(self, buf):
        self.link._transmit(bytes(buf))
        return len(buf)

    def flush(self):
        self.link._flush_tx()

    def set_baud(self, baud):
        self.link.baud = baud


class PcLink:
    def __init__(self, sim, symlink=None, baud=9600, auth=None, info=None, attach=True):
        self.sim = sim
        self.baud = baud
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline before a client opens it
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.symlink = symlink
        if symlink:
            try:
                os.unlink(symlink)
            except FileNotFoundError:
                pass
            os.symlink(self.path, symlink)
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
        if getattr(sim, "updater", None) is not None or getattr(sim, "plog", None) is not None:
            self.regs.attach_update(sim.updater, sim.plog)   # update and log windows
        if getattr(sim, "slave_fw", None) is not None:
            self.regs.attach_slave_update(lambda: sim.slave_fw)   # slaves via the master
        self.t = sim.clock.ticks_ms()
        self.clock = _LinkClock(self.t)
        self.port = _SimPort(self)
        self.server = ModbusRTU(self.port, self.regs, self.clock, params=sim.params)
        self._rx_q = collections.deque()   # (due virtual ms, byte) towards the firmware
        self._tx_q = collections.deque()   # (due virtual ms, byte) towards the pty
        self._rx_next = 0.0
        self._tx_next = 0.0
        self._vt = 0.0   # link virtual time in ms since start (float schedule)
        self.bytes_in = 0
        self.bytes_out = 0
        self.first_reply_delay_ms = []  # last request byte on the wire -> first reply byte
        self._last_rx_due = None
        if attach:
            sim.pollers.append(self.poll)

    @property
    def char_ms(self):
        return BITS_PER_CHAR * 1000.0 / self.baud

    # ---- pty side -----------------------------------------------------------
    def _read_pty(self):
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.EIO, errno.EAGAIN):
                return
            raise
        start = max(self._rx_next, self._vt)
        c = self.char_ms
        for b in data:
            start += c
            self._rx_q.append((start, b))
        self._rx_next = start
        self.bytes_in += len(data)
        if data:
            self._hold_busy()

    def _hold_busy(self):
        # The board's loop polls every 1 ms for a while after input (app.IDLE_BUSY_HOLD_MS).
        sim = self.sim
        if hasattr(sim, "busy_until_ms"):
            sim.busy_until_ms = max(sim.busy_until_ms, sim.t_ms + 200)

    def _transmit(self, data):
        start = max(self._tx_next, self._vt)
        if self._last_rx_due is not None:
            self.first_reply_delay_ms.append(start - self._last_rx_due)
            self._last_rx_due = None
        c = self.char_ms
        for b in data:
            start += c
            self._tx_q.append((start, b))
        self._tx_next = start

    def _flush_tx(self):
        out = bytes(b for _, b in self._tx_q)
        self._tx_q.clear()
        self._write_pty(out)

    def _write_pty(self, out):
        if not out:
            return
        try:
            os.write(self.master, out)
            self.bytes_out += len(out)
        except OSError:
            pass  # nobody listening: a real line just drops it too

    # ---- stepping -----------------------------------------------------------
    def poll(self, sim=None):
        """Advance the link to the simulation's time, 1 ms at a time."""
        sim = sim or self.sim
        target = sim.clock.ticks_ms()
        steps = (target - self.t) & TICKS_MAX
        if steps > 10000:
            steps = 10000  # a huge jump (clock reset): do not spin
        self._read_pty()
        for _ in range(steps):
            t0 = self._vt
            self.t += 1
            self._vt += 1.0
            clk = self.clock
            q = self._rx_q
            port_rx = self.port.rx
            # A byte that lands inside this millisecond wakes the loop then
            # (select.poll on the UART), so it is read at its own time.
            while q and q[0][0] < self._vt:
                due, b = q.popleft()
                port_rx.append(b)
                if not q:
                    self._last_rx_due = due
                vt = self._vt
                self._vt = due if due > t0 else t0
                clk.us = self.t * 1000 - int(round((vt - self._vt) * 1000.0))
                self.server.poll()
                self._vt = vt
            clk.t = self.t
            clk.us = self.t * 1000
            while q and q[0][0] <= self._vt:
                due, b = q.popleft()
                port_rx.append(b)
                if not q:
                    self._last_rx_due = due
            self.server.poll()
            out = bytearray()
            tq = self._tx_q
            while tq and tq[0][0] <= self._vt:
                out.append(tq.popleft()[1])
            self._write_pty(bytes(out))

    def close(self):
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.symlink:
            try:
                if os.path.islink(self.symlink):
                    os.unlink(self.symlink)
            except OSError:
                pass


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
