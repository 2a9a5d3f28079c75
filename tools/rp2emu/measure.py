"""Figures measured on the emulated RP2040 running the board image (the
bench's rp2040 rows and `python -m tools.rp2emu.measure`).

Every time here is emulated time from the chip's cycle clock (125 MHz):
task times come from the firmware's own scheduler timing (``time.ticks_us``
around each task), CPU from the cycles the core spent out of WFE/WFI.

A run: boot the image around a pack model, stop the app at the REPL once
it is running, reset the scheduler's timing, restart the loop and let it
run for the window, stop it again and read the figures off the chip.
"""
import argparse
import json
import os

from tools import fwbuild
from tools.rp2emu.board import EmuBoard, VirtualCanBus
from tools.rp2emu.repl import Repl
from tools.sim.pack import Pack

TASKS = ("cells", "fast", "slow")    # bms.core adds them in this order
AFTER_SAMPLE = "after sample"   # a reaction phase: see Run.reaction
_INA228_CURRENT = 0x07

# Largest block the heap can still give, by bisection with real allocations.
_LARGEST = """
import gc
def _largest():
    gc.collect()
    lo, hi = 0, gc.mem_free()
    while hi - lo > 256:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            b = None
            lo = mid
        except MemoryError:
            hi = mid
        gc.collect()
    return lo
"""


# slave_main.run()'s loop (slave_main.loop: the slave's step, the watchdog,
# the LED, the idle collection) with the slave's step timed: Slave.step is
# called through a timing function set on the instance, which the loop
# takes as the slave's step.  The step that takes the first AFE sample also configures the AFE
# for the module's cell count (once, and on a count change from the
# master): timed apart, as _first.  The collections are timed too, and the
# heap read around them: what the loop allocated between the first one and
# the end of the window (_grown, from _g0 on).
_SLAVE_LOOP = """
import slave_main as _sm, time, machine, gc
from boards import slave_module as _bd
_hw = _bd.build(machine)
_st = _sm.load_settings()
_now = time.ticks_ms() & _sm.TICKS_MAX
_s = _sm.build_slave(_hw, machine, _st, _now)
_mx = 0
_tot = 0
_n = 0
_first = 0
_gmx = 0
_gn = 0
_g0 = None
_grown = 0
_after = 0
_step = type(_s).step
def _timed(now):
    global _mx, _tot, _n, _first
    was = _s.sampled
    t0 = time.ticks_us()
    _step(_s, now)
    d = time.ticks_diff(time.ticks_us(), t0)
    if not was:
        if d > _first:
            _first = d
    elif d > _mx:
        _mx = d
    _tot += d
    _n += 1
_s.step = _timed
def _collect():
    global _gmx, _gn, _g0, _grown, _after
    a = gc.mem_alloc()
    if _g0 is None:
        _g0 = time.ticks_ms()
    else:
        _grown += a - _after
    t0 = time.ticks_us()
    gc.collect()
    d = time.ticks_diff(time.ticks_us(), t0)
    _after = gc.mem_alloc()
    _gn += 1
    if d > _gmx:
        _gmx = d
_sm.loop(_s, _hw["wdt"](_sm.WDT_MS), _hw.get("led"), _st, _now, collect=_collect)
"""


class Run:
    """One board image on the emulated chip, for measuring."""

    def __init__(self, kind="pico", cells=16, soc=0.5, chem="LFP", seed=1):
        self.kind = kind
        image = "pico" if kind in ("pico", "master") else kind
        uf2 = fwbuild.build(image)
        self.uf2 = uf2
        self.pack = Pack(chem, cells, 100.0, soc, seed=seed)
        self.slaves = []
        bus = None
        if kind == "master":
            from comms import can_ids as C
            bus = VirtualCanBus(C.BITRATE)
        else:
            bus = VirtualCanBus(500000)
        self.bus = bus
        self.board = EmuBoard(uf2, self.pack, board=image, can_bus=bus)
        self.chip = self.board.chip
        self.repl = Repl(self)     # REPL waits step the modules too
        if kind == "master":
            self._make_master(cells)

    # ---- a master with its modules ---------------------------------------------
    def _make_master(self, cells):
        """config.py names the board a master (MODULES); the slave modules
        are the firmware's own slave code in Python on the same CAN bus."""
        from slave.core import Slave
        from tools.sim.canbus import SimCanNode
        from tools.sim.modular import SliceAfe, _Chain
        n_mod = cells // 16
        self.board.run_ms(2500)
        self.repl.exec("f = open('/config.py', 'w')\nf.write('MODULES = True\\n')\nf.close()")
        chain = _Chain(n_mod)
        for k in range(n_mod):
            node = self.bus.attach(SimCanNode("slave%d" % (k + 1), rx_depth=2))
            afe = SliceAfe(self.pack, k * 16, 16, seed=100 + k)
            self.slaves.append(Slave(node, afe, addr=k + 1, cells=16, temps=3,
                                     uid=0xB0000000 + 0x101 * (k + 1),
                                     chain_in=chain.input(k), chain_out=chain.output(k),
                                     now=int(self.board.chip.t_ms)))
        self.repl.soft_reset()
        # Now a master: the module count follows cell_count / module_cells,
        # read when the master is built, so set it over the PC port (stored
        # as a user's change is) and boot once more.
        self.run_ms(3000)
        set_params_modbus(self, self.board, {"cell_count": cells})
        self.repl.enter()
        self.repl.soft_reset()

    def _poll(self, board):
        now = int(board.chip.t_ms)
        for s in self.slaves:
            s.step(now)

    def run_ms(self, ms):
        self.board.run_ms(ms, poll=self._poll if self.slaves else None)

    # ---- measuring ------------------------------------------------------------------
    def boot(self, ms=4000):
        self.run_ms(ms)
        r = self.repl
        r.enter()
        return r.eval("(__import__('app').APP.failed, __import__('app').APP.bms.running)")

    def window(self, ms, settle_ms=0, at_settle=None):
        """Run the app for ``ms`` from a clean timing state; returns the figures.

        The loop restarts from the REPL with every relay open (Ctrl-C opened
        them), so the first seconds precharge and log events.  ``settle_ms``
        > 0 resets the timing that long after the restart, from a timer on
        the chip, to measure the steady state only; ``at_settle`` (an
        expression) is then evaluated on the chip too, and its value is
        ``app._at_settle`` afterwards."""
        r = self.repl
        r.exec("import app\napp.APP.bms.sched.reset_timing()\napp._at_settle = None")
        code = "import app\n"
        if settle_ms:
            code += ("import machine, micropython\n"
                     "def _settled(_):\n"
                     "    app.APP.bms.sched.reset_timing()\n"
                     "    app._at_settle = %s\n"
                     "_tm = machine.Timer(mode=machine.Timer.ONE_SHOT, period=%d, callback="
                     "lambda t: micropython.schedule(_settled, 0))\n"
                     % (at_settle or "None", settle_ms))
        r.start(code + "app.APP.run()")
        if settle_ms:
            self.run_ms(settle_ms)
        busy0, t0 = self.board.chip.busy_ns, self.board.chip.t_ns
        self.run_ms(ms)
        busy1, t1 = self.board.chip.busy_ns, self.board.chip.t_ns
        r.interrupt()
        s = r.eval("(list(__import__('app').APP.bms.sched.us_max), "
                   "list(__import__('app').APP.bms.sched.us_sum), "
                   "list(__import__('app').APP.bms.sched.timed), "
                   "list(__import__('app').APP.bms.sched.late_max))")
        out = {"cpu_pct": 100.0 * (busy1 - busy0) / max(1, t1 - t0), "window_ms": ms}
        for k, name in enumerate(TASKS):
            n = s[2][k]
            out[name] = {"max_ms": s[0][k] / 1000.0,
                         "mean_ms": (s[1][k] / n / 1000.0) if n else None, "runs": n,
                         "late_ms": s[3][k]}
        return out

    def slave_window(self, ms):
        """The slave module's loop, its step timed on the chip (the image's
        own loop has no scheduler timing): max/mean ms per step and CPU %;
        the loop's idle collections (count, worst ms) and what it allocated
        per second from the first collection on (None when the window held
        none: it comes GC_PERIOD_MS after the start)."""
        r = self.repl
        r.start(_SLAVE_LOOP)
        busy0, t0 = self.board.chip.busy_ns, self.board.chip.t_ns
        self.run_ms(ms)
        busy1, t1 = self.board.chip.busy_ns, self.board.chip.t_ns
        r.interrupt()
        mx, tot, n, first, gn, gmx = r.eval("(_mx, _tot, _n, _first, _gn, _gmx)")
        grown, since = r.eval("(_grown + __import__('gc').mem_alloc() - _after, "
                              "time.ticks_diff(time.ticks_ms(), _g0)) if _gn else (0, 0)")
        return {"cpu_pct": 100.0 * (busy1 - busy0) / max(1, t1 - t0), "window_ms": ms,
                "step": {"max_ms": mx / 1000.0, "mean_ms": tot / n / 1000.0 if n else None,
                         "runs": n, "first_ms": first / 1000.0},
                "gc": {"runs": gn, "max_ms": gmx / 1000.0,
                       "alloc_b_per_s": 1000.0 * grown / since if since > 0 else None}}

    def heap(self):
        """(free bytes after a collection, largest free block)."""
        r = self.repl
        r.exec(_LARGEST)
        # Collected first: without it the free figure also lacked whatever
        # the loop allocated since its last idle collection and the REPL's
        # garbage from compiling _LARGEST (about 9 KB on the 16S board).
        return tuple(r.eval("(__import__('gc').collect(), __import__('gc').mem_free(), "
                            "_largest())[1:]"))

    def pystack_peak(self):
        """(deepest the Python call-frame stack has been since boot, its size), bytes.

        The board image keeps call frames on a pystack (boards/rp2/BMS_PICO/
        mpconfigboard.h), a static buffer that starts zeroed and is never
        cleared as frames are popped: the last non-zero word is the high-water
        mark.  Its place comes from the image's symbol table."""
        import subprocess
        elf = os.path.splitext(self.uf2)[0] + ".elf"
        out = subprocess.run(["arm-none-eabi-nm", "-S", elf], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) == 4 and f[3].startswith("bms_pystack"):
                addr, size = int(f[0], 16), int(f[1], 16)
                break
        else:
            raise RuntimeError("no bms_pystack in %s" % elf)
        self.repl.exec("import machine\n"
                       "def _hw(a=%d, n=%d):\n"
                       "    k = n - 1\n"
                       "    while k >= 0 and machine.mem32[a + 4 * k] == 0:\n"
                       "        k -= 1\n"
                       "    return (k + 1) * 4\n" % (addr, size // 4))
        return self.repl.eval("_hw()"), size

    def fragment(self, n=1500):
        """Fragment the heap the way long operation can: ``n`` pairs of small
        objects, every other one kept (about 48 KB held in 2-block pieces with
        2-block holes between them); ``fragment(0)`` lets them go."""
        if not n:
            self.repl.exec("_keep = None\nimport gc\ngc.collect()")
            return
        self.repl.exec("import gc\n_keep = [None] * %d\nfor _i in range(%d):\n"
                       "    _a = bytearray(12)\n    _b = bytearray(12)\n    _keep[_i] = _a\n"
                       "_a = _b = None\ngc.collect()" % (n, n))

    def modbus_turnaround(self, n=50, start=0, count=10, phases=None):
        """Last request byte to first reply byte on the PC port, ms, for ``n``
        read requests (03, ``count`` registers at ``start``) whose last byte
        ends at phases 0, 1, .. ms after a fast tick, rotating over the five
        fast ticks of a cell sweep (so the sweep and the slow task are hit
        too).  The fast tick is the firmware's read of the shunt ADC's current
        register; the request is put on the wire so that it ends that many ms
        after one, 250 ms or more after the previous request.  Times are the
        end of the last byte landing in the chip's RX FIFO to the start of the
        first byte it sends (both reported by the emulator).  ``phases``:
        the ms after a fast tick for each request instead (``n`` is then its
        length).  Returns [(turnaround ms, phase ms)]."""
        from comms.crc16 import crc16
        uid, _tx, _rx, _de = self.board.pins["rs485"]
        chip = self.board.chip
        seen = []
        landed = []
        ticks = []
        chip.uart_listeners[uid].append(lambda b, t: seen.append(t))
        chip.uart_in_listeners[uid].append(lambda b, t: landed.append(t))
        shunt = self.board.emu_shunt
        plain = shunt.readfrom_mem_into

        def on_read(addr, reg, buf):
            plain(addr, reg, buf)
            if reg == _INA228_CURRENT:
                ticks.append(chip.t_ns)
        shunt.readfrom_mem_into = on_read
        chip.rx_events(True)
        req = bytearray([1, 3, start >> 8, start & 0xFF, count >> 8, count & 0xFF])
        c = crc16(req)
        req += bytes([c & 0xFF, c >> 8])
        char_ns = 10 * 1e9 / 9600
        wire_ns = len(req) * char_ns
        r = self.repl
        # The tasks' timing is started afresh 0.9 s into the loop (after the
        # restart's precharge and first logs): what the requests cost the
        # tasks is read from bms.sched afterwards (``task_worst``).
        r.start("import app, machine, micropython\n"
                "def _settled(_):\n"
                "    app.APP.bms.sched.reset_timing()\n"
                "_tm = machine.Timer(mode=machine.Timer.ONE_SHOT, period=900, callback="
                "lambda t: micropython.schedule(_settled, 0))\n"
                "app.APP.run()")
        out = []
        try:
            self.run_ms(1000)
            if phases is not None:
                n = len(phases)
            for k in range(n):
                phase = k % 50 if phases is None else phases[k]
                self.run_ms(250)
                # The fast ticks are 50 ms apart: end on the one (k % 5) ticks
                # after the next that is far enough ahead to start sending.
                t = ticks[-1]
                end = t + (50 * (1 + k % 5) + phase) * 1e6
                while end - wire_ns < chip.t_ns + 1e5:
                    end += 250e6
                self.run_ms((end - wire_ns - chip.t_ns) / 1e6)
                del seen[:]
                del landed[:]
                chip.uart_send(uid, bytes(req))
                self.run_ms(60)
                if seen and len(landed) == len(req):
                    out.append(((seen[0] - char_ns - landed[-1]) / 1e6, phase))
        finally:
            r.interrupt()
            chip.rx_events(False)
            chip.uart_listeners[uid].pop()
            chip.uart_in_listeners[uid].pop()
            shunt.readfrom_mem_into = plain
        return out

    def task_worst(self):
        """{task: (worst ms, mean ms, runs)} from the scheduler's own timing
        since it was last reset (``modbus_turnaround`` resets it 0.9 s into
        its loop); read at the REPL after the loop stopped."""
        s = self.repl.eval("(list(__import__('app').APP.bms.sched.us_max), "
                           "list(__import__('app').APP.bms.sched.us_sum), "
                           "list(__import__('app').APP.bms.sched.timed))")
        return {name: (s[0][k] / 1000.0, s[1][k] / max(1, s[2][k]) / 1000.0, s[2][k])
                for k, name in enumerate(TASKS)}

    def reaction(self, relay, setup, trigger, release, within_ms, phases=(0,)):
        """Times from ``trigger(pack)`` to ``relay`` opening, ms, one per entry
        of ``phases`` (app running).  Each trial waits for the relay to be
        closed, then ``phase`` ms more, so the triggers fall at different
        points of the fast tick; the phase ``AFTER_SAMPLE`` triggers instead
        the instant the firmware has read the current register of the shunt
        ADC (the worst phase for a current fault: the step just misses a
        sample).  ``release(pack)`` undoes the trigger and the setup must let
        the fault clear by itself.  The opening is the pin's edge as the
        emulator reports it (exact, not polled)."""
        from bms.contactors import RELAY_NAMES
        r = self.repl
        if setup:
            r.exec(setup)
        pin = self.board.relay_pins[RELAY_NAMES.index(relay)]
        edges = []
        chip = self.board.chip
        open_level = 1 if self.board.relay_active_low else 0
        shunt = self.board.emu_shunt
        armed = []      # [None] while armed (AFTER_SAMPLE), then [t_ns of the trigger]
        plain = shunt.readfrom_mem_into

        def on_read(addr, reg, buf):
            plain(addr, reg, buf)
            if reg == _INA228_CURRENT and armed == [None]:
                armed[0] = chip.t_ns
                trigger(self.pack)

        def on_pin(p, level, t_ns):
            if p == pin:
                edges.append((level, t_ns))
        chip.pin_listeners.append(on_pin)
        shunt.readfrom_mem_into = on_read
        r.start("import app\napp.APP.run()")
        out = []
        try:
            for phase in phases:
                waited = 0
                while self.board.relay(relay) != 1:
                    self.run_ms(50)
                    waited += 50
                    if waited > 10000:
                        raise RuntimeError("%s did not close before the trigger" % relay)
                if phase == AFTER_SAMPLE:
                    self.run_ms(500)
                    del edges[:]
                    armed[:] = [None]
                    while armed == [None]:
                        self.run_ms(1)
                    t0 = armed[0]
                    del armed[:]
                else:
                    self.run_ms(500 + phase)
                    del edges[:]
                    t0 = chip.t_ns
                    trigger(self.pack)
                while chip.t_ns - t0 < within_ms * 1e6 and self.board.relay(relay) == 1:
                    self.run_ms(5)
                opened = [t for lvl, t in edges if int(lvl) == open_level]
                out.append((opened[0] - t0) / 1e6 if opened else None)
                release(self.pack)
        finally:
            r.interrupt()
            chip.pin_listeners.remove(on_pin)
            shunt.readfrom_mem_into = plain
        return out

    def close(self):
        self.board.close()


def set_params_modbus(runner, board, changes, password="123456"):
    """Set parameters through the board's RS485 PC port with the PC tool's
    client, while ``runner`` (a board, or anything with ``chip`` and
    ``run_ms``) runs in the background; checked by reading them back."""
    from bms.params import index
    from tools.bmsctl.client import BmsClient
    from tools.rp2emu.board import Background
    link = board.rs485 or board.open_rs485()
    with Background(runner):
        c = BmsClient(link.path, timeout=3.0, retries=2)
        try:
            c.unlock(password)
            c.set_params({index(k): v for k, v in changes.items()})
            got = {row["name"]: row["raw"] for row in c.params()}
        finally:
            c.close()
    for k, v in changes.items():
        if got[k] != v:
            raise RuntimeError("parameter %s is %r, not %r" % (k, got[k], v))


def set_params_code(changes):
    """REPL code that sets parameters the way the PC port does (validated)."""
    from bms.params import index
    lines = ["import app", "p = app.APP.bms.params"]
    for k, v in changes.items():
        lines.append("p.set(%d, %d)" % (index(k), v))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--board", default="pico", choices=("pico", "pico32", "slave_module", "master"))
    ap.add_argument("--cells", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args(argv)
    cells = a.cells or {"pico": 16, "pico32": 32, "slave_module": 16, "master": 256}[a.board]
    run = Run(a.board, cells)
    try:
        failed, running = run.boot()
        print(json.dumps({"failed": failed, "running": running, "heap_boot": run.heap(),
                          "window": run.window(a.seconds * 1000)}, indent=1))
    finally:
        run.close()


if __name__ == "__main__":
    main()
