"""A minimal virtual CAN bus for the simulator and tests.

API kept deliberately small so other simulated nodes can join:
    bus.attach(node)                          node joins the bus
    bus.transmit(sender, can_id, data, ext)   a node starts sending a frame
    node.deliver(can_id, data, ext)           the bus hands a frame to a node
Optional node hooks the bus uses when present:
    node.can_ack() -> bool     does this node ACK frames (default True)
    node.tx_done(acked)        the sender's frame went out (acked or not)
    node.tx_error()            the sender's frame was destroyed by an error
    node.rx_error()            a receiver saw an error frame
    node.bus_tick()            one bus step passed (bus-off recovery timing)

Frames queue on ``transmit`` and go out in ``step()``: among all pending
frames the lowest arbitration key wins (11-bit base id first, a standard
frame beats an extended one with the same base id), is delivered to every
other attached node, and the sender learns whether anyone ACKed it.  A node
that offers its next frame from ``tx_done`` competes in the same step, so
senders that keep one frame in flight (like a CAN controller) are ordered
exactly as on a real bus.

Fault injection: ``errors = k`` destroys the next k frames with an error
frame (sender TEC +8, receivers REC +1 via the hooks); ``log`` records
(can_id, ext, bytes, sender) of every delivered frame.
"""


def arbitration_key(can_id, ext):
    if ext:
        return ((can_id >> 18) << 19) | (1 << 18) | (can_id & 0x3FFFF)
    return can_id << 19


class VirtualCanBus:
    def __init__(self, max_frames_per_step=64):
        self.nodes = []
        self.queue = []
        self.log = []
        self.errors = 0
        self.max_frames = max_frames_per_step
        self.frames = 0
        self.error_frames = 0
        self._seq = 0

    def attach(self, node):
        if node not in self.nodes:
            self.nodes.append(node)
        if hasattr(node, "bus"):
            node.bus = self
        return node

    def detach(self, node):
        if node in self.nodes:
            self.nodes.remove(node)
        self.queue = [q for q in self.queue if q[2] is not node]

    def transmit(self, sender, can_id, data, ext=False):
        self._seq += 1
        self.queue.append((arbitration_key(can_id, ext), self._seq, sender, can_id,
                           bytes(data), bool(ext)))

    def pending(self):
        return len(self.queue)

    def step(self):
        """Put pending frames on the wire (bounded); returns how many went out."""
        sent = 0
        while self.queue and sent < self.max_frames:
            self.queue.sort(key=lambda q: (q[0], q[1]))
            _key, _seq, sender, can_id, data, ext = self.queue.pop(0)
            sent += 1
            others = [n for n in self.nodes if n is not sender]
            if self.errors > 0:
                self.errors -= 1
                self.error_frames += 1
                for n in others:
                    if hasattr(n, "rx_error"):
                        n.rx_error()
                if hasattr(sender, "tx_error"):
                    sender.tx_error()
                continue
            acked = False
            for n in others:
                if getattr(n, "can_ack", None) is None or n.can_ack():
                    acked = True
            if acked:
                self.frames += 1
                self.log.append((can_id, ext, data, sender))
                for n in others:
                    n.deliver(can_id, data, ext)
            if hasattr(sender, "tx_done"):
                sender.tx_done(acked)
        for n in self.nodes:
            if hasattr(n, "bus_tick"):
                n.bus_tick()
        return sent


class BusNode:
    """A value-level node with the project's CAN-controller interface
    (send / recv(buf) / rx_id / rx_ext / set_filters / state / restart),
    for tests and simulated peers.  Not allocation-free (host only)."""

    def __init__(self, bus=None, rx_depth=64):
        self.bus = None
        self.inbox = []
        self.rx_depth = rx_depth
        self.filters = []
        self.rx_id = 0
        self.rx_ext = False
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        if bus is not None:
            bus.attach(self)

    def send(self, can_id, data, ext=False):
        if self.bus is None:
            return False
        self.bus.transmit(self, can_id, data, ext)
        return True

    def deliver(self, can_id, data, ext):
        if self.filters:
            ok = False
            for fid, mask, fext in self.filters:
                if bool(fext) == bool(ext) and (can_id & mask) == (fid & mask):
                    ok = True
                    break
            if not ok:
                return
        if len(self.inbox) >= self.rx_depth:
            self.rx_overflow += 1
            return
        self.inbox.append((can_id, bytes(data), ext))

    def recv(self, buf):
        if not self.inbox:
            return -1
        can_id, data, ext = self.inbox.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        self.rx_id = can_id
        self.rx_ext = ext
        return len(data)

    def set_filters(self, filters):
        self.filters = list(filters or [])

    def state(self):
        return 0

    def restart(self):
        self.inbox = []
