"""A simulated CAN bus in virtual time, and a controller node for it.

``VirtualCanBus`` carries frames between attached nodes the way a real bus
does: at most one frame on the wire at a time, the lowest identifier wins
arbitration among the frames waiting when the bus goes idle, and each frame
occupies the wire for its exact bit count at the bit rate (SOF to the end
of the interframe space, with the stuff bits of that very frame, computed
from its bits and its CRC-15).  Frames reach every other plugged node at
the end of their transmission.  Fault injection: corrupt the next N frames
(error frames, retransmission, TEC/REC counting up to bus-off), unplug a
node (nobody hears it, its frames wait unacknowledged), plug it back.

The node API is small so that other models (the byte-level MCP2515
emulator of branch ``drivers``) attach too; it is the same contract as the
drivers branch's minimal bus, which this module supersedes:

    bus.attach(node)                       node.deliver(can_id, data, ext)
    bus.transmit(node, can_id, data, ext)  one attempt of one frame
  optional node hooks:
    node.can_ack() -> bool   does this node ACK (default True)
    node.tx_done(acked)      the attempt ended (ACKed or not); the node
                             retransmits by calling transmit again
    node.tx_error()          the attempt was destroyed by an error frame
    node.rx_error()          a receiver saw an error frame
    node.bus_tick()          one frame time passed (bus-off recovery timing)
    node.no_ack()            the node was unplugged with frames waiting

Two ways to run it: ``advance_to(t_us)`` in virtual time (frames take
their bit time, arbitration happens when the bus goes idle), or ``step()``
which puts every waiting frame on the wire at once (untimed unit tests).

``SimCanNode`` is a controller with the firmware's CAN interface (modelled
on MicroPython's machine.CAN): ``send``, ``recv(buf)`` + ``rx_id``/``rx_ext``,
``set_filters``, ``state``, ``restart``, counters ``tec``, ``rec``,
``rx_overflow``.  By default it has the MCP2515's three TX and two RX
buffers, so a host loop that polls too slowly loses frames exactly like
the chip.
"""

STATE_ERROR_ACTIVE = 0
STATE_ERROR_WARNING = 1
STATE_ERROR_PASSIVE = 2
STATE_BUS_OFF = 3

ERROR_FRAME_BITS = 20  # error flag + delimiter + intermission, roughly


def _crc15(bits):
    crc = 0
    for b in bits:
        nxt = b ^ ((crc >> 14) & 1)
        crc = (crc << 1) & 0x7FFF
        if nxt:
            crc ^= 0x4599
    return crc


def _bits(value, n):
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


def frame_bits(can_id, data, ext=False):
    """Bits a data frame occupies on the wire, stuff bits and 3-bit IFS included."""
    dlc = len(data)
    if ext:
        head = ([0] + _bits(can_id >> 18, 11) + [1, 1] + _bits(can_id & 0x3FFFF, 18)
                + [0, 0, 0] + _bits(dlc, 4))
    else:
        head = [0] + _bits(can_id, 11) + [0, 0, 0] + _bits(dlc, 4)
    for byte in data:
        head += _bits(byte, 8)
    head += _bits(_crc15(head), 15)
    stuffed = 0
    run = 0
    last = None
    for b in head:
        if b == last:
            run += 1
        else:
            last = b
            run = 1
        if run == 5:
            stuffed += 1
            last = 1 - b
            run = 1
    # CRC delimiter, ACK slot, ACK delimiter, EOF (7), intermission (3).
    return len(head) + stuffed + 13


class _Pending:
    def __init__(self, node, seq, can_id, data, ext, ts):
        self.node = node
        self.seq = seq
        self.can_id = can_id
        self.data = data
        self.ext = ext
        self.ts = ts
        # Arbitration compares the 11 base bits first; a standard frame beats
        # an extended one with the same base id (RTR/SRR and IDE recessive).
        if ext:
            self.key = ((can_id >> 18) << 20) | (1 << 19) | (can_id & 0x3FFFF)
        else:
            self.key = can_id << 20


def _arb(p):
    return (p.key, p.seq)


class VirtualCanBus:
    def __init__(self, bitrate=250000, max_frames_per_step=64):
        self.bitrate = bitrate
        self.max_frames = max_frames_per_step
        self.nodes = []
        self._plugged = {}
        self.now_us = 0.0
        self._pending = []
        self._seq = 0
        self._inflight = None   # (_Pending, end time)
        self._busy_until = 0.0
        self.sniffers = []      # fn(t_us, can_id, data, ext) for every good frame
        self.log = []           # (can_id, ext, data, sender) of delivered frames (step() mode)
        self.keep_log = False   # advance_to() logs only when asked (long runs)
        self.frames = 0
        self.error_frames = 0
        self.busy_us = 0.0
        self.errors = 0         # destroy the next N frames ...
        self._error_node = None  # ... of this node only, if set

    # ---- topology -------------------------------------------------------
    def attach(self, node):
        if node not in self.nodes:
            self.nodes.append(node)
        self._plugged[id(node)] = True
        try:
            node.bus = self
        except AttributeError:
            pass
        return node

    def detach(self, node):
        if node in self.nodes:
            self.nodes.remove(node)
        self._plugged.pop(id(node), None)
        self.cancel(node)

    def unplug(self, node):
        """Disconnect a node: it hears nothing and nobody acknowledges it."""
        self._plugged[id(node)] = False
        if self._inflight is not None and self._inflight[0].node is node:
            # Pulled mid-frame: the frame is lost, the sender will retry.
            self._pending.append(self._inflight[0])
            self._inflight = None
        self._no_ack(node)

    def plug(self, node):
        self._plugged[id(node)] = True

    def plugged(self, node):
        return self._plugged.get(id(node), False)

    # ---- traffic --------------------------------------------------------
    def transmit(self, node, can_id, data, ext=False):
        """One transmission attempt of a frame from ``node``, from now on."""
        self._seq += 1
        self._pending.append(_Pending(node, self._seq, can_id, bytes(data), bool(ext),
                                      self.now_us))
        if not self._plugged.get(id(node), False):
            self._no_ack(node)
        return True

    def pending(self):
        return len(self._pending) + (1 if self._inflight is not None else 0)

    def cancel(self, node):
        """Abort every attempt ``node`` still has waiting (restart / bus-off)."""
        self._pending = [p for p in self._pending if p.node is not node]
        if self._inflight is not None and self._inflight[0].node is node:
            self._inflight = None

    def withdraw(self, node):
        """Take back ``node``'s attempts not yet on the wire; returns how many."""
        n = len(self._pending)
        self._pending = [p for p in self._pending if p.node is not node]
        return n - len(self._pending)

    def inject_errors(self, n, node=None):
        """The next ``n`` frames (of ``node`` only, if given) end in an error frame."""
        self.errors = n
        self._error_node = node

    def _no_ack(self, node):
        # ISO 11898-1: an unacknowledged transmitter counts up to error
        # passive and stays there; the node model decides how (no_ack hook).
        hook = getattr(node, "no_ack", None)
        if hook is not None and any(p.node is node for p in self._pending):
            hook()

    def frame_time_us(self, can_id, data, ext=False):
        return frame_bits(can_id, data, ext) * 1e6 / self.bitrate

    def _candidates(self):
        pl = self._plugged
        return [p for p in self._pending if pl.get(id(p.node), False)]

    def advance_to(self, t_us):
        """Run the bus up to virtual time ``t_us`` (microseconds)."""
        while True:
            if self._inflight is not None:
                p, end = self._inflight
                if end > t_us:
                    break
                self._inflight = None
                self.now_us = max(self.now_us, end)
                self._complete(p, end)
                continue
            cands = self._candidates()
            if not cands:
                break
            t0 = max(self._busy_until, min(p.ts for p in cands))
            if t0 > t_us:
                break
            win = min([p for p in cands if p.ts <= t0], key=_arb)
            self._pending.remove(win)
            dur = self.frame_time_us(win.can_id, win.data, win.ext)
            self._inflight = (win, t0 + dur)
            self._busy_until = t0 + dur
        if t_us > self.now_us:
            self.now_us = t_us

    def step(self):
        """Put waiting frames on the wire at once, in arbitration order (bounded)."""
        sent = 0
        log = self.keep_log
        self.keep_log = True
        try:
            while sent < self.max_frames:
                cands = self._candidates()
                if not cands:
                    break
                win = min(cands, key=_arb)
                self._pending.remove(win)
                dur = self.frame_time_us(win.can_id, win.data, win.ext)
                self.now_us = max(self.now_us, self._busy_until) + dur
                self._busy_until = self.now_us
                sent += 1
                self._complete(win, self.now_us, tick=False)
        finally:
            self.keep_log = log
        for n in list(self.nodes):
            t = getattr(n, "bus_tick", None)
            if t is not None:
                t()
        return sent

    def _others(self, p):
        pl = self._plugged
        return [n for n in self.nodes if n is not p.node and pl.get(id(n), False)]

    def _complete(self, p, end, tick=True):
        others = self._others(p)
        if self.errors > 0 and (self._error_node is None or self._error_node is p.node):
            self.errors -= 1
            self.error_frames += 1
            self._busy_until = end + ERROR_FRAME_BITS * 1e6 / self.bitrate
            for n in others:
                h = getattr(n, "rx_error", None)
                if h is not None:
                    h()
            h = getattr(p.node, "tx_error", None)
            if h is not None:
                h()
        else:
            acked = False
            for n in others:
                a = getattr(n, "can_ack", None)
                if a is None or a():
                    acked = True
            if acked:
                self.frames += 1
                self.busy_us += self.frame_time_us(p.can_id, p.data, p.ext)
                if self.keep_log:
                    self.log.append((p.can_id, p.ext, p.data, p.node))
                for n in others:
                    n.deliver(p.can_id, p.data, p.ext)
                for s in self.sniffers:
                    s(end, p.can_id, p.data, p.ext)
            h = getattr(p.node, "tx_done", None)
            if h is not None:
                h(acked)
        if tick:
            for n in self.nodes:
                t = getattr(n, "bus_tick", None)
                if t is not None:
                    t()


class SimCanNode:
    """A CAN controller on a VirtualCanBus with the firmware's interface.

    ``tx_buffers`` frames can wait; the lowest id goes first and only one
    is on the bus at a time, retransmitted until ACKed (like the MCP2515).
    """

    def __init__(self, name="", rx_depth=2, tx_buffers=3):
        self.name = name
        self.bus = None
        self.rx_depth = rx_depth
        self.tx_buffers = tx_buffers
        self._rx = []
        self._txq = []
        self._inflight = None
        self.rx_id = 0
        self.rx_ext = False
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        self.tx_count = 0
        self.rx_count = 0
        self._filters = None
        self._bus_off = False

    # ---- controller interface (firmware side) --------------------------
    def send(self, can_id, data, ext=False):
        if len(data) > 8:
            raise ValueError("CAN data longer than 8 bytes")
        if can_id < 0 or can_id > (0x1FFFFFFF if ext else 0x7FF):
            raise ValueError("CAN id out of range")
        if self._bus_off or self.bus is None or len(self._txq) >= self.tx_buffers:
            return False
        f = (can_id, bytes(data), bool(ext))
        self._txq.append(f)
        cur = self._inflight
        # Like the chip, the highest-priority buffer competes at the next SOF:
        # a new lower id replaces an attempt that has not reached the wire.
        if cur is not None and can_id < cur[0] and self.bus.withdraw(self):
            self._inflight = None
        self._kick()
        return True

    def recv(self, buf):
        if not self._rx:
            return -1
        can_id, data, ext = self._rx.pop(0)
        n = len(data)
        buf[0:n] = data
        self.rx_id = can_id
        self.rx_ext = ext
        return n

    def any(self):
        return len(self._rx)

    def set_filters(self, filters):
        """``[(id, mask, ext), ...]``; empty or None accepts everything."""
        self._filters = list(filters) if filters else None

    def state(self):
        if self._bus_off:
            return STATE_BUS_OFF
        if self.tec >= 128 or self.rec >= 128:
            return STATE_ERROR_PASSIVE
        if self.tec >= 96 or self.rec >= 96:
            return STATE_ERROR_WARNING
        return STATE_ERROR_ACTIVE

    def restart(self):
        if self.bus is not None:
            self.bus.cancel(self)
        self._txq = []
        self._inflight = None
        self._bus_off = False
        self.tec = 0
        self.rec = 0

    # ---- bus side --------------------------------------------------------
    def _kick(self):
        if self._inflight is not None or not self._txq or self._bus_off or self.bus is None:
            return
        best = self._txq[0]
        for f in self._txq:
            if f[0] < best[0]:
                best = f
        self._inflight = best
        self.bus.transmit(self, best[0], best[1], best[2])

    def _accept(self, can_id, ext):
        f = self._filters
        if f is None:
            return True
        for fid, mask, fext in f:
            if bool(fext) == bool(ext) and (can_id & mask) == (fid & mask):
                return True
        return False

    def deliver(self, can_id, data, ext):
        if self._bus_off:
            return
        if self.rec > 0:
            self.rec -= 1
        if not self._accept(can_id, ext):
            return
        if len(self._rx) >= self.rx_depth:
            self.rx_overflow += 1
            return
        self.rx_count += 1
        self._rx.append((can_id, bytes(data), ext))

    def can_ack(self):
        return not self._bus_off

    def tx_done(self, acked):
        f = self._inflight
        self._inflight = None
        if acked:
            if f in self._txq:
                self._txq.remove(f)
            self.tx_count += 1
            if self.tec > 0:
                self.tec -= 1
        elif self.tec < 128:
            self.tec += 8
        self._kick()

    def tx_error(self):
        self._inflight = None
        self.tec += 8
        if self.tec >= 256:
            self._bus_off = True
            self._txq = []
            if self.bus is not None:
                self.bus.cancel(self)
            return
        self._kick()

    def rx_error(self):
        if not self._bus_off and self.rec < 135:
            self.rec += 1

    def no_ack(self):
        if self.tec < 128:
            self.tec = 128


class BusNode(SimCanNode):
    """A deep-buffered peer (ACKs, records what it hears in ``inbox``)."""

    def __init__(self, bus=None, rx_depth=64):
        SimCanNode.__init__(self, "peer", rx_depth=rx_depth, tx_buffers=64)
        if bus is not None:
            bus.attach(self)

    @property
    def inbox(self):
        return self._rx
