"""A serial port of the simulated board as a pseudo-terminal, paced like the wire.

``PtyLink`` opens a pty (``.path`` names the slave side; ``symlink`` adds a
stable name such as ``/tmp/bms-pc``) and gives the firmware side a UART-like
port (``any`` / ``readinto`` / ``write`` / ``flush`` / ``set_baud``).
Subclasses run a firmware service on that port in ``service()``:
``PcLink`` (tools.sim.pclink) the Modbus RTU server, ``TtlLink`` (below) the
display / JBD responder of the TTL port.

Timing is that of the wire, in the simulation's virtual time: bytes from the
client are released to the firmware one character time apart
(``bits_per_char`` at the configured baud rate) and the reply goes back to
the pty at the same rate.  The service is polled the way the board's main
loop polls it (firmware/app.py): every 1 ms of virtual time, and also at
the moment a byte arrives, because the board's loop idles in
``select.poll`` on the UART and wakes on input.  Its clock (``ticks_us``)
has the link's sub-millisecond time, so the silence it measures after the
last byte is the wire's, not rounded to the next ms.

A link left behind by a killed sim (a symlink to a pty that no longer
exists) is replaced; a symlink to a live pty of another running sim is
replaced too (the newest sim owns the name); anything that is not a
symlink is never deleted (``FileExistsError``).
"""
import collections
import errno
import os
import tty

import tools  # noqa: F401  (firmware on sys.path)
from bms.ticks import TICKS_MAX


class LinkClock:
    """The service's clock: the link's time in ms, and in us (``ticks_us``)
    with the sub-millisecond time at which a byte woke the service."""

    def __init__(self, t):
        self.t = t
        self.us = t * 1000

    def ticks_ms(self):
        return self.t & TICKS_MAX

    def ticks_us(self):
        return self.us & TICKS_MAX


class SimPort:
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


def replace_link(symlink, target):
    """Point ``symlink`` at ``target``; a stale link is replaced, a real file refused."""
    if os.path.lexists(symlink):
        if not os.path.islink(symlink):
            raise FileExistsError("%s exists and is not a symlink: not replacing it" % symlink)
        os.unlink(symlink)
    tmp = "%s.%d.tmp" % (symlink, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, symlink)  # atomic: a client never sees the name missing


class HostPty:
    """A raw pty for a host client (``path``), linked at ``symlink`` if given;
    shared by the simulator's links and the emulated board's ports."""

    def __init__(self, symlink=None):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline before a client opens it
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.symlink = symlink
        if symlink:
            try:
                replace_link(symlink, self.path)
            except OSError:
                os.close(self.master)
                os.close(self._slave)
                raise

    def close(self):
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.symlink:
            try:
                # Only our own link: a newer run may have taken the name over.
                if os.path.islink(self.symlink) and os.readlink(self.symlink) == self.path:
                    os.unlink(self.symlink)
            except OSError:
                pass


class PtyLink(HostPty):
    bits_per_char = 10      # 8N1

    def __init__(self, sim, symlink=None, baud=9600, attach=True):
        self.sim = sim
        self.baud = baud
        HostPty.__init__(self, symlink)
        self.t = sim.clock.ticks_ms()
        self.clock = LinkClock(self.t)
        self.port = SimPort(self)
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

    def service(self):
        """Poll the firmware service of this port (one call per virtual ms)."""
        raise NotImplementedError

    @property
    def char_ms(self):
        return self.bits_per_char * 1000.0 / self.baud

    @property
    def where(self):
        return self.path + (" -> " + self.symlink if self.symlink else "")

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
                self.service()
                self._vt = vt
            clk.t = self.t
            clk.us = self.t * 1000
            while q and q[0][0] <= self._vt:
                due, b = q.popleft()
                port_rx.append(b)
                if not q:
                    self._last_rx_due = due
            self.service()
            out = bytearray()
            tq = self._tx_q
            while tq and tq[0][0] <= self._vt:
                out.append(tq.popleft()[1])
            self._write_pty(bytes(out))


TTL_PROTOCOLS = ("display", "jbd")


class TtlLink(PtyLink):
    """The TTL / RS485-1 (display) port: 9600 8N1, the display protocol, or JBD read mode.

    ``protocol="jbd"`` answers JBD/LLT read requests (0x03 basic info, 0x04
    cells, 0x05 hardware version) as well as display frames (the firmware
    tells them apart by the first byte); ``"display"`` ignores JBD requests.
    """

    def __init__(self, sim, symlink=None, protocol="jbd", baud=9600, attach=True):
        from comms.display import DisplayPort
        if protocol not in TTL_PROTOCOLS:
            raise ValueError("TTL protocol %r: one of %s" % (protocol, ", ".join(TTL_PROTOCOLS)))
        super().__init__(sim, symlink=symlink, baud=baud, attach=attach)
        self.protocol = protocol
        self.display = DisplayPort(self.port, sim.bms, self.clock, jbd=(protocol == "jbd"))

    def service(self):
        self.display.poll()
