"""python-can access to a VirtualCanBus: sniff and inject with real tools.

    from tools.sim.pycan_bridge import SimBus
    pc = SimBus(sim.bus)                 # a can.BusABC
    pc.send(can.Message(arbitration_id=0x012, data=[0, 1], is_extended_id=False))
    sim.run(1)
    for msg in iter(lambda: pc.recv(timeout=0), None): ...

The bridge is one more node on the simulated bus (deep buffers, so a
python-can reader never loses frames). Time on the virtual bus only moves
when the simulation runs, so ``recv`` never waits: call it with
``timeout=0`` (or any timeout; an empty queue returns None at once).
Message timestamps are virtual bus time in seconds.  Works with python-can
helpers that read from a bus (``can.Printer``, ``can.BLFWriter``,
``can.Logger`` listeners via ``can.Notifier``).
"""
import can

from tools.sim.canbus import STATE_BUS_OFF, SimCanNode


class SimBus(can.BusABC):
    def __init__(self, vbus, channel="virtual-can", receive_own_messages=False, **kwargs):
        self.vbus = vbus
        self.node = SimCanNode("python-can", rx_depth=100000, tx_buffers=1000)
        vbus.attach(self.node)
        self.channel_info = "VirtualCanBus %d bit/s" % vbus.bitrate
        self._own = receive_own_messages
        self._buf = bytearray(8)
        super().__init__(channel=channel, **kwargs)

    def send(self, msg, timeout=None):
        if self.node.state() == STATE_BUS_OFF:
            raise can.CanOperationError("bus-off")
        if not self.node.send(msg.arbitration_id, bytes(msg.data), msg.is_extended_id):
            raise can.CanOperationError("no TX buffer free")

    def _recv_internal(self, timeout):
        n = self.node.recv(self._buf)
        if n < 0:
            return None, False
        msg = can.Message(timestamp=self.vbus.now_us / 1e6, arbitration_id=self.node.rx_id,
                          is_extended_id=self.node.rx_ext, data=bytes(self._buf[:n]),
                          channel=self.channel_info, is_rx=True)
        return msg, False

    def shutdown(self):
        if self.node in self.vbus.nodes:
            self.vbus.unplug(self.node)
        super().shutdown()
