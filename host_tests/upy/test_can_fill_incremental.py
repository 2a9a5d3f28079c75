# CanMaster.fill_cells copies a module again only when something it copied
# can have changed.  That must be exact: after every fill, the snapshot equals
# a full copy made at the same moment, through modules that change their
# voltages, fall silent (frames age past the timeout, the module is lost),
# come back, report invalid cells, and a reconfiguration.
# MicroPython-compatible: runs under pytest and the unix port.
from bms.measurements import Measurements, ROLE_CELL
from can_helpers import Rig
from comms import can_ids as C


def _full_copy(master, now, n):
    ref = Measurements(master.max_cells, (ROLE_CELL,))
    ref.set_cell_count(n)
    saved = master._fill_n
    master._fill_n = -1           # forces every module to be copied
    # The reference copy must not disturb the master's own bookkeeping.
    keep = (bytes(master._fill_seq), bytes(master._fill_state),
            list(master._fill_oldest), bytes(master._fill_fresh))
    master.fill_cells(ref, now)
    master._fill_n = saved
    for k in range(master.n_modules):
        master._fill_seq[k] = keep[0][k]
        master._fill_state[k] = keep[1][k]
        master._fill_oldest[k] = keep[2][k]
        master._fill_fresh[k] = keep[3][k]
    return ref


def _same(m, ref, n):
    for i in range(n):
        if (m.cell_mv[i], m.cell_ok[i], m.cell_ts[i]) != (ref.cell_mv[i], ref.cell_ok[i],
                                                          ref.cell_ts[i]):
            return i
    return -1


def test_incremental_fill_equals_a_full_copy():
    r = Rig(n=4, timeout=2500)
    n = 64
    m = Measurements(r.master.max_cells, (ROLE_CELL,))
    m.set_cell_count(n)
    skipped = 0
    copied_at = 0
    for step in range(6000):       # 12 s in 2 ms steps
        t = step * 2
        if t == 2000:
            r.afes[1].mv[3] = 3456
        if t == 3000:
            r.alive[2] = False      # module 3 falls silent: ages out, then is lost
        if t == 7000:
            r.alive[2] = True
        if t == 8000:
            r.afes[0].mv[5] = C.CELL_INVALID
        if t == 9000:
            r.master.configure(n, 16, 2000)   # a shorter timeout
        r.step(2)
        if step % 125 == 0:         # the master's cell task: every 250 ms
            now = r.clock.ticks_ms()
            before = sum(r.master._fill_seq)
            r.master.fill_cells(m, now)
            ref = _full_copy(r.master, now, n)
            bad = _same(m, ref, n)
            assert bad < 0, (t, bad)
            if sum(r.master._fill_seq) == before:
                skipped += 1
            copied_at += 1
    # Both paths ran: copies were skipped, and the silent module's cells went
    # invalid and came back.
    assert skipped > 0 and copied_at > skipped
    assert m.cell_mv[16 + 3] == 3456


def test_the_comparison_catches_a_fill_that_skips_too_much():
    # A fill that never copies again after the first time: the test above
    # must notice (the silent module's cells would stay valid).
    from comms.can_master import CanMaster
    orig = CanMaster.fill_cells

    def lazy(self, m, now):
        if self._fill_n == m.n_cells:
            return
        orig(self, m, now)

    CanMaster.fill_cells = lazy
    try:
        try:
            test_incremental_fill_equals_a_full_copy()
        except AssertionError:
            return
        raise AssertionError("a fill that skips everything went unnoticed")
    finally:
        CanMaster.fill_cells = orig
