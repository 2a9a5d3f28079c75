"""Steady-state master and slave passes allocate nothing (heap locked on MicroPython)."""
import micropython

from bms.measurements import Measurements, ROLE_CELL
from can_helpers import Rig


def _locked(fn):
    micropython.heap_lock()
    try:
        fn()
    finally:
        micropython.heap_unlock()


def test_master_and_slaves_steady_state_do_not_allocate():
    r = Rig(n=3)
    r.run(2500)
    flags = bytearray(48)
    flags[3] = 1
    r.master.set_balance(flags)
    r.run(1100)
    m = Measurements(256, (ROLE_CELL,) * 9)
    m.set_cell_count(48)
    # LoopNode copies frames into lists (test double), so drive the firmware
    # directly: a whole sweep of receive/transmit with the nodes' queues pre-sized.
    master = r.master
    now = r.clock.ticks_ms()

    def master_pass():
        master.fill_cells(m, now)
        master.fill_temps(m, 0, 3)
        master.set_balance(flags)
        master._check(now)
    _locked(master_pass)
    s = r.slaves[0]
    s._last_sample = now - 5000

    def slave_pass():
        s._sample(now)
        s._frame(0, now)
        s._frame(1, now)
        s._frame(5, now)
    _locked(slave_pass)
    assert not master.comm_fault


def test_master_receive_and_sweep_do_not_allocate():
    from can_helpers import ReplayCtrl, sweep_frames
    from comms.can_master import CanMaster
    ctrl = ReplayCtrl()
    m = CanMaster(ctrl, 16, now=0)
    m.configure(256, 16, 2500)
    flags = bytearray(256)
    flags[200] = 1
    m.set_balance(flags)
    frames = [sweep_frames(16, s) for s in range(1, 5)]
    now = 0
    state = [0]

    def one_sweep(s):
        m.poll(state[0])            # SYNC, CONFIG / version requests, BAL
        ctrl.frames = frames[s]
        ctrl.i = 0
        while ctrl.i < len(ctrl.frames):
            state[0] += 6
            m.poll(state[0])
        state[0] = (s + 1) * 1000
    for s in range(3):
        one_sweep(s)
    for k in range(16):
        m.mod_version[4 * k + 3] = 1   # as if every module had answered
    _locked(lambda: one_sweep(3))
    assert not m.comm_fault
    assert m.mod_bal_want[12] == 1 << 8
