"""The Modbus modules block against a running CanMaster (MicroPython-compatible).

Values are checked against the rig's own layout (3 modules x 16 cells, the
AFE temperatures it was given), never against the register code's tables;
reads run with the heap locked.
"""
import micropython

from bms.params import P_MODULE_CELLS
from can_helpers import Rig
from comms import can_guard as G
from comms import can_ids as C
from comms import can_master as CM
from comms import registers as R
from comms.regs import codes as RX
from comms.regs import modules as RMOD


class _Log:
    capacity = 8


class _Board:
    def __init__(self, master):
        self.master = master


class _Bms:
    """Just what RegisterMap needs to serve the modules block."""

    def __init__(self, board, clock):
        self.board = board
        self.clock = clock
        self.log = _Log()
        self.params = {P_MODULE_CELLS: 16}


def _read(regs, addr, count):
    out = bytearray(2 * count)
    regs.read(addr, count, out, 0)      # the block's module is imported on first use
    micropython.heap_lock()
    try:
        code = regs.read(addr, count, out, 0)
    finally:
        micropython.heap_unlock()
    assert code == RX.EX_NONE
    vals = []
    for i in range(count):
        v = (out[2 * i] << 8) | out[2 * i + 1]
        vals.append(v)
    return vals


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _module(regs, k):
    return _read(regs, 0x0600 + 16 + 16 * (k - 1), 16)


def test_names_mirror_the_can_constants():
    for i, name in ((CM.MS_ABSENT, "absent"), (CM.MS_OK, "ok"), (CM.MS_LOST, "lost"),
                    (CM.MS_BAD, "bad")):
        assert RMOD.MOD_STATE_NAMES[i] == name
        assert CM.MS_NAMES[i] == name
    for bit, name in ((CM.W_COUNT, "cell_count"), (CM.W_AFE, "afe"), (CM.W_ECHO, "echo"),
                      (CM.W_FRAMES, "frames"), (CM.W_CONFIG, "config"),
                      (CM.W_DUP, "two_modules")):
        assert 1 << RMOD.MOD_WHY_BITS.index(name) == bit
    for bit, name in ((C.LF_OV, "ov"), (C.LF_UV, "uv"), (C.LF_OT, "ot"),
                      (C.LF_TSENSOR, "tsensor"), (C.LF_AFE, "afe"),
                      (C.LF_MASTER_LOST, "master_lost"), (C.LF_DEFAULTS, "defaults")):
        assert 1 << RMOD.MOD_FAULT_BITS.index(name) == bit
    for v, name in ((C.ST_BOOT, "boot"), (C.ST_RUN, "run"), (C.ST_SLEEP, "sleep"),
                    (C.ST_FAULT, "fault")):
        assert RMOD.SLAVE_STATE_NAMES[v] == name
    for v, name in ((G.STATE_ERROR_ACTIVE, "error_active"), (G.STATE_ERROR_WARNING,
                    "error_warning"), (G.STATE_ERROR_PASSIVE, "error_passive"),
                    (G.STATE_BUS_OFF, "bus_off")):
        assert RMOD.CAN_STATE_NAMES[v] == name
    assert (RMOD.MOD_TEMP_ABSENT, RMOD.MOD_TEMP_OPEN, RMOD.MOD_TEMP_SHORT) == (
        C.TEMP_ABSENT, C.TEMP_OPEN, C.TEMP_SHORT)
    assert RMOD.MOD_MAX == C.MAX_MODULES and RMOD.MOD_TEMPS == C.MAX_MODULE_TEMPS
    assert RMOD.SIZE == RMOD.MOD_HEAD_SIZE + RMOD.MOD_STRIDE * RMOD.MOD_MAX


def test_modules_block_reports_layout_state_and_temps_without_allocating():
    r = Rig(n=3, cells=16)
    r.afes[1].t = [215, 32767, 300]        # module 2: sensor 2 open
    r.run(1500)
    assert r.states() == [CM.MS_OK] * 3
    regs = R.RegisterMap(_Bms(_Board(r.master), r.clock))
    head = _read(regs, 0x0600, 16)
    assert head[0] == 3          # modules
    assert head[1] == 16         # cells per module
    assert head[2] == 48         # total cells
    assert head[3] == 3          # modules ok
    assert head[4] == 0          # no comm fault
    assert head[6] == 0          # error active
    assert head[7] == 0          # no bus-off
    assert (head[9] << 16) | head[10] > 0   # frames received
    assert head[14] == 2500      # the rig's timeout
    for k in (1, 2, 3):
        m = _module(regs, k)
        assert m[0] == 1, m      # ok
        assert m[1] == 0         # no reason
        assert m[2] == 1 + 16 * (k - 1)
        assert m[3] == 16
        assert m[4] <= (C.SWEEP_MS + 17 * C.SLOT_MS) // 100   # one sweep old at most
        assert m[5] == 0
        assert m[9] == 3         # three sensors
    m2 = _module(regs, 2)
    assert [_s16(v) for v in m2[10:14]] == [215, 32767, 300, -32768]
    assert m2[6] & 0x08          # the slave flags its open NTC
    # Beyond the module count everything reads 0.
    assert _module(regs, 4) == [0] * 16
    assert _read(regs, 0x0600 + 16 + 16 * 15, 16) == [0] * 16


def test_silent_module_reads_lost_with_growing_age():
    r = Rig(n=3, cells=16)
    r.run(1500)
    regs = R.RegisterMap(_Bms(_Board(r.master), r.clock))
    r.alive[2] = False
    r.snodes[2].plugged = False
    t = r.run_until(lambda: r.master.mod_state[2] == CM.MS_LOST, 4000)
    assert 0 < t <= 2500 + 250 + 20
    m = _module(regs, 3)
    assert m[0] == 2             # lost
    assert m[5] == 1             # lost once
    # Its last complete sweep ended about one time-out (2.5 s) ago.
    assert 2300 <= m[4] * 100 <= 2900, m[4]
    head = _read(regs, 0x0600, 16)
    assert head[3] == 2 and head[4] == 1
    r.run(10000)
    assert _module(regs, 3)[4] >= 120


def test_board_without_modules_reads_count_zero():
    from bms.ticks import VirtualClock
    regs = R.RegisterMap(_Bms(object(), VirtualClock(0)))
    assert _read(regs, 0x0600, RMOD.SIZE // 2) == [0] * (RMOD.SIZE // 2)
    assert _read(regs, 0x0600 + RMOD.SIZE // 2, RMOD.SIZE // 2) == [0] * (RMOD.SIZE // 2)
    # The block is read only and bounded like every other block.
    out = bytearray(4)
    assert regs.read(0x0600 + RMOD.SIZE - 1, 2, out, 0) == RX.EX_ADDRESS
    assert regs.write(0x0600, 1, b"\x00\x01", 0) == RX.EX_ADDRESS
