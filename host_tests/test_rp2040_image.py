"""The board image (build/pico/firmware.uf2: MicroPython v1.27.0 rp2 with the
BMS frozen in) running on the emulated RP2040, its buses wired to the chip
emulators and the pack model (tools/rp2emu).  What the unix port cannot
show: the rp2 port's own machine.I2C / SPI / UART / Pin / ADC / WDT, the
real heap, the frozen image booting from flash with nothing on its
filesystem.

Times asserted here are emulated time (the chip's cycle clock), never the
wall clock.  Expected values come from the documented rules
(docs/faults.md, docs/safety.md, docs/modbus.md), not from the firmware.
"""
import pytest

from rp2_rig import boot, repl

import tools  # noqa: F401
from bms.params import TABLE as PARAMS, index as param_index
from tools.bmsctl.client import BmsClient
from tools.rp2emu.board import Background

CHG_CLEAR_MS = 1000      # docs/faults.md: ov1 clear delay
FAST_MS = 50             # docs/safety.md: the fast task period
CELL_MS = 250            # the cell task period


@pytest.fixture
def board():
    b = boot()
    yield b
    b.close()


def test_boots_to_running_with_every_part_built(board):
    r = repl(board)
    st = r.eval("(__import__('app').APP.failed, __import__('app').APP.bms.running, "
                "__import__('sys').implementation.version[:2], __import__('os').uname().machine)")
    failed, running, version, machine = st
    assert failed == [], "parts that failed to build on the chip: %r" % failed
    assert running
    assert tuple(version) == (1, 27)
    assert "RP2040" in machine
    # The image runs from flash: the application modules are frozen, not files.
    assert r.eval("__import__('os').listdir('/')").count("app.py") == 0
    # The frozen native (viper) loops load on the chip: a module of the
    # wrong architecture would fall back to bytecode silently, 4-10x slower
    # (the Modbus CRC, the register blocks' placing).
    r.exec("from comms import crc16\nfrom comms.regs import rows, cells, pack_viper as pv")
    assert r.eval("(crc16.crc16 is crc16.crc16_viper, rows._loop is pv.pack_loop, "
                  "rows._copy is pv.copy_loop, cells._loop is pv.cells_loop)") == \
        (True, True, True, True)
    free = r.eval("(__import__('gc').collect(), __import__('gc').mem_free())[1]")
    print("heap free after boot (emulated RP2040, 16S single board): %d B" % free)
    assert free > 100 * 1024


def test_measurements_through_the_emulated_buses_match_the_pack(board):
    r = repl(board)
    pack = board.pack
    cells, cur, n, temps = r.eval(
        "(lambda m: (list(m.cell_mv[:m.n_cells]), m.current_ma, m.n_cells, "
        "list(m.temp_dc[:m.n_temps])))(__import__('app').APP.bms.meas)")
    assert n == pack.n
    truth = [v * 1000.0 for v in pack.cell_voltages()]
    for i in range(n):
        # BQ76952: 1 mV resolution; the emulator adds +-1 mV noise.
        assert abs(cells[i] - truth[i]) <= 2.5, (i, cells[i], truth[i])
    # INA228 on a 100 uOhm shunt: the emulated +-20 mA noise, no load.
    assert abs(cur - pack.current_a * 1000.0) <= 25
    # Every NTC at the pack's temperature (25 C) within 1 C after the
    # 12-bit ADC and the beta table.
    for t in temps:
        assert abs(t - 250) <= 10, temps


def test_modbus_monitor_block_over_the_emulated_uart(board):
    link = board.open_rs485()
    pack = board.pack
    with Background(board):
        c = BmsClient(link.path, timeout=3.0, retries=1)
        try:
            mon = c.monitor()
            cells = c.cells(pack.n)
        finally:
            c.close()
    truth = [v * 1000.0 for v in pack.cell_voltages()]
    assert mon["cell_count"] == pack.n
    assert all(abs(cells[i] - truth[i]) <= 2.5 for i in range(pack.n)), cells
    assert abs(mon["pack_voltage"] - pack.pack_voltage() * 1000.0) <= 10
    # Half duplex: every reply byte left while DE was high.
    assert link.lost_tx == 0 and link.tx_log


def _set_params(board, changes):
    link = board.rs485 or board.open_rs485()
    with Background(board):
        c = BmsClient(link.path, timeout=3.0, retries=1)
        try:
            c.unlock("123456")
            c.set_params({param_index(k): v for k, v in changes.items()})
            got = {row["name"]: row["raw"] for row in c.params()}
        finally:
            c.close()
    for k, v in changes.items():
        assert got[k] == v, (k, got[k], v)


def _first_change(board, name, state, within_ms, step_ms=10):
    t0 = board.chip.t_ms
    while board.chip.t_ms - t0 < within_ms:
        board.run_ms(step_ms)
        if board.relay(name) == state:
            return board.chip.t_ms - t0
    return None


def test_short_delay_overcharge_opens_charge_and_recloses_only_below_recovery(board):
    # docs/faults.md row ov1: trips when cell_max >= ov1 for ov_delay,
    # recovers when cell_max < ov_rec for its 1000 ms clear delay.
    delay = PARAMS[param_index("ov_delay")][2]          # the shortest allowed
    _set_params(board, {"ov1": 3450, "ov_rec": 3400, "ov_delay": delay})
    pack = board.pack
    assert board.relay("charge") == 1
    hot = pack.cells[4]
    hot.soc = 0.995                                    # OCV about 3.55 V: above ov1
    t_open = _first_change(board, "charge", 0, delay + 2000)
    assert t_open is not None, "charge relay never opened"
    # Trips after the set delay, within one cell read and one fast tick more.
    assert delay <= t_open <= delay + CELL_MS + FAST_MS + 20, t_open
    hot.soc = 0.98                                     # 3.42 V: below ov1, above ov_rec
    assert _first_change(board, "charge", 1, 3000) is None, "reclosed above ov_rec"
    hot.soc = 0.5                                      # 3.29 V: below recovery
    t_close = _first_change(board, "charge", 1, CHG_CLEAR_MS + 2000)
    assert t_close is not None, "charge relay never reclosed"
    assert CHG_CLEAR_MS <= t_close <= CHG_CLEAR_MS + CELL_MS + FAST_MS + 20, t_close
    # The other relays never moved: ov1 opens only the charge path.
    assert board.relay("discharge") == 1 and board.relay("level2") == 1


def test_hung_loop_is_reset_by_the_watchdog_and_comes_back_safely(board):
    r = repl(board)        # Ctrl-C: the loop stops; its last pass opened the relays
    wdt_ms = r.eval("__import__('app').WDT_MS")
    resets = len(board.chip.resets)
    # One ordered record of what the chip did: cell-block reads of the AFE
    # (register 0x14, docs/afe.md) and relay coil changes.
    seen = []
    bus = board.chip.i2c[board.pins["i2c"][0]]
    afe_addr = board.emu_afe.addr
    read = bus.read

    def logged_read(addr, wr):
        if addr == afe_addr and wr and wr[0] == 0x14:
            seen.append(("cells", board.chip.t_ns))
        return read(addr, wr)
    bus.read = logged_read
    board.chip.pin_listeners.append(
        lambda pin, level, t: pin in board.relay_pins and level == 1 and seen.append(("close", t)))
    r.chip.cdc_send(b"while True:\r\n    pass\r\n\x04")   # a loop that never feeds
    board.run_ms(wdt_ms + 200)
    assert len(board.chip.resets) == resets + 1, "no watchdog reset"
    reason, t_reset = board.chip.resets[-1]
    assert reason == 1                                  # the watchdog's TIMER reason
    # Every relay coil is off across the reset and stays off until the
    # first complete measurement after it; then the pack is connected again.
    assert _first_change(board, "discharge", 1, 5000) is not None
    after = [e for e in seen if e[1] >= t_reset]
    first_close = next(i for i, e in enumerate(after) if e[0] == "close")
    assert any(e[0] == "cells" for e in after[:first_close]), \
        "a relay closed before the first cell read after the reset: %r" % after[:first_close + 1]
    r2 = repl(board)
    assert r2.eval("__import__('machine').reset_cause()") == r2.eval("__import__('machine').WDT_RESET")
    assert r2.eval("__import__('app').APP.failed") == []


_ALLOC_PROBE = """
import app, time, gc
from array import array
_b = app.APP.bms
ALLOC = array('i', [0] * 9)         # per task: calls counted, calls that allocated, bytes
T_FROM = time.ticks_add(time.ticks_ms(), %d)
def _wrap(i, f):
    def w(now):
        a = gc.mem_alloc()
        f(now)
        d = gc.mem_alloc() - a
        if time.ticks_diff(time.ticks_ms(), T_FROM) >= 0:
            ALLOC[3 * i] += 1
            if d > 0:
                ALLOC[3 * i + 1] += 1
                ALLOC[3 * i + 2] += d
    return w
for _i in range(3):
    _b.sched._fn[_i] = _wrap(_i, _b.sched._fn[_i])
"""


def test_control_tasks_allocate_nothing_in_steady_operation(board):
    # docs/safety.md / GUIDE: no allocation in the control loop.  Only the
    # chip shows some of it: a small int beyond +-8191 inside a constant
    # tuple is frozen as a long int, and arithmetic with it allocates on
    # every call (the SOC estimator lost 128 B per update that way; the
    # unix port's 62-bit small ints never show it).  Events (a relay
    # closing, a record logged) may allocate, so the first seconds after
    # the loop restarts with every relay open are not counted.
    r = repl(board)
    r.exec(_ALLOC_PROBE % 6000)
    r.start("import app\napp.APP.run()")
    board.run_ms(6000 + 12000)
    r.interrupt()
    st = r.eval("list(ALLOC)")
    for i, name in enumerate(("cells", "fast", "slow")):
        calls, allocating, nbytes = st[3 * i:3 * i + 3]
        assert calls >= 10, (name, calls)
        assert allocating == 0, "%s task: %d of %d calls allocated %d B" % (
            name, allocating, calls, nbytes)


def test_the_whole_loop_makes_almost_no_garbage_in_steady_operation(board):
    # app.collect_if_idle collects every 10 s on the premise that the loop
    # (tasks, pollers, the idle wait) makes next to no garbage.  The idle
    # wait's select.poll.poll() made a new list each pass: about 900 B/s,
    # 18 KB in this window; with ipoll about 1 KB (the restart and the
    # Ctrl-C at the end included).  Collections are off for the window, so
    # what was allocated is still counted at the end.
    r = repl(board)
    r.start("import app\napp.APP.run()")
    board.run_ms(5000)          # precharge and its events, before counting
    r.interrupt()
    r.exec("import app, gc\napp.GC_IDLE = False\ngc.collect()\nA0 = gc.mem_alloc()\n"
           "C0 = app.APP.collections")
    r.start("import app\napp.APP.run()")
    board.run_ms(20000)
    r.interrupt()
    grown, collections = r.eval("(__import__('gc').mem_alloc() - A0, "
                                "__import__('app').APP.collections - C0)")
    assert collections == 0
    assert grown < 4096, "%d B of garbage in 20 s of steady operation" % grown


_PYSTACK_PROBE = """
import micropython
def _deep(n):
    a = b = c = d = e = f = g = h = n    # a frame over 11 words: MicroPython's
    if n == 0:                           # default takes such frames from the heap
        return micropython.pystack_use()
    return _deep(n - 1) + a - b + c - d + e - f + g - h
BASE = micropython.pystack_use()
USE = (_deep(0), _deep(5))
try:
    _deep(100000)
    DEEP = None
except RuntimeError as e:
    DEEP = str(e)
AFTER = micropython.pystack_use()
"""


def test_call_frames_live_on_the_pystack_and_running_out_is_a_clean_error(board):
    # boards/rp2/BMS_PICO/mpconfigboard.h: call frames on a pystack, not the
    # GC heap (a heap frame per call, searched for longer as the heap fills,
    # made the fast task's worst depend on fragmentation).  Deeper calls use
    # more of it and return it; a runaway recursion ends in a RuntimeError
    # the caller can catch (pystack or C stack, whichever runs out first),
    # and the chip carries on.
    r = repl(board)
    r.exec(_PYSTACK_PROBE)
    base, (use0, use5), deep, after = r.eval("(BASE, USE, DEEP, AFTER)")
    assert base < use0 < use5, (base, use0, use5)
    assert (use5 - use0) % 5 == 0 and (use5 - use0) // 5 > 11 * 4   # one frame > 11 words
    assert deep is not None and ("pystack" in deep or "recursion" in deep), deep
    assert after == base
    assert r.eval("1 + 1") == 2


def test_discharge_over_current_counts_its_delay_from_the_shunt_alert():
    # docs/faults.md "Onset", docs/safety.md timing model: with the INA228's
    # ALERT wired (pico GP3), dsg_oc sets at its delay from the comparator's
    # edge.  A load step the instant after a current sample (the worst phase
    # for sampling alone: delay + one tick + the tick's own time) opens the
    # discharge relay within delay + 20 ms: the comparator's conversion, its
    # interrupt and the extra tick at the delay's end.
    from tools.rp2emu.measure import AFTER_SAMPLE, Run, set_params_code
    delay = 1000
    run = Run("pico", 16)
    try:
        failed, running = run.boot()
        assert running and not failed
        ts = run.reaction("discharge", set_params_code({
            "dsg_oc": 1000, "dsg_oc_delay": delay, "oc_release": 1, "oc_retries": 10}),
            lambda pack: setattr(pack, "load_a", 150.0),
            lambda pack: setattr(pack, "load_a", 0.0), delay + 2000, (AFTER_SAMPLE, 29))
    finally:
        run.close()
    for t in ts:
        assert t is not None and delay <= t <= delay + 20, ts


def test_the_bench_heap_figure_is_the_collected_heap():
    # README bench rows "heap free after boot / after 10 min": free bytes after
    # a collection, the app's live data alone.  Read before collecting, the
    # figure also lacked the loop's garbage since its idle collection and the
    # REPL's garbage from compiling the measuring code (about 9 KB).
    from tools.rp2emu.measure import Run
    run = Run("pico", 16)
    try:
        failed, running = run.boot()
        assert running and not failed
        free, largest = run.heap()
        again = run.repl.eval("(__import__('gc').collect(), __import__('gc').mem_free())[1]")
    finally:
        run.close()
    assert abs(free - again) < 1024, (free, again)
    assert 0 < largest <= free
