# The CAN master's acceptance filters on the real MCP2515 driver + emulator:
# more masks than the chip has must widen, never reject the master's frames.
from comms import can_ids as C
from comms.can_master import set_filters


class TwoMaskCtrl:
    """Stands in for a controller that, like the MCP2515, has two masks."""

    def __init__(self):
        self.applied = "unset"

    def set_filters(self, filters):
        if filters is not None:
            masks = []
            for f in filters:
                if f[1] not in masks:
                    masks.append(f[1])
            if len(masks) > 2 or len(filters) > 6:
                raise ValueError("filters: at most 2 distinct masks, 6 filters")
        self.applied = filters


def _accepts(filters, can_id):
    if filters is None:
        return True
    for fid, mask, _ext in filters:
        if can_id & mask == fid & mask:
            return True
    return False


def test_master_filters_widen_to_a_superset():
    want = [(C.ID_STATUS, 0x700, False), (C.ID_CELLS, 0x780, False),
            (C.ID_TEMPS, 0x7F0, False), (C.ID_VERSION, 0x7F0, False),
            (C.ID_ANNOUNCE, 0x7FF, False)]
    ctrl = TwoMaskCtrl()
    got = set_filters(ctrl, want)
    assert ctrl.applied == got
    # Every id the exact filters accept is still accepted.
    for can_id in range(0x800):
        if _accepts(want, can_id):
            assert _accepts(got, can_id), hex(can_id)


def test_mcp2515_takes_widened_filters_and_still_receives_master_frames():
    import drv_helpers  # noqa: F401  (puts tools/sim on the path)
    from canbus import BusNode, VirtualCanBus
    from drivers.mcp2515 import MCP2515
    from emu_mcp2515 import EmuMCP2515
    from vclock import UsClock
    bus = VirtualCanBus()
    clk = UsClock()
    emu = EmuMCP2515(bus, clock=clk)
    drv = MCP2515(emu.spi, emu.cs, wait_us=clk.sleep_us)
    drv.init()
    want = [(C.ID_STATUS, 0x700, False), (C.ID_CELLS, 0x780, False),
            (C.ID_TEMPS, 0x7F0, False), (C.ID_VERSION, 0x7F0, False),
            (C.ID_ANNOUNCE, 0x7FF, False)]
    try:
        drv.set_filters(want)
        exact = True
    except ValueError:
        exact = False
    assert not exact  # the chip really cannot take these five as asked
    set_filters(drv, want)
    peer = BusNode(bus)
    buf = bytearray(8)
    for can_id in (C.ID_STATUS + 3, C.ID_CELLS + 5, C.ID_TEMPS + 1, C.ID_ANNOUNCE):
        peer.send(can_id, b"\x01\x02")
        bus.step()
        got = -1
        for _ in range(4):
            got = drv.recv(buf)
            if got >= 0:
                break
        assert got == 2, hex(can_id)
        assert drv.rx_id == can_id
