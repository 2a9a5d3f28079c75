"""Slave logic: slot timing, local hard limits, balancing timeout, sleep."""
from slave.core import LIMIT_SAMPLES, Slave
from bms.ticks import VirtualClock
from can_helpers import HandMaster as Master, LoopBus, LoopNode, ValueAfe, raw_frames
from comms import can_ids as C
from comms.can_guard import READ_MS


def _rig(addr=2, cells=16, start=0x3FFFFFFF - 3000, **kw):
    clock = VirtualClock(start)
    bus = LoopBus()
    m = Master(bus)
    node = LoopNode(bus)
    afe = ValueAfe(cells, 3300)
    s = Slave(node, afe, addr=addr, cells=cells, uid=0x42, now=clock.ticks_ms(), **kw)
    return clock, m, node, afe, s


def _run(clock, s, ms, dt=1):
    t = 0
    while t < ms:
        clock.advance(dt)
        t += dt
        s.step(clock.ticks_ms())


def test_silent_without_sync():
    clock, m, node, afe, s = _rig()
    _run(clock, s, 3000)
    assert node.sent == []


def test_slot_timing_and_frames():
    clock, m, node, afe, s = _rig(addr=2)
    _run(clock, s, 10)
    t_sync = clock.elapsed_ms
    m.sync()
    times = []
    n0 = 0
    for _ in range(200):
        clock.advance(1)
        s.step(clock.ticks_ms())
        if len(node.sent) > n0:
            times.append(clock.elapsed_ms - t_sync)
            n0 = len(node.sent)
    ids = [i for i, _ in node.sent]
    # status, 4 cell frames, temps, version (first sweep after boot)
    assert ids == [0x101, 0x204, 0x205, 0x206, 0x207, 0x281, 0x301]
    # slot 2 of 40 ms starts 80 ms after SYNC (+1 ms loop latency), 6 ms apart
    assert times[0] == 81
    assert [times[i + 1] - times[i] for i in range(len(times) - 1)] == [6] * 6
    st = node.sent[0][1]
    assert st[0] & 0x0F == C.ST_RUN and st[1] == 16 and st[2] == 1
    assert st[3] & C.LF_DEFAULTS   # not configured yet
    assert node.sent[1][1] == bytes([0xE4, 0x0C] * 4)   # 3300 mV


def test_config_and_lock():
    clock, m, node, afe, s = _rig(cells=16)
    m.config(2, cells=12)
    _run(clock, s, 2)
    assert s.cells == 12 and s.ov_mv == 3800 and s.ot_dc == 700 and s.configured
    clock2, m2, node2, afe2, s2 = _rig(cells=16, locked=True)
    m2.config(2, cells=12)
    _run(clock2, s2, 2)
    assert s2.cells == 16 and s2.ov_mv == 3800   # limits apply, count is locked
    m2.config(2, ov=2000, uv=2100)               # uv above ov: refused whole
    _run(clock2, s2, 2)
    assert s2.ov_mv == 3800


def test_balancing_times_out_when_master_goes_silent():
    clock, m, node, afe, s = _rig()
    m.sync()
    m.bal(2, 0x0005, timeout_ms=3000)
    _run(clock, s, 5)
    assert afe.mask == 0x0005
    # master refreshes for a while: balancing holds
    for _ in range(3):
        _run(clock, s, 995)
        m.sync()
        m.bal(2, 0x0005, timeout_ms=3000)
    _run(clock, s, 5)
    assert afe.mask == 0x0005
    t0 = clock.elapsed_ms
    # master silent: bleeders off within the command's timeout
    while afe.mask and clock.elapsed_ms - t0 < 5000:
        _run(clock, s, 1)
    dt = clock.elapsed_ms - t0
    assert afe.mask == 0
    assert 2900 <= dt <= 3001, dt
    assert s.faults & C.LF_MASTER_LOST
    assert s.bal_timeouts == 1


def test_balancing_refused_without_permission_or_with_local_fault():
    clock, m, node, afe, s = _rig()
    m.sync(flags=0)            # balancing not allowed this sweep
    m.bal(2, 0x00FF)
    _run(clock, s, 3)
    assert afe.mask == 0
    m.sync()
    m.bal(2, 0x1_0003)         # bits beyond 16 cells are dropped by the u16
    _run(clock, s, 3)
    assert afe.mask == 0x0003


def test_local_over_voltage_needs_consecutive_samples_and_stops_balancing():
    clock, m, node, afe, s = _rig()
    m.config(2, ov=3800)
    m.sync()
    m.bal(2, 0x0001, timeout_ms=25000)
    _run(clock, s, 3)
    assert afe.mask == 1
    afe.mv[7] = 3810
    for i in range(LIMIT_SAMPLES - 1):
        _run(clock, s, 1000)   # master silent: slave samples on its own every second
        assert not s.faults & C.LF_OV, i
    _run(clock, s, 1000)
    assert s.faults & C.LF_OV
    assert afe.mask == 0
    assert s.state_byte() & 0x0F == C.ST_FAULT
    # hysteresis: 3790 is below the limit but not below limit - 50 mV: stays
    afe.mv[7] = 3790
    _run(clock, s, 5000)
    assert s.faults & C.LF_OV
    afe.mv[7] = 3700
    _run(clock, s, 1000 * LIMIT_SAMPLES)
    assert not s.faults & C.LF_OV


def test_local_under_voltage_and_over_temperature_and_sensor():
    clock, m, node, afe, s = _rig()
    m.config(2, uv=2100, ot=60)
    _run(clock, s, 2)
    afe.mv[0] = 2000
    afe.t[1] = 595
    _run(clock, s, 1000 * LIMIT_SAMPLES + 5)
    assert s.faults & C.LF_UV and not s.faults & C.LF_OT
    afe.t[1] = 600
    _run(clock, s, 1000 * LIMIT_SAMPLES)
    assert s.faults & C.LF_OT
    afe.t[2] = C.TEMP_OPEN
    _run(clock, s, 1000)
    assert s.faults & C.LF_TSENSOR


def test_afe_failure_sends_invalid_cells():
    clock, m, node, afe, s = _rig(addr=1)
    afe.dead = True
    m.sync()
    _run(clock, s, 100)
    st = raw_frames(node, C.ID_STATUS)[0]
    assert st[3] & C.LF_AFE
    assert raw_frames(node, C.cells_id(1, 0))[0] == bytes([0xFF] * 8)


def test_sleep_flag_and_wake():
    clock, m, node, afe, s = _rig(addr=1)
    m.sync()
    m.bal(1, 3)
    _run(clock, s, 100)
    assert afe.mask == 3
    n = len(node.sent)
    m.sync(flags=C.SYNC_SLEEP | C.SYNC_BAL_OK)
    _run(clock, s, 1000)
    assert s.sleeping and afe.asleep and afe.mask == 0
    assert len(node.sent) == n           # no transmissions while asleep
    reads = afe.reads
    _run(clock, s, 10000)
    assert afe.reads - reads == 2        # one sample every 5 s
    m.sync()
    _run(clock, s, 100)
    assert not s.sleeping and not afe.asleep and len(node.sent) > n


def test_sleeps_when_master_lost_for_long():
    clock, m, node, afe, s = _rig()
    m.sync()
    _run(clock, s, 29000)
    assert not s.sleeping
    _run(clock, s, 2000)
    assert s.sleeping


def test_bus_off_restart_with_back_off():
    clock, m, node, afe, s = _rig()
    node.bus_off = True
    _run(clock, s, 99)
    assert node.restarts == 0            # no hammering
    _run(clock, s, 2)
    assert node.restarts == 1
    node.bus_off = True
    _run(clock, s, 150)
    assert node.restarts == 1            # back-off doubled to 200 ms
    # (seen within READ_MS: the guard reads the controller's state that often)
    _run(clock, s, 60 + READ_MS)
    assert node.restarts == 2
    assert s.guard.bus_off_count == 2


class _FakeDriverAfe:
    balance_no_adjacent = True

    def __init__(self):
        self.flags = None
        self.mode = None
        self.configured = []

    def configure(self, conf):
        self.configured.append(conf["cells"])

    def read_cells(self, mv, n):
        for i in range(n):
            mv[i] = 3000 + i

    def balance(self, flags):
        self.flags = bytes(flags)

    def set_mode(self, m):
        self.mode = m


class _FakeNtc:
    def __init__(self, st, t):
        self.st = st
        self.temp_dc = t

    def read(self):
        return self.st


def test_slave_afe_adapter():
    from array import array
    from bms.measurements import T_OPEN, T_SHORT, T_OK, ROLE_CELL
    from slave.afe import SlaveAfe
    drv = _FakeDriverAfe()
    a = SlaveAfe(drv, [(_FakeNtc(T_OK, 251), ROLE_CELL), (_FakeNtc(T_OPEN, 0), ROLE_CELL),
                       (_FakeNtc(T_SHORT, 0), ROLE_CELL)])
    t = array("h", [0] * 4)
    a.read_temps(t, 4)
    assert list(t) == [251, C.TEMP_OPEN, C.TEMP_SHORT, C.TEMP_ABSENT]
    a.balance(0b1011)            # cells 1, 2, 4: neighbours 1-2 -> keep 1
    assert drv.flags[:5] == bytes([1, 0, 0, 1, 0])
    a.sleep(True)
    assert drv.mode == 1
    mv = array("H", [0] * 16)
    a.read_cells(mv, 3)
    assert list(mv[:3]) == [3000, 3001, 3002]
    a.read_cells(mv, 3)
    a.read_cells(mv, 5)
    assert drv.configured == [3, 5]      # configured once per cell count


class _CountAfe(ValueAfe):
    """Reads depend on the cell count the AFE is asked for (like a BQ76952,
    whose channels move with it): cell i reads 3000 + n."""

    def read_cells(self, cell_mv, n):
        self.reads += 1
        for i in range(n):
            cell_mv[i] = 3000 + n


def _sweep_frames(node, n0):
    """(id, data) sent since index n0."""
    return node.sent[n0:]


def test_a_cell_count_changed_by_config_mid_sweep_is_never_reported_on_the_old_sample():
    # docs/can_internal.md: on SYNC the slave samples, then sends STATUS,
    # CELLS and TEMPS in its slot; the master trusts a STATUS reporting the
    # expected cell count and takes the CELLS and TEMPS that follow it.  So a
    # STATUS with c cells must be followed by c cells of one sample of c
    # cells and by the TEMPS frame, whenever the master's CONFIG (sent right
    # after its SYNC) changes the count.
    clock = VirtualClock(1000)
    bus = LoopBus()
    m = Master(bus)
    node = LoopNode(bus)
    afe = _CountAfe(16)
    s = Slave(node, afe, addr=1, cells=16, uid=0x42, now=clock.ticks_ms())
    m.sync()
    _run(clock, s, 1000)            # a sample of 16 cells
    for new, old in ((12, 16), (16, 12)):
        m.config(1, cells=old)
        m.sync()
        _run(clock, s, 1000)
        assert s.cells == old
        n0 = len(node.sent)
        m.sync()
        m.config(1, cells=new)      # the master's CONFIG right after its SYNC
        _run(clock, s, 1000)
        assert s.cells == new
        _check_one_sample(_sweep_frames(node, n0), old, new, None)
        n0 = len(node.sent)
        m.sync()                    # the next sweep reports the new count
        _run(clock, s, 1000)
        _check_one_sample(_sweep_frames(node, n0), old, new, new)


def _check_one_sample(frames, old, new, want):
    st = [d for i, d in frames if i == C.ID_STATUS]
    if not st and want is None:
        return                      # nothing reported this sweep: fine
    c = st[0][1]
    assert want is None or c == want, (old, new, c)
    ids = [i for i, _ in frames if i != C.ID_VERSION]
    nf = (c + 3) // 4
    assert ids == [C.ID_STATUS] + [C.cells_id(1, f) for f in range(nf)] + [C.ID_TEMPS], \
        (old, new, ids)
    for f in range(nf):
        d = frames[1 + f][1]
        for j in range(4):
            if 4 * f + j < c:
                assert d[2 * j] | (d[2 * j + 1] << 8) == 3000 + c, (old, new, f, j)
