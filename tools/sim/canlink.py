"""The simulator's CAN ports on a python-can bus: SocketCAN when there is one.

``open_bus("vcan0")`` opens SocketCAN interface ``vcan0`` if the kernel has
it (``candump vcan0``, ``cantools monitor docs/inverter_pylon.dbc -c vcan0``
then show the frames).  Otherwise it says why and falls back to
python-can's ``virtual`` interface on a channel of the same name, which
other python-can programs in the same process can open (the tests do).

    sudo modprobe vcan                       # the kernel module (not on every kernel)
    sudo ip link add dev vcan0 type vcan
    sudo ip link set up vcan0

``InverterLink`` runs the firmware's Pylontech inverter protocol
(``comms.inverter_can``) on such a bus; ``ModuleBusMirror`` copies every
frame of the simulated internal module bus (``--slaves``) onto one, so the
same tools watch the master <-> module traffic (read-only: the bit-timed
virtual bus stays the bus the modules run on).
"""
import os

import can

import tools  # noqa: F401  (firmware on sys.path)

SYS_NET = "/sys/class/net"


def socketcan_missing(channel):
    """None if ``channel`` is a usable SocketCAN interface, else the reason it is not."""
    if not hasattr(__import__("socket"), "AF_CAN"):
        return "this Python has no AF_CAN sockets"
    if not os.path.isdir(os.path.join(SYS_NET, channel)):
        vcan = os.path.isdir("/sys/module/vcan")
        how = ("create it: sudo ip link add dev %s type vcan && sudo ip link set up %s"
               % (channel, channel)) if vcan else \
            "the kernel has no vcan module loaded (sudo modprobe vcan; not every kernel has it)"
        return "no network interface %s: %s" % (channel, how)
    try:
        with open(os.path.join(SYS_NET, channel, "type")) as f:
            if f.read().strip() != "280":   # ARPHRD_CAN
                return "%s is not a CAN interface" % channel
        with open(os.path.join(SYS_NET, channel, "operstate")) as f:
            state = f.read().strip()
        if state == "down":
            return "%s is down: sudo ip link set up %s" % (channel, channel)
    except OSError as e:
        return "cannot inspect %s: %s" % (channel, e)
    return None


def open_bus(channel, report=print):
    """(bus, description): SocketCAN ``channel`` if possible, else the virtual bus."""
    why = socketcan_missing(channel)
    if why is None:
        try:
            bus = can.Bus(interface="socketcan", channel=channel)
            return bus, "SocketCAN %s" % channel
        except (OSError, can.CanError) as e:
            why = "opening %s failed: %s" % (channel, e)
    report("CAN %s: %s; using python-can's virtual bus, channel %r instead" % (
        channel, why, channel))
    return can.Bus(interface="virtual", channel=channel), "python-can virtual bus %r" % channel


class PyCanController:
    """The firmware's CAN controller interface (``machine.CAN``-like) on a python-can bus."""

    def __init__(self, bus):
        self.bus = bus
        self.rx_id = 0
        self.rx_ext = False
        self.tec = self.rec = self.rx_overflow = 0
        self.errors = 0

    def send(self, can_id, data, ext=False):
        try:
            self.bus.send(can.Message(arbitration_id=can_id, data=bytes(data),
                                      is_extended_id=ext), timeout=0)
        except can.CanError:
            self.errors += 1
            return False   # the firmware resumes the burst at its next poll
        return True

    def recv(self, buf):
        m = self.bus.recv(timeout=0)
        if m is None:
            return -1
        buf[:len(m.data)] = m.data
        self.rx_id = m.arbitration_id
        self.rx_ext = m.is_extended_id
        return m.dlc

    def set_filters(self, filters):
        self.bus.set_filters([{"can_id": i, "can_mask": m, "extended": e}
                              for i, m, e in filters])

    def state(self):
        return 0

    def restart(self):
        pass


class InverterLink:
    """The inverter CAN port of the simulated board on ``channel``."""

    def __init__(self, sim, channel, report=print, attach=True):
        from comms.inverter_can import InverterCan
        self.bus, self.where = open_bus(channel, report)
        self.ctrl = PyCanController(self.bus)
        self.inverter = InverterCan(self.ctrl, sim.bms, sim.clock)
        if attach:
            sim.pollers.append(self.poll)

    def poll(self, sim=None):
        self.inverter.poll()

    def close(self):
        self.bus.shutdown()


class ModuleBusMirror:
    """Every frame of the simulated module bus, copied onto ``channel``."""

    def __init__(self, sim, channel, report=print, attach=True):
        from tools.sim.pycan_bridge import SimBus
        self.bus, self.where = open_bus(channel, report)
        self.tap = SimBus(sim.bus)
        self.copied = 0
        self.dropped = 0
        if attach:
            sim.pollers.append(self.poll)

    def poll(self, sim=None):
        while True:
            m = self.tap.recv(timeout=0)
            if m is None:
                return
            try:
                self.bus.send(can.Message(arbitration_id=m.arbitration_id, data=m.data,
                                          is_extended_id=m.is_extended_id), timeout=0)
                self.copied += 1
            except can.CanError:
                self.dropped += 1

    def close(self):
        self.tap.shutdown()
        self.bus.shutdown()
