"""Shared by the inverter/charger tests: an in-test CAN loopback (MicroPython-compatible).

``LoopCan`` implements the brief's CAN controller interface (send / recv(buf)
with rx_id, rx_ext / set_filters / state / restart / tec, rec, rx_overflow)
on a list; ``Peer`` is the other end (the inverter) of the same wire.
"""
STATE_ERROR_ACTIVE = 0
STATE_BUS_OFF = 3


class LoopCan:
    def __init__(self, tx_slots=3):
        self.tx_slots = tx_slots  # frames the controller can hold before the peer drains them
        self.wire = []            # (id, ext, bytes) sent, oldest first
        self.inbox = []           # frames to deliver to recv()
        self.rx_id = 0
        self.rx_ext = False
        self.filters = None
        self.bus_state = STATE_ERROR_ACTIVE
        self.restarts = 0
        self.tec = 0
        self.rec = 0
        self.rx_overflow = 0
        self.pending = 0

    # ---- controller interface ---------------------------------------
    def send(self, can_id, data, ext=False):
        if self.bus_state == STATE_BUS_OFF:
            return False
        if self.pending >= self.tx_slots:
            return False
        self.pending += 1
        self.wire.append((can_id, ext, bytes(data)))
        return True

    def recv(self, buf):
        if not self.inbox:
            return -1
        can_id, ext, data = self.inbox.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        self.rx_id = can_id
        self.rx_ext = ext
        return len(data)

    def set_filters(self, filters):
        self.filters = filters

    def state(self):
        return self.bus_state

    def restart(self):
        self.restarts += 1
        self.bus_state = STATE_ERROR_ACTIVE

    # ---- the peer's side ----------------------------------------------
    def drain(self):
        """The bus transmitted everything queued: frees the TX slots."""
        self.pending = 0

    def inject(self, can_id, data, ext=False):
        self.inbox.append((can_id, ext, bytes(data)))

    def take(self):
        out = self.wire
        self.wire = []
        self.pending = 0
        return out

    def last(self, can_id):
        for f in reversed(self.wire):
            if f[0] == can_id:
                return f[2]
        return None


def u16(b, pos):
    return b[pos] | (b[pos + 1] << 8)


def s16(b, pos):
    v = u16(b, pos)
    return v - 0x10000 if v & 0x8000 else v
