"""Module health: silence, stale and inconsistent data raise the comm fault in bounded time."""
from bms.measurements import Measurements, ROLE_CELL
from can_helpers import Rig
from comms import can_ids as C
from comms.can_master import CHECK_MS, MS_BAD, MS_LOST, MS_OK, W_AFE, W_ECHO, W_FRAMES

TIMEOUT = 2500


def _up(n=3):
    r = Rig(n=n, timeout=TIMEOUT)
    assert r.run_until(lambda: r.states() == [MS_OK] * n and not r.master.comm_fault, 2000) >= 0
    return r


def _last_status_age(r, k):
    return (r.clock.ticks_ms() - r.master.mod_status_ts[k]) & 0x3FFFFFFF


def test_silent_module_lost_within_timeout_bound_not_before():
    r = _up()
    r.run(500)
    r.snodes[1].plugged = False
    # from now on module 2 is silent; its last STATUS was at most one sweep ago
    age0 = _last_status_age(r, 1)
    t = r.run_until(lambda: r.master.comm_fault, 5000)
    assert t >= 0
    assert r.states() == [MS_OK, MS_LOST, MS_OK]
    silent = age0 + t   # ms since the module's last frame
    assert TIMEOUT < silent <= TIMEOUT + CHECK_MS + 2, silent
    assert r.master.mod_lost_count[1] == 1
    # its cells are invalid in the snapshot; the others stay valid
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)
    r.master.fill_cells(m, r.clock.ticks_ms())
    assert sum(m.cell_ok[0:16]) == 16 and sum(m.cell_ok[16:32]) == 0 and sum(m.cell_ok[32:48]) == 16


def test_module_returns_after_one_complete_sweep():
    r = _up()
    r.snodes[2].plugged = False
    r.run_until(lambda: r.master.comm_fault, 5000)
    r.snodes[2].plugged = True
    t = r.run_until(lambda: not r.master.comm_fault, 3000)
    assert 0 <= t <= 1000 + 3 * 40 + CHECK_MS, t
    assert r.states() == [MS_OK] * 3


def test_missing_cell_frames_are_stale():
    r = _up()
    # module 1 keeps its heartbeat but its second cell frame never arrives
    node = r.snodes[0]
    real_send = node.send

    def lossy(can_id, data, ext=False):
        if can_id == C.cells_id(1, 1):
            return True   # "sent", lost on the way
        return real_send(can_id, data, ext)
    node.send = lossy
    t = r.run_until(lambda: r.master.comm_fault, 5000)
    assert 0 <= t <= TIMEOUT + 1000 + CHECK_MS
    assert r.master.mod_state[0] == MS_BAD and r.master.mod_why[0] & W_FRAMES
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)
    r.master.fill_cells(m, r.clock.ticks_ms())
    assert sum(m.cell_ok[0:16]) == 0


def test_afe_error_on_a_module_is_immediate():
    r = _up()
    r.afes[1].dead = True
    t = r.run_until(lambda: r.master.comm_fault, 3000)
    assert 0 <= t <= 1000 + 2 * 40 + CHECK_MS, t
    assert r.master.mod_state[1] == MS_BAD and r.master.mod_why[1] & W_AFE
    r.afes[1].dead = False
    assert r.run_until(lambda: not r.master.comm_fault, 3000) >= 0


def test_status_from_an_old_sweep_is_not_fresh():
    r = _up(1)
    r.run(300)
    b = bytearray(8)
    C.status_pack(b, C.ST_RUN, 16, r.master.sweep - 3, 0, 0, 3, 10)
    r.mnode.deliver(C.ID_STATUS, bytes(b), False)
    r.master.poll(r.clock.ticks_ms())
    assert r.master.mod_why_status[0] & W_ECHO


def test_hard_limit_flags_latch_until_cleared():
    r = _up()
    r.afes[2].mv[4] = 4300   # above the master-configured 4250 mV hard limit
    r.run(3 * 1000 + 1000)
    assert r.master.hard_latch & C.LF_OV
    r.master.clear_hard()
    assert r.master.hard_latch & C.LF_OV   # still reported: stays
    r.afes[2].mv[4] = 3400
    r.run(4000)
    assert r.master.hard_now == 0 and r.master.hard_latch & C.LF_OV
    r.master.clear_hard()
    assert r.master.hard_latch == 0


def test_wraps_ticks():
    # Rig starts 5 s before the tick wrap: all of the above crossed it; run long here
    r = _up(2)
    r.run(20000)
    assert r.states() == [MS_OK, MS_OK] and not r.master.comm_fault


def test_cell_ages_follow_their_own_frame_with_odd_module_sizes():
    # 15-cell modules: module boundaries fall inside a 4-cell frame slot, so a
    # cell must take the arrival time of its own module's frame, never a
    # neighbour's (frame times are kept per frame, not per cell).
    r = Rig(n=3, cells=15, timeout=TIMEOUT)
    assert r.run_until(lambda: r.states() == [MS_OK] * 3, 3000) >= 0
    r.snodes[2].plugged = False
    r.run(TIMEOUT + 500)
    now = r.clock.ticks_ms()
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(45)
    r.master.fill_cells(m, now)
    ages = [(now - m.cell_ts[i]) & 0x3FFFFFFF for i in range(45)]
    assert max(ages[0:30]) <= 1000, ages
    assert min(ages[30:45]) > TIMEOUT, ages
    assert sum(m.cell_ok[0:30]) == 30 and sum(m.cell_ok[30:45]) == 0


def test_a_cell_reading_of_0_mv_from_a_module_is_invalid_like_on_a_single_board():
    # docs/safety.md: a cell reading is invalid when the driver flags it, at
    # 0 mV or out of range (drivers store through put_cell: 1..6000 mV); its
    # last valid value holds and cell_stale acts.  The master copied a
    # module's 0 mV as a valid reading: the lowest cell read 0 mV, so uv1
    # (SOC calibrated to 0 %) and uv2 (latched, level 2 open) tripped on an
    # open sense wire instead of cell_stale.
    r = _up()
    r.run(500)
    r.afes[1].mv[4] = 0
    r.afes[1].mv[6] = C.CELL_INVALID
    r.run(1500)
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)
    now = r.clock.ticks_ms()
    r.master.fill_cells(m, now)
    assert m.cell_ok[16 + 6] == 0
    assert m.cell_ok[16 + 4] == 0
    assert sum(m.cell_ok[0:48]) == 46
    m.update_cell_stats()
    assert m.min_mv > 3000 and m.bad_cells == 2


def test_a_module_cell_reading_beyond_the_cell_range_is_invalid_like_on_a_single_board():
    # docs/safety.md: a reading out of range (above CELL_MV_MAX, 6000 mV:
    # beyond every AFE's cell input) is invalid, as on a single board; its
    # last valid value holds and cell_stale acts.  The master took any
    # module value but 0 and 0xFFFF: the cell above a module's open sense
    # wire, drained by the chip's open-wire check, reads two cells (7 V) and
    # was a valid cell_max (ov2 latched on a reading no cell can give).
    r = _up()
    r.run(500)
    r.afes[1].mv[5] = 7088
    r.afes[1].mv[7] = C.CELL_INVALID - 1
    r.run(1500)
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)
    now = r.clock.ticks_ms()
    r.master.fill_cells(m, now)
    assert m.cell_ok[16 + 5] == 0
    assert m.cell_ok[16 + 7] == 0
    assert sum(m.cell_ok[0:48]) == 46
    m.update_cell_stats()
    assert m.max_mv < 4000 and m.bad_cells == 2


def test_a_module_with_cells_wired_beyond_its_count_gives_none_of_its_cells():
    # docs/safety.md, cells connected beyond the count, on a module: its
    # chip's stack voltage above the sum of the cells it reads by more than
    # 800 mV + 5 mV per cell on 5 samples in a row means cells nobody reads
    # (a module of 16 set to 12: TI's wiring leaves VC12..VC15 unread).  The
    # module reports LF_WIRING and the master takes none of its cells, so
    # the core's cell_stale opens charge and discharge.  Before, nothing
    # compared them on a module: the four cells were charged unmonitored.
    r = _up()
    a = r.afes[1]
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(48)

    def taken(k):
        r.master.fill_cells(m, r.clock.ticks_ms())
        return sum(m.cell_ok[16 * k:16 * k + 16])

    a.stack = sum(a.mv)                  # wired as configured: agrees
    r.run(8000)
    assert taken(1) == 16 and r.states() == [MS_OK] * 3
    a.stack = sum(a.mv) + 4 * 3300       # four more cells on the taps
    t = r.run_until(lambda: taken(1) == 0, 7000)
    assert t >= 0
    r.run(1500)
    assert taken(1) == 0 and taken(0) == 16 and taken(2) == 16
    assert r.master.mod_faults[1] & C.LF_WIRING     # and says why
    a.stack = sum(a.mv)                  # the count put right
    assert r.run_until(lambda: r.states() == [MS_OK] * 3, 3000) >= 0
    assert taken(1) == 16 and not r.master.mod_faults[1] & C.LF_WIRING


def test_missing_cell_frame_stays_stale_for_weeks():
    # A module whose STATUS keeps coming but one cell frame never does stays
    # bad however long that lasts.  A tick difference wraps after 2**29 ms
    # (6.2 days): its last complete sweep and the lost frame's time must not
    # read as recent then (its frozen cells taken as fresh, the comm fault
    # cleared, the relays closed).  Days of 2 ms steps are out of reach: the
    # two stamps are set to what days of this leave, the bus runs on.
    from bms.ticks import ticks_add
    r = _up()
    node = r.snodes[0]
    real_send = node.send

    def lossy(can_id, data, ext=False):
        if can_id == C.cells_id(1, 1):
            return True
        return real_send(can_id, data, ext)
    node.send = lossy
    assert r.run_until(lambda: r.master.comm_fault, 5000) >= 0
    ms = r.master
    for days in (3, 6, 7, 9, 12):
        ago = days * 86400000 + 5000    # 7, 9, 12 days: past 2**29 ms
        now = r.clock.ticks_ms()
        ms.mod_full_ts[0] = ticks_add(now, -ago)
        ms.frame_ts[1] = ticks_add(now, -ago)
        r.run(3000)
        assert ms.mod_state[0] == MS_BAD and ms.mod_why[0] & W_FRAMES, days
        assert ms.comm_fault
        m = Measurements(256, (ROLE_CELL,))
        m.set_cell_count(48)
        ms.fill_cells(m, r.clock.ticks_ms())
        assert sum(m.cell_ok[0:16]) == 0, days


def test_received_frame_count_wraps_as_a_small_int():
    # About 129 days of a 16-module bus pass 2**30 frames: beyond it every
    # received frame would allocate a long int on the RP2040; it wraps.
    r = _up()
    r.master.rx_frames = 0x3FFFFFFF - 1
    r.run(1000)
    assert 0 < r.master.rx_frames < 1000
    assert r.states() == [MS_OK] * 3 and not r.master.comm_fault


def test_a_layout_change_takes_no_module_cells_until_the_modules_report_it():
    # docs/can_internal.md "When the master trusts a module": OK only if its
    # STATUS reports the expected cell count, and its CELLS follow that STATUS.
    # A new cell_count / module_cells (the same module count: no restart)
    # changes what is expected at once; until then the cells the master holds
    # are the old layout's, at other pack positions.
    r = _up(2)
    sw = r.master.sweep
    r.run_until(lambda: r.master.sweep != sw, 1100)
    r.run(300)                       # this sweep's frames are all in
    assert r.states() == [MS_OK] * 2
    assert r.master.configure(20, 12, TIMEOUT)   # modules of 12 + 8 cells
    m = Measurements(256, (ROLE_CELL,))
    m.set_cell_count(20)
    r.run(CHECK_MS + 2)              # before the next SYNC
    r.master.fill_cells(m, r.clock.ticks_ms())
    assert r.master.comm_fault
    assert sum(m.cell_ok[0:20]) == 0, list(m.cell_ok[0:20])
    # CONFIG gives the modules their new counts: back with the new layout.
    assert r.run_until(lambda: r.states() == [MS_OK] * 2 and not r.master.comm_fault, 5000) >= 0
    assert [s.cells for s in r.slaves] == [12, 8]
    r.master.fill_cells(m, r.clock.ticks_ms())
    assert sum(m.cell_ok[0:20]) == 20
    assert list(m.cell_mv[11:13]) == [3300, 3301]
