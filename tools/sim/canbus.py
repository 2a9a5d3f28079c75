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

The node API the bus needs is small so that other models (the byte-level
MCP2515 emulator) can attach too:

    bus.attach(node)                      node.deliver(can_id, data, ext)
    bus.transmit(node, can_id, data, ext) optional node.tx_done(can_id, ok)
                                          optional node.on_error(tx)

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
    __slots__ = ("node", "seq", "can_id", "data", "ext", "ts", "key")

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


class VirtualCanBus:
    def __init__(self, bitrate=250000):
        self.bitrate = bitrate
        self.nodes = []
        self._plugged = {}
        self.now_us = 0.0
        self._pending = []
        self._seq = 0
        self._inflight = None   # (_Pending, end time)
        self._busy_until = 0.0
        self.sniffers = []      # fn(t_us, can_id, data, ext) for every good frame
        self.frames = 0
        self.error_frames = 0
        self.busy_us = 0.0
        self._errors_left = 0
        self._error_node = None

    # ---- topology -------------------------------------------------------
    def attach(self, node):
        self.nodes.append(node)
        self._plugged[id(node)] = True
        try:
            node.bus = self
        except AttributeError:
            pass
        return node

    def unplug(self, node):
        """Disconnect a node: it hears nothing and nobody acknowledges it."""
        self._plugged[id(node)] = False
        if self._inflight is not None and self._inflight[0].node is node:
            # Pulled mid-frame: the frame is destroyed, the sender retries.
            self._inflight = None
        self._no_ack(node)

    def plug(self, node):
        self._plugged[id(node)] = True

    def plugged(self, node):
        return self._plugged.get(id(node), False)

    # ---- traffic --------------------------------------------------------
    def transmit(self, node, can_id, data, ext=False):
        """Queue a frame from ``node`` for transmission from now on."""
        self._seq += 1
        self._pending.append(_Pending(node, self._seq, can_id, bytes(data), ext, self.now_us))
        if not self._plugged.get(id(node), False):
            self._no_ack(node)
        return True

    def cancel(self, node):
        """Abort every frame ``node`` still has waiting (restart / bus-off)."""
        self._pending = [p for p in self._pending if p.node is not node]
        if self._inflight is not None and self._inflight[0].node is node:
            self._inflight = None

    def inject_errors(self, n, node=None):
        """The next ``n`` frames (of ``node`` only, if given) end in an error frame."""
        self._errors_left = n
        self._error_node = node

    def _no_ack(self, node):
        # ISO 11898-1: an unacknowledged transmitter counts up to error
        # passive and stays there (ACK errors do not take it further).
        err = getattr(node, "on_error", None)
        if err is None or not any(p.node is node for p in self._pending):
            return
        while getattr(node, "tec", 128) < 128:
            err(True)

    def frame_time_us(self, can_id, data, ext=False):
        return frame_bits(can_id, data, ext) * 1e6 / self.bitrate

    def advance_to(self, t_us):
        """Run the bus up to virtual time ``t_us`` (microseconds)."""
        while True:
            if self._inflight is not None:
                p, end = self._inflight
                if end > t_us:
                    break
                self._inflight = None
                self._complete(p, end)
                continue
            cands = [p for p in self._pending if self._plugged.get(id(p.node), False)]
            if not cands:
                break
            t0 = max(self._busy_until, min(p.ts for p in cands))
            if t0 > t_us:
                break
            win = min((p for p in cands if p.ts <= t0), key=lambda p: (p.key, p.seq))
            dur = self.frame_time_us(win.can_id, win.data, win.ext)
            self._inflight = (win, t0 + dur)
            self._busy_until = t0 + dur
        self.now_us = max(self.now_us, t_us)

    def _complete(self, p, end):
        if self._errors_left and (self._error_node is None or self._error_node is p.node):
            self._errors_left -= 1
            self.error_frames += 1
            self._busy_until = end + ERROR_FRAME_BITS * 1e6 / self.bitrate
            err = getattr(p.node, "on_error", None)
            if err is not None:
                err(True)
            for n in self.nodes:
                if n is not p.node and self._plugged.get(id(n), False):
                    e = getattr(n, "on_error", None)
                    if e is not None:
                        e(False)
            return  # the frame stays pending: retransmitted (unless the node went bus-off)
        self._pending.remove(p)
        self.frames += 1
        self.busy_us += self.frame_time_us(p.can_id, p.data, p.ext)
        done = getattr(p.node, "tx_done", None)
        if done is not None:
            done(p.can_id, True)
        for n in self.nodes:
            if n is not p.node and self._plugged.get(id(n), False):
                n.deliver(p.can_id, p.data, p.ext)
        for s in self.sniffers:
            s(end, p.can_id, p.data, p.ext)


class SimCanNode:
    """A CAN controller on a VirtualCanBus with the firmware's interface."""

    def __init__(self, name="", rx_depth=2, tx_buffers=3):
        self.name = name
        self.bus = None
        self.rx_depth = rx_depth
        self.tx_buffers = tx_buffers
        self._rx = []
        self.rx_id = 0
        self.rx_ext = False
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        self.tx_count = 0
        self.rx_count = 0
        self._filters = None
        self._inflight = 0
        self._bus_off = False

    # ---- controller interface (firmware side) --------------------------
    def send(self, can_id, data, ext=False):
        if len(data) > 8:
            raise ValueError("CAN data longer than 8 bytes")
        if can_id < 0 or can_id > (0x1FFFFFFF if ext else 0x7FF):
            raise ValueError("CAN id out of range")
        if self._bus_off or self.bus is None or self._inflight >= self.tx_buffers:
            return False
        self._inflight += 1
        self.bus.transmit(self, can_id, data, ext)
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
        self._inflight = 0
        self._bus_off = False
        self.tec = 0
        self.rec = 0

    # ---- bus side --------------------------------------------------------
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

    def tx_done(self, can_id, ok):
        if self._inflight > 0:
            self._inflight -= 1
        if ok:
            self.tx_count += 1
            if self.tec > 0:
                self.tec -= 1

    def on_error(self, tx):
        if tx:
            self.tec += 8
            if self.tec >= 256:
                self._bus_off = True
                if self.bus is not None:
                    self.bus.cancel(self)
                self._inflight = 0
        elif self.rec < 135:
            self.rec += 1
