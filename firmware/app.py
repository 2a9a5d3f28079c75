"""Board entry point: pick the board, build the whole product, run the loop.

Board selection, first match wins:
  1. ``config.py`` on the board filesystem: BOARD = "pico" | "pico_w" |
     "pico32" (17S-32S, two stacked BQ76952) | "esp32_devkit" |
     "slave_module", optional OPTS = {...} (see
     boards/common.py DEFAULTS: shunt_uohm, can_bitrate, can_xtal, ...),
     CHEMISTRY = 0..3 (NMC, LFP, LTO, NA) for first-boot defaults,
     MODULES = True for a master with CAN slave modules, SERIAL = "...",
     SLEEP = True to enable the idle sleep (LIGHTSLEEP = False: no
     machine.lightsleep while asleep, see drivers/lowpower.py),
     LEASE_SECRET = b"..." for a lease, CHARGER_CAN = True for the special
     charger on the CAN bus instead of the inverter protocol
  2. the platform: rp2 -> pico (pico_w if the firmware names a Pico W),
     esp32 -> esp32_devkit
A slave module board runs ``slave_main.run`` instead.

What a master is built from (each part by one small function below):
  core      settings loaded from the A/B store (bms.store) *before* the Bms
            exists, the Bms with the stored SOC, the persistent event log as
            the EventLog sink, the services poller (bms.services: saves
            params/state/log at a bounded rate, confirms a trial firmware)
  modbus    Modbus RTU server (comms.modbus_rtu + comms.registers + bms.auth)
            on ``hw["rs485"]``, address and baud from the parameters
  ttl       the display protocol (comms.display, also answering JBD ``DD``
            requests) on ``hw["ttl"]``, or the special-charger protocol
            (comms.charger) while parameter ``special_charger`` is 1; a
            board with its own charger RS485 (``hw["charger_port"]``) runs
            both at once
  slaves    with modules and flash: slave firmware packages uploaded over
            Modbus are forwarded over CAN (comms.slave_update), polled by
            MasterBoard.poll with bounded work per call
  can       the reference boards carry ONE MCP2515.  With ``MODULES`` set it
            is the internal bus to the slave modules (comms.can_master
            MasterBoard wraps the local board: cells from the modules,
            current, relays and local NTCs from the master PCB; module count
            from ``cell_count`` / ``module_cells``, 250 kbit/s); otherwise it
            talks the Pylontech protocol to an inverter (comms.inverter_can,
            500 kbit/s unless OPTS["can_bitrate"] says otherwise).  Both at
            once need a second CAN controller (see docs/wiring.md).
  ble       boards with a radio (``hw["ble"]``: pico_w, esp32_devkit; off
            with ``BLE = False`` in config.py): the same register map as
            Modbus - update and log windows included - behind the BLE
            framing (comms.ble_link), with the one ``Auth`` of the board on
            its own channel (CH_BLE): the same roles, lockout and back-off,
            but unlocking RS485 does not unlock Bluetooth.  The link is
            polled from the loop; the radio glue (comms.ble_aioble, needs
            micropython-lib's aioble: ``mpremote mip install aioble``) is a
            separate part ``ble_radio`` that runs as an asyncio task next
            to the control loop (``App.run`` switches to an asyncio loop
            when a part added a task).  Without aioble the part is skipped
            and the BMS runs as before.
  update    the incremental finish of a firmware update (bms.update): one
            bounded step per loop pass, whichever channel started it.
Only the core is essential.  Every optional part is built inside a guard:
if it raises, the error is printed, its name is put in ``APP.failed`` and the
product runs without it.  Pollers run after each ``bms.step()`` inside a
guard too (``APP.poll_errors`` counts), so a comms bug can never stop the
protection.

Loop timing: between passes the loop sleeps until the core's next deadline,
at most ``IDLE_MAX_MS`` (50, the fast task's period: the loop wakes for that
anyway), and wakes at once when a byte reaches the
RS485 or TTL UART (``select.poll``).  After input it stays in short sleeps
(``IDLE_BUSY_MS`` = 1) for ``IDLE_BUSY_HOLD_MS``, so the Modbus server sees
the end of a frame (t3.5: 3.65 ms at 9600 8N1) within a millisecond and
replies promptly; frame detection itself is safe at any poll period (see
comms.modbus_rtu).  A pass costs about 1.7 ms of CPU on an RP2040 (emulated
chip), so a loop that always spun every 2 ms spent half the CPU polling.
The CAN master must read the MCP2515's two RX buffers at least every 16 ms
(slave frames come every GAP_MS = 8 ms), so with modules the idle sleeps in
``IDLE_CAN_MS`` slices and serves only the bus between them, when it has
something to do (``_idle_can``); the core serves it between the steps of the
cell sweep and the slow task, and collections wait for the bus's quiet time
after the last slot.  A firmware-update finish keeps the loop in short sleeps
while it has steps to run.

Watchdog: boot.py starts it (long timeout) before the imports; here it is
set to ``WDT_MS`` and fed by ``bms.watchdog.Watchdog.feed_if_alive`` only
when the fast control task made progress without an exception.  A hang in
any driver or task resets the MCU: an RP2040's GPIO reset state leaves every
relay coil off; an ESP32 keeps its GPIO levels, and main.py drives the relay
pins off before this module is imported (boards.relays_off).  Ctrl-C at the REPL opens all relays, saves state and the
log, and leaves ``APP`` for ``import diag``.
"""
import gc
import sys
import time

from micropython import const

from bms.core import Bms, MODE_BOOT, MODE_PROTECT
from bms.eventlog import EventLog
from bms.params import P_CELL_COUNT, P_MODULE_CELLS, P_SPECIAL_CHARGER, ParamSet
from bms.params import TABLE as PARAM_TABLE
from bms.ticks import BoardClock, ticks_add, ticks_diff
from drivers import gpio

WDT_MS = 4000
IDLE_MAX_MS = 50
IDLE_BUSY_MS = 1
IDLE_BUSY_HOLD_MS = 200
FRAME_POLL_US = 250     # the PC port's poll while a request comes in (_idle_frame)
BUILD_ROOM_MS = 12      # a long task builds a Modbus reply only this far from the fast tick
_sleep_us = getattr(time, "sleep_us", None) or (lambda us: time.sleep(us / 1e6))  # CPython
IDLE_CAN_MS = 4         # a CAN master's idle slice: two RX buffers last 16 ms
IDLE_ASYNC_MS = 2        # the asyncio loop (BLE boards) polls the ports itself
UPDATE_IDLE_MS = 5       # a firmware-update finish step runs only with this much slack
GC_MIN_IDLE_MS = 20      # a collection takes 15 ms on an RP2040 (emulated chip, 240 KB heap)
GC_PERIOD_MS = 10000     # see collect_if_idle
GC_FORCE_MS = 30000      # a collection after this long even without an idle gap
GC_IDLE = hasattr(gc, "threshold")   # MicroPython; CPython tests leave gc alone
LOG_RAM = 128
APP = None


# The optional parts (``App.part``), one table: ``app.part(_PT_X, ...)``
# builds part PART_NAMES[_PT_X] and the persistent log names a failed part by
# the same index (PK_PART a; tools/eventlog_csv.py reads it back), so a part
# cannot be logged under a name the log does not know.  Append only.
PART_NAMES = ("settings", "state", "services", "persistlog", "updater", "lease", "sleep",
              "can_modules", "can_master", "slave_update", "inverter", "update_steps", "modbus",
              "ble", "ble_radio", "ttl", "soc_restore", "slots", "latches", "lowpower",
              "charger_can")
_PT_SETTINGS = const(0)
_PT_STATE = const(1)
_PT_SERVICES = const(2)
_PT_PERSISTLOG = const(3)
_PT_UPDATER = const(4)
_PT_LEASE = const(5)
_PT_SLEEP = const(6)
_PT_CAN_MODULES = const(7)
_PT_CAN_MASTER = const(8)
_PT_SLAVE_UPDATE = const(9)
_PT_INVERTER = const(10)
_PT_UPDATE_STEPS = const(11)
_PT_MODBUS = const(12)
_PT_BLE = const(13)
_PT_BLE_RADIO = const(14)
_PT_TTL = const(15)
_PT_SOC_RESTORE = const(16)
_PT_SLOTS = const(17)
_PT_LATCHES = const(18)
_PT_LOWPOWER = const(19)
_PT_CHARGER_CAN = const(20)


def report(what, e):
    """Print a caught exception without ever raising (MicroPython or CPython)."""
    try:
        print("%s: %s %r" % (what, type(e).__name__, e))
        pe = getattr(sys, "print_exception", None)
        if pe is not None:
            pe(e)
    except Exception:  # noqa: BLE001
        pass


def board_name(cfg=None):
    """config.py's BOARD, else the image's board, else the platform's
    (boards.board_name: main.py needs it before this module is imported)."""
    from boards import board_name as name_of
    return name_of(cfg)


def board_opts(cfg, modular):
    """Board options; the CAN bit rate follows the use of the one controller."""
    opts = dict(getattr(cfg, "OPTS", None) or {})
    if "can_bitrate" not in opts:
        from comms.can_ids import BITRATE
        opts["can_bitrate"] = BITRATE if modular else 500000
    return opts


def load_board(name, machine=None, opts=None):
    mod = __import__("boards." + name, None, None, ["build"])
    return mod.build(machine, opts)


class App:
    def __init__(self, hw, bms=None, clock=None):
        self.hw = hw
        self.bms = bms
        self.clock = clock
        self.pollers = []
        self.port_peek = None   # the PC port looked at between two pollers (start_modbus)
        self.wdt = None         # raw machine.WDT fed after each step (tests)
        self.dog = None         # bms.watchdog.Watchdog (main): fed only if alive
        self.services = None
        self.parts = {}         # name -> object, for diag and tests
        self.failed = []        # optional parts that could not be built
        self.oom = []           # ... of which for lack of memory
        self.poll_errors = 0
        self.loops = 0
        self.collections = 0
        self._gc_at = 0
        self.reset = None       # machine.reset on a board
        self.cfg = None
        self.fs = None
        self.tasks = []         # (name, fn returning a coroutine): run next to the loop
        self.idle_max = IDLE_MAX_MS
        self.gc_quiet = None     # () -> ms a collection may take now (a CAN master: bus quiet)
        self.can_serve = None    # (due, serve): a CAN master's bus, served while idle
        self.frame_serve = None  # (due_us, serve): a Modbus server mid-frame, see idle
        self.streams = []       # UARTs whose input ends an idle sleep early
        self._poller = None
        self._hurry = False
        self._busy_until = 0
        self.lowpower = None    # drivers.lowpower.LowPower (config SLEEP)

    def part(self, pt, fn, *args):
        """Build optional part ``pt`` (a _PT_* index of PART_NAMES); on any
        error log it, remember its name, return None."""
        name = PART_NAMES[pt]
        try:
            obj = fn(*args)
        except Exception as e:  # noqa: BLE001 - an optional part never stops the BMS
            report("part %s skipped" % name, e)
            self.failed.append(name)
            if isinstance(e, MemoryError):
                self.oom.append(name)
            return None
        if obj is not None:
            self.parts[name] = obj
        return obj

    def updater(self):
        """The firmware updater (bms.update), built on first use - an update
        window access, BLE, a test - around the boot-time ``slots`` part: its
        code and buffers are a few KB of heap a pack not being updated never
        holds.  None without flash."""
        up = self.parts.get("updater")
        if up is None and "slots" in self.parts:
            up = _updater(self.fs, getattr(self.cfg, "UPDATE_KEY", None), self.parts["slots"])
            self.parts[PART_NAMES[_PT_UPDATER]] = up
        return up

    def led_pattern(self):
        b = self.bms
        if b is None or b.mode == MODE_BOOT:
            return gpio.LED_BLIP
        if b.mode == MODE_PROTECT or b.prot.level >= 2:
            return gpio.LED_FAST
        return gpio.LED_SLOW

    def feed(self):
        if self.dog is not None:
            self.dog.feed_if_alive()
        elif self.wdt is not None:
            self.wdt.feed()  # only after a completed core step

    def step(self):
        """One loop pass; returns ms until the core's next deadline."""
        b = self.bms
        b.step()
        self.feed()
        peek = self.port_peek
        for p in self.pollers:
            try:
                p()
                if peek is not None:
                    peek()
            except Exception as e:  # noqa: BLE001 - comms must not stop control
                self.poll_errors += 1
                if self.poll_errors < 20:
                    report("poller", e)
        now = self.clock.ticks_ms()
        led = self.hw.get("led")
        if led is not None:
            led.step(now, self.led_pattern())
        if ticks_diff(self._busy_until, now) < 0:
            # Expired: held at now, so days without input never leave it
            # old enough to read as ahead (tick differences wrap at 6.2 days).
            self._busy_until = now
        self.loops = (self.loops + 1) & 0x3FFFFFFF   # a small int on every port
        return b.sched.ms_to_next()

    def save(self):
        """Everything to flash without resetting (Ctrl-C, tests)."""
        svc = self.services
        if svc is None or svc.stopped:
            return
        from bms.watchdog import R_SOFT
        reset = svc.reset
        svc.reset = None
        try:
            svc.shutdown(R_SOFT)
        finally:
            svc.reset = reset

    def hurry(self):
        """A poller with work left asks for the next pass soon."""
        self._hurry = True

    def asleep(self):
        """The sleep state machine opened the relays for sleep."""
        svc = self.services
        return svc is not None and svc.sleep is not None and svc.sleep.state == 1 \
            and svc._slept

    def _input_pending(self):
        """A watched UART has bytes, or had some within HOLD_MS: serve at full rate."""
        now = self.clock.ticks_ms()
        for u in self.streams:
            if u.any():
                self._busy_until = ticks_add(now, self.lowpower.HOLD_MS)
                return True
        return ticks_diff(self._busy_until, now) > 0

    def _sleep_idle(self, now):
        """One low-power wait while asleep; False: the normal idle applies
        (leaving sleep, or held awake after a wake-pin edge)."""
        lp = self.lowpower
        if not self.asleep():
            if lp.on:
                lp.leave()
            return False
        if not lp.on:
            lp.enter()
        if lp.woken():
            self._busy_until = ticks_add(now, lp.HOLD_MS)
        if ticks_diff(self._busy_until, now) > 0:
            return False
        if lp.lightsleep is not None:
            lp.lightsleep(lp.PASS_MS)   # a wake-pin edge ends it
            return True
        # A plain wait ends at no edge: in slices, so a press of the sleep
        # button shorter than the pass is still seen (its debounce needs two
        # reads, at full rate after the edge).
        e0 = lp.edges
        left = lp.PASS_MS
        poller = self._poller
        while left > 0 and lp.edges == e0:
            sl = left if left < lp.EDGE_MS else lp.EDGE_MS
            if poller is not None:
                if _woken(poller, sl):
                    self._busy_until = ticks_add(self.clock.ticks_ms(), lp.HOLD_MS)
                    break
            else:
                time.sleep_ms(sl)
            left -= sl
        return True

    def idle(self, wait):
        """Sleep up to ``wait`` ms (the core's next deadline), at most the idle
        cap; a byte on a watched port ends the sleep and keeps the loop quick
        for the rest of the exchange.  While the BMS sleeps: one pass a second
        in lightsleep (``drivers.lowpower``)."""
        cap = self.idle_max
        now = self.clock.ticks_ms()
        if self.lowpower is not None and self._sleep_idle(now):
            return
        if self.frame_in_flight():
            self._idle_frame(wait if wait < cap else cap)
            return
        if self._hurry or ticks_diff(self._busy_until, now) > 0:
            cap = IDLE_BUSY_MS
        self._hurry = False
        ms = wait if wait < cap else cap
        poller = self._poller
        if self.can_serve is not None and ms > IDLE_CAN_MS:
            self._idle_can(ms, poller)
        elif poller is None:
            time.sleep_ms(ms)
        elif _woken(poller, ms):
            self._busy_until = ticks_add(self.clock.ticks_ms(), IDLE_BUSY_HOLD_MS)

    def frame_in_flight(self):
        """A request is coming in on the PC port (or its reply is due): the
        idle serves it alone, and neither a collection nor a flash write
        (``Services.flash_busy``) starts meanwhile."""
        fs = self.frame_serve
        return fs is not None and fs[0]() >= 0

    def _idle_frame(self, ms):
        """A request is coming in on the PC port: serve only it (and a CAN
        master's bus) every FRAME_POLL_US, and at the end of its t3.5 silence
        to the microsecond, instead of a full pass (about 2.5 ms on an RP2040)
        each time: the reply (built ahead for a read) leaves within about a
        millisecond of t3.5.  Short sleeps, not a wait on the UART: below its
        FIFO's trigger level (4 bytes) a byte raises no interrupt, so the
        server would read the last bytes of a request up to a whole wait
        late, and it counts the silence from the read."""
        due_us, serve = self.frame_serve
        cs = self.can_serve
        clock = self.clock
        end = ticks_add(clock.ticks_ms(), ms)
        while ticks_diff(end, clock.ticks_ms()) > 0:
            d = due_us()
            if d < 0:
                return              # answered (or dropped): back to the loop
            _sleep_us(d if d < FRAME_POLL_US else FRAME_POLL_US)
            serve()
            if cs is not None and cs[0]():
                cs[1]()
        self._busy_until = ticks_add(clock.ticks_ms(), IDLE_BUSY_HOLD_MS)

    def _idle_can(self, ms, poller):
        """A CAN master's idle: sleeps of IDLE_CAN_MS, after each only the CAN
        protocol and only if it has something to do (its INT pin, outbox or
        SYNC).  A full loop pass with every poller costs ~2.6 ms on an RP2040;
        doing one every 2 ms for the bus took half the CPU of a 256S master."""
        due, serve = self.can_serve
        clock = self.clock
        end = ticks_add(clock.ticks_ms(), ms)
        while True:
            left = ticks_diff(end, clock.ticks_ms())
            if left <= 0:
                return
            sl = left if left < IDLE_CAN_MS else IDLE_CAN_MS
            if poller is None:
                time.sleep_ms(sl)
            elif _woken(poller, sl):
                self._busy_until = ticks_add(clock.ticks_ms(), IDLE_BUSY_HOLD_MS)
                return
            if due():
                serve()

    def collect_if_idle(self, wait):
        """Garbage-collect between tasks so a collection never lands inside one.

        A collection runs when the scheduler's next deadline is at least
        GC_MIN_IDLE_MS away and GC_PERIOD_MS have passed since the last one;
        after GC_FORCE_MS without such a gap it runs anyway (still between
        tasks: it may delay the next one, it never stretches one).  Time
        decides, not the amount allocated: on an RP2040 asking the heap
        (gc.mem_alloc / mem_free) walks the whole allocation table and costs
        9 ms, against 15 ms for the collection itself (emulated chip), so
        checking it every pass took most of the CPU.  ``gc.threshold`` is
        off (``main``): as a backstop it fired inside the fast task, at
        whatever allocation crossed it, and made a 5.5 ms task take 21 ms.
        MicroPython still collects by itself if an allocation would fail.
        Every 10 s: the steady loop allocates about 50 B/s and a Modbus read
        about 60 B (emulated chip), so a collection a second (1.5 % CPU)
        freed almost nothing; with 150 KB free, 10 s of even a busy PC
        tool's garbage is a few KB.
        True if it collected: the caller's ``wait`` is then out of date (an
        idle sleep of the old wait made the next fast tick 16 ms late).
        """
        if not GC_IDLE:
            return False
        if self.frame_in_flight():
            return False    # a request is coming in: its reply first
        q = self.gc_quiet
        if q is not None:
            qm = q()
            if qm < wait:
                wait = qm   # a CAN master: only while no module frame is due
        now = self.clock.ticks_ms()
        if self.collections:
            since = ticks_diff(now, self._gc_at)
            if since < GC_PERIOD_MS or (wait < GC_MIN_IDLE_MS and since < GC_FORCE_MS):
                return False
        elif wait < GC_MIN_IDLE_MS:
            return False
        gc.collect()
        self._gc_at = now
        self.collections += 1
        return True

    def run(self):
        try:
            if self.tasks:
                import asyncio
                asyncio.run(self.run_async())
            else:
                self._poller = stream_poller(self.streams)
                take = _take_interrupt()
                while True:
                    if take is not None:
                        take()
                    wait = self.step()
                    if self.collect_if_idle(wait):
                        wait = self.bms.sched.ms_to_next()   # the collection took some of it
                    if wait > 0:
                        self.idle(wait)
        finally:
            self.bms.contactors.open_all(self.clock.ticks_ms())
            try:
                self.save()
            except Exception as e:  # noqa: BLE001
                report("save", e)

    async def run_async(self, loops=None):
        """The loop as an asyncio task beside the parts' tasks (BLE radio).

        Cooperative: a part's task runs only while the loop awaits, so its
        code never interleaves with a control step; a task that ends with an
        exception is reported and dropped, the loop goes on.  ``loops``
        bounds the passes (tests)."""
        import asyncio
        sleep_ms = getattr(asyncio, "sleep_ms", None)
        if sleep_ms is None:    # CPython (host tests)
            def sleep_ms(ms):
                return asyncio.sleep(ms / 1000.0)
        for name, fn in self.tasks:
            asyncio.create_task(self._guarded(name, fn))
        take = _take_interrupt()
        n = 0
        while loops is None or n < loops:
            n += 1
            if take is not None:
                take()
            lp = self.lowpower
            # Input is checked before the step's pollers consume it.
            busy = lp is not None and lp.on and self._input_pending()
            wait = self.step()
            if self.collect_if_idle(wait):
                wait = self.bms.sched.ms_to_next()
            if lp is not None:
                # The radio stack needs the CPU: no lightsleep here, only the
                # AFE's low-power mode and one control pass a second.
                if self.asleep():
                    if not lp.on:
                        lp.enter()
                    if lp.woken():      # an edge (the sleep button): full rate
                        self._busy_until = ticks_add(self.clock.ticks_ms(), lp.HOLD_MS)
                        busy = True
                    if not busy:
                        # in slices: an edge ends the wait (see _sleep_idle)
                        e0 = lp.edges
                        left = lp.PASS_MS
                        while left > 0 and lp.edges == e0:
                            sl = left if left < lp.EDGE_MS else lp.EDGE_MS
                            await sleep_ms(sl)
                            left -= sl
                        continue
                elif lp.on:
                    lp.leave()
            await sleep_ms(0 if wait <= 0 else wait if wait < IDLE_ASYNC_MS else IDLE_ASYNC_MS)

    async def _guarded(self, name, fn):
        try:
            await fn()
        except Exception as e:  # noqa: BLE001 - an optional part never stops the BMS
            report("task %s stopped" % name, e)
            self.failed.append(name)


def _take_interrupt():
    """The check that raises a Ctrl-C a soft IRQ callback caught."""
    try:
        from drivers.softirq import take
    except ImportError:
        return None
    return take


def _woken(poller, ms):
    """Wait up to ``ms`` for input on a watched port; True if some came.
    ``poll.poll`` returns a new list every call, even an empty one: at the
    idle loop's 29 passes a second that was about 900 B/s of garbage on the
    chip, a collection's worth every three minutes.  ``ipoll`` hands out one
    reused tuple."""
    for _ in poller.ipoll(ms):
        return True
    return False


def stream_poller(streams):
    """select.poll over the watched UARTs (a board); None on the host."""
    if not streams or sys.platform not in ("rp2", "esp32"):
        return None
    import select
    p = select.poll()
    for s in streams:
        p.register(s, select.POLLIN)
    return p


def watch(app, uart):
    if uart is not None and uart not in app.streams:
        app.streams.append(uart)


# ---- the parts -------------------------------------------------------------
def board_fs():
    """The board's filesystem; None on the host (tests pass a fake flash)."""
    if sys.platform in ("rp2", "esp32"):
        from bms.store import BoardFs, move_legacy_data
        fs = BoardFs()
        try:
            move_legacy_data(fs)
        except OSError as e:
            report("data migration", e)
        return fs
    return None


def new_params(cfg, board, modular):
    from bms.params import CurrentRule, board_rules
    chem = getattr(cfg, "CHEMISTRY", 1)
    # The shunt's range bounds the current limits (its reading clips there).
    imax = getattr(board, "current_max_ma", 0)
    cur = CurrentRule(imax) if imax else None
    if modular:
        from comms.can_master import layout_rule
        return ParamSet(chem, max_cells=256, board_rule=board_rules(layout_rule, cur))
    lo = getattr(board, "min_cells", 0)
    rule = None
    if lo > PARAM_TABLE[P_CELL_COUNT][2]:     # above the table's own floor
        from bms.params import min_cells_rule
        rule = min_cells_rule(lo)
    return ParamSet(chem, max_cells=board.max_cells, board_rule=board_rules(rule, cur))


def open_settings(fs, params):
    """Stored settings into ``params`` (before the Bms exists); returns the store."""
    from bms.store import SettingsStore
    store = SettingsStore(fs)
    store.load_params(params)
    return store


def module_board(hw, params, clock, strict=True):
    """The local board as the CAN master of the slave modules.

    ``strict``: a CAN controller that does not start or a layout the
    parameters cannot give raises (the part is reported failed).  The
    fallback build (``strict=False``) never raises for them: its bus guard
    restarts the controller with back-off, and an impossible layout keeps
    the master's configuration invalid; either way the comm fault holds
    charge and discharge open and says why."""
    from comms.can_master import MasterBoard, layout
    lay = layout(params[P_CELL_COUNT], params[P_MODULE_CELLS])
    if lay is None and strict:
        raise ValueError("cell_count / module_cells give no module layout")
    can = hw["can"]
    if strict:
        can.init()
    return MasterBoard(can, hw["board"], lay[0] if lay is not None else 1,
                       max_cells=params.max_cells, now=clock.ticks_ms())


def start_core(app, board, params, store, machine):
    """The Bms with its persisted state and the services poller (if flash works)."""
    clock = app.clock
    log = EventLog(LOG_RAM)
    state = None
    if store is not None:
        state = app.part(_PT_STATE, store.load_state)
    soc_pm = state.soc_pm if state is not None else 500
    # Latched faults come back before anything can close: a restart never clears one.
    latched = app.part(_PT_LATCHES, store.load_latches) if store is not None else None
    if store is None and app.fs is not None:
        # The settings part failed (flash full or failing, no memory): the
        # latches on flash are read all the same, and as with settings that
        # cannot be read (bms.store) ``internal`` is latched: nothing closes
        # on settings nobody has read until someone resets.
        from bms.faults import INTERNAL
        from bms.store import SettingsStore
        latched = app.part(_PT_LATCHES, SettingsStore(app.fs).load_latches)
        if latched is not None and INTERNAL not in latched:
            latched.append(INTERNAL)
    if app.fs is not None and latched is None:
        # The latch record could not be read at all: it may have held a
        # critical latch.  Nothing closes until someone resets (store.py).
        from bms.faults import INTERNAL
        latched = [INTERNAL]
    bms = Bms(board, params, clock, log, soc_pm=soc_pm, latched=latched)
    if state is not None:
        # remaining charge, learned capacity, cycles, throughput (plausibility-checked)
        app.part(_PT_SOC_RESTORE, bms.soc.load_from, state)
    if store is not None:
        svc = app.part(_PT_SERVICES, start_services, app, bms, store, state, machine)
        if svc is not None:
            app.services = svc
            app.pollers.append(svc.poll)
    return bms


def start_services(app, bms, store, state, machine):
    from bms import persistlog as PL
    from bms import services as S
    from bms import watchdog as W
    from bms.store import F_CLEAN, State
    fs = store.fs
    reason = W.boot_reason(fs, getattr(machine, "reset_cause", None), machine)
    unclean = state is not None and not (state.flags & F_CLEAN)
    plog = app.part(_PT_PERSISTLOG, PL.PersistLog, fs)
    cfg = app.cfg
    # The marker half of the updater (trial confirm/reject, stale staged file);
    # the rest is built by App.updater() when an update starts.
    updater = app.part(_PT_SLOTS, _slots, fs)
    lease = None
    secret = getattr(cfg, "LEASE_SECRET", None)
    if secret:
        from bms import lease as LS
        st = state if state is not None else State()
        state = st
        lease = app.part(_PT_LEASE, LS.Lease, secret, getattr(cfg, "SERIAL", ""), st)
    sleep = None
    if getattr(cfg, "SLEEP", False):
        from bms import sleep as SL
        b = bms.board
        # Wake sources besides the periodic wake: a sleep key or a charger sense.
        has = getattr(b, "sleep_key", None) is not None or \
            getattr(b, "charger_in", None) is not None
        sleep = app.part(_PT_SLEEP, SL.Sleep, 30 * 60000, 200, 500, 3000, True, SL.PERIOD_MS,
                         SL.RECHECK_MS, has)
    svc = S.Services(bms, store, state if state is not None else State(), plog, lease, sleep,
                     None, updater, app.reset, unclean, reason)
    svc.confirm_ms = getattr(cfg, "UPDATE_CONFIRM_MS", svc.confirm_ms)
    if sys.platform in ("rp2", "esp32"):
        svc.flash_room = bms.fast_room_ms   # flash writes right after a fast tick
    return svc


def _slots(fs):
    from bms import romslot
    if romslot.partition() is not None:
        s = romslot.slots(fs)       # the application lives in ROMFS slots (boot.py)
    else:
        from bms.fwslot import Slots
        s = Slots(fs)
    s.drop_stage()
    s.take_boot_event()   # boot.py's swap / rollback: the services log it
    return s


def _updater(fs, key=None, slots=None):
    """The firmware updater; with ``UPDATE_KEY`` (bytes or hex str) in config.py
    every package must carry a valid HMAC-SHA256 signature made with it."""
    if isinstance(key, str):
        import binascii
        key = binascii.unhexlify(key)
    from bms import romslot
    part = romslot.partition()
    if part is not None:
        from bms.romupdate import RomUpdater
        return RomUpdater(fs, part, key=key or None, slots=slots)
    from bms.update import Updater
    return Updater(fs, key=key or None, slots=slots)


def auth_store(fs):
    if fs is None:
        return {}
    from bms.kvstore import KvStore
    return KvStore(fs)


def shared_auth(app):
    """The board's one Auth (passwords, roles per channel, lockout) for every channel."""
    auth = app.parts.get("auth")
    if auth is None:
        from bms.auth import Auth
        auth = Auth(app.clock, shared_kv(app))
        app.parts["auth"] = auth
    return auth


def shared_kv(app):
    kv = app.parts.get("kv")
    if kv is None:
        kv = auth_store(app.fs)
        app.parts["kv"] = kv
        svc = app.services
        if svc is not None and hasattr(kv, "flush"):
            # Written by the services right after a fast tick, not from the
            # request handler that changed it (bms.kvstore).
            kv.hold = True
            svc.kv = kv
    return kv


def device_info(app, machine):
    info = app.parts.get("info")
    if info is None:
        from comms.regs.identity import DeviceInfo
        # Persisted in the board's key/value store: identity, Bluetooth and
        # device names, battery code fields survive a restart.
        info = DeviceInfo(serial=serial_number(app.cfg, machine), store=shared_kv(app))
        app.parts["info"] = info
    return info


def register_map(app, machine, channel):
    """One port's view of the register map, update and log windows attached."""
    from comms.registers import RegisterMap
    regs = RegisterMap(app.bms, shared_auth(app), device_info(app, machine), channel=channel)
    regs.services = app.services   # lease and flash log (None without flash)
    regs.attach_update(plog=app.parts.get("persistlog"),
                       updater_of=app.updater if "slots" in app.parts else None)
    fwd_of = app.parts.get("slave_update")
    if fwd_of is not None:   # slave modules updated through this master
        regs.attach_slave_update(fwd_of)
    return regs


def start_modbus(app, machine):
    from bms.auth import CH_MODBUS
    from bms.core import LOOK_BUILD, LOOK_READ, LOOK_SMALL
    from comms.modbus_rtu import ModbusRTU
    bms = app.bms
    regs = register_map(app, machine, CH_MODBUS)
    port = app.hw["rs485"]
    mb = ModbusRTU(port, regs, app.clock, params=bms.params)

    # First after the core's step: a request that ended during a task is
    # read and answered before the other pollers (the services poller may
    # start a flash write that holds the loop 45 ms).
    app.pollers.insert(0, mb.poll)
    # Mid-frame (this pass read the bytes, so the UART poll will not wake the
    # idle sleep): the idle serves the server alone until its reply is out
    # (App._idle_frame), not at the next task (up to 50 ms later).
    app.frame_serve = (mb.due_us, mb.poll)
    svc = app.services
    if svc is not None and svc.flash_room is not None:
        svc.flash_busy = app.frame_in_flight   # no erase under a request (bms.services)
    # Inside the core's long tasks too: a reply whose t3.5 is over goes out
    # between their steps instead of after the task (8-10 ms on an RP2040),
    # and a request that arrived meanwhile is read, so its silence counts
    # from there; its reply is built by the loop after the task.
    inner = bms.service
    due_us = mb.due_us
    in_task = mb.poll_in_task
    pending = mb.build_pending
    any_in = port.any
    room = bms.fast_room_ms

    # Runs inside control tasks: whatever the port raises stays here (the
    # server's own poll never raises), the task's step goes on.  ``build``
    # (bms.core LOOK_*): LOOK_BUILD (a long task, or the fast task's last
    # look once the protection's work is done): a read's reply is built here
    # too when the fast tick is far enough away for a long build; LOOK_SMALL
    # (the fast task, its protection step done): that of a small read only.
    def port_service(build=LOOK_READ):
        try:
            if due_us() == 0 or any_in() or (build and pending()):
                in_task(build == LOOK_BUILD and room() >= BUILD_ROOM_MS, build == LOOK_SMALL)
        except Exception:  # noqa: BLE001
            mb.internal_errors += 1

    def service():
        if inner is not None:
            inner()
        port_service(LOOK_BUILD)

    bms.service = service
    # Between two pollers too (each takes up to a few ms: CAN, the
    # services): a request that ended meanwhile is read and built at once.
    poll = mb.poll

    def peek():
        if any_in():
            poll()
    app.port_peek = peek
    # And between the steps of the fast task: reads and a due send only.
    # The timed poll (a soft timer) sends inside it too, about 0.4 ms.
    bms.port_service = port_service

    watch(app, getattr(port, "uart", None))
    return mb


def start_ble(app, machine):
    """The BLE link (framing, auth, live monitor) on boards with a radio."""
    if not app.hw.get("ble") or getattr(app.cfg, "BLE", True) is False:
        return None
    from bms.auth import CH_BLE, ROLE_USER
    from comms import ble_link as BL
    from comms.modbus_pdu import ModbusPdu
    regs = register_map(app, machine, CH_BLE)
    # A name set over Modbus (names block) or BLE is stored under the link's
    # key and wins over this one (BleLink reads it).
    name = getattr(app.cfg, "BLE_NAME", None) or "MPY-BMS"
    link = BL.BleLink(ModbusPdu(regs, app.clock), app.clock, live=BL.monitor_live(regs),
                      auth=shared_auth(app), store=shared_kv(app),
                      name=name.encode() if isinstance(name, str) else name,
                      channel=CH_BLE, user_role=ROLE_USER)
    app.pollers.append(link.poll)
    return link


def start_ble_radio(app, link):
    """The GATT glue as an asyncio task (needs aioble on the board)."""
    from comms import ble_aioble

    def task():
        return ble_aioble.run(link)

    app.tasks.append((PART_NAMES[_PT_BLE_RADIO], task))
    return ble_aioble


def serial_number(cfg, machine):
    s = getattr(cfg, "SERIAL", None)
    if s:
        return s
    try:
        u = machine.unique_id()
        return "".join(["%02X" % b for b in u[-6:]])
    except Exception:  # noqa: BLE001
        return ""


def start_ttl(app):
    """Display (and JBD) protocol, or the special charger while the parameter says so."""
    port = app.hw.get("ttl")
    if port is None:
        return None
    from comms.display import DisplayPort
    bms = app.bms
    svc = app.services
    disp = DisplayPort(port, bms, app.clock, jbd=True,
                       lease=svc.lease if svc is not None else None)
    params = bms.params
    parts = app.parts
    cport = app.hw.get("charger_port")
    if cport is not None:
        # A board with its own RS485 for the charger: display and special
        # charger at the same time, each on its port.
        def poll_both():
            disp.poll()
            if params[P_SPECIAL_CHARGER]:
                _charger(app, port=cport).poll()

        parts["display"] = disp
        app.pollers.append(poll_both)
        watch(app, port)
        watch(app, getattr(cport, "uart", None))
        return poll_both

    def poll_ttl():
        if params[P_SPECIAL_CHARGER]:
            _charger(app, port=port).poll()
        else:
            disp.poll()

    parts["display"] = disp
    app.pollers.append(poll_ttl)
    watch(app, port)
    return poll_ttl


def _charger(app, port=None, can=None):
    """The special charger, built the first time it is needed."""
    chg = app.parts.get("charger")
    if chg is None:
        from comms.charger import Charger
        chg = Charger(app.bms, app.clock, port=port, can=can)
        app.parts["charger"] = chg
    return chg


def start_charger_can(app):
    """The special charger on the CAN bus (config CHARGER_CAN): 29-bit Elcon
    frames; it commands "stop" while parameter special_charger is 0."""
    can = app.hw["can"]
    can.init()
    chg = _charger(app, can=can)
    app.pollers.append(chg.poll)
    return chg


def start_inverter(app):
    from comms.inverter_can import InverterCan
    can = app.hw["can"]
    can.init()
    inv = InverterCan(can, app.bms, app.clock)
    app.pollers.append(inv.poll)
    return inv


def start_modules(app, mboard):
    """The CAN master protocol runs in the loop, as often as possible."""
    mboard.bind(app.bms)
    due = mboard.due
    service = mboard.service

    def poll_modules():
        if due():        # a pin read when the bus has nothing for us
            service()

    app.pollers.insert(0, poll_modules)
    app.can_serve = (mboard.due, mboard.service)
    app.gc_quiet = mboard.quiet_ms
    return mboard


SLAVE_PKG = "/fw/slave.pkg"   # bms.pkgstore: the slave package staged on this master


def start_slave_update(app, mboard):
    """Slave packages staged on this master's flash and forwarded over CAN
    (background).  Returns ``fwd_of()``: the forwarder is built on first use
    of the slave update window, so a master that never updates its slaves
    does not hold its modules and buffers (about 5 KB of heap)."""
    made = []
    if app.fs is not None:
        # A package file left by a reset mid-upload (the staged state lives in
        # RAM): up to 1 MB that would keep the littlefs full under the latch,
        # settings and state records until the window is next used.
        try:
            app.fs.remove(SLAVE_PKG)
        except OSError:
            pass

    def fwd_of():
        if not made:
            from bms.pkgstore import PackageStore
            from comms.slave_update import SlaveUpdater
            fwd = SlaveUpdater(mboard.master, PackageStore(app.fs, SLAVE_PKG), app.bms)
            mboard.master.fw = fwd     # polled by MasterBoard.poll, bounded work per call
            made.append(fwd)
        return made[0]

    return fwd_of


def start_update_steps(app):
    """The incremental finish of a firmware update: one bounded step per loop
    pass (``bms.update.Updater.finish_step``), only while the next control
    deadline is at least ``UPDATE_IDLE_MS`` away; the outcome goes to the
    persistent log."""
    if "slots" not in app.parts:
        return None
    sched = app.bms.sched
    plog = app.parts.get("persistlog")
    clock = app.clock
    parts = app.parts

    def poll_update():
        up = parts.get("updater")    # built when an update starts
        if up is not None and (up.phase or up._f is not None):
            app.hurry()              # finish steps, or the next chunk answered sooner
        if up is not None and up.phase and sched.ms_to_next() >= UPDATE_IDLE_MS:
            from bms import update as U
            r = up.finish_step()
            if r != U.FS_BUSY and plog is not None:
                from bms.persistlog import PK_UPDATE
                plog.append(clock.ticks_ms(), PK_UPDATE, up.event, up.active)

    app.pollers.append(poll_update)
    return poll_update


def start_restart_fallback(app):
    """Without the services poller a restart command still restarts (relays open first)."""
    if app.services is not None or app.reset is None:
        return None
    bms = app.bms

    def poll_restart():
        if bms.restart_requested:
            bms.contactors.open_all(app.clock.ticks_ms())
            app.reset()

    app.pollers.append(poll_restart)
    return poll_restart


def build(name=None, machine=None, cfg=None, clock=None, params=None, fs=None):
    """Construct the application without starting the loop (tests, REPL).

    ``fs`` is the flash filesystem (the board's own when None on a board;
    none on the host unless a test passes a fake flash).
    """
    name = name or board_name(cfg)
    modular = bool(getattr(cfg, "MODULES", False))
    hw = load_board(name, machine, board_opts(cfg, modular))
    app = App(hw, None, None)
    app.cfg = cfg
    if hw["kind"] != "master":
        return app
    app.clock = clock or BoardClock()
    app.fs = fs if fs is not None else board_fs()
    app.reset = getattr(machine, "reset", None)
    board = hw["board"]
    if params is None:
        params = new_params(cfg, board, modular)
    store = app.part(_PT_SETTINGS, open_settings, app.fs, params) if app.fs is not None else None
    attach = getattr(board, "attach_backstop", None)
    if attach is not None:   # the AFE's hardware backstop follows the parameters
        from bms.backstop import Backstop
        attach(Backstop(params, cells=not modular))
    board.init(min(params[P_CELL_COUNT], board.max_cells))  # failures: retried by the reads
    core_board = board
    if modular:
        mb = app.part(_PT_CAN_MODULES, module_board, hw, params, app.clock)
        if mb is None:
            # Never the master's own board instead: its AFE does not measure
            # the pack's cells (and cell_count may exceed it: no core at all).
            mb = module_board(hw, params, app.clock, False)
            app.parts[PART_NAMES[_PT_CAN_MODULES]] = mb
        core_board = mb
    app.bms = start_core(app, core_board, params, store, machine)
    if core_board is not board:
        app.part(_PT_CAN_MASTER, start_modules, app, core_board)
        if app.fs is not None:
            app.part(_PT_SLAVE_UPDATE, start_slave_update, app, core_board)
    elif not modular:
        if getattr(cfg, "CHARGER_CAN", False):
            # One controller, one bit rate: the Elcon charger's 250 kbit/s
            # bus instead of the inverter's.
            app.part(_PT_CHARGER_CAN, start_charger_can, app)
        else:
            app.part(_PT_INVERTER, start_inverter, app)
    app.part(_PT_UPDATE_STEPS, start_update_steps, app)
    app.part(_PT_MODBUS, start_modbus, app, machine)
    link = app.part(_PT_BLE, start_ble, app, machine)
    if link is not None:
        app.part(_PT_BLE_RADIO, start_ble_radio, app, link)
    app.part(_PT_TTL, start_ttl, app)
    if app.services is not None and app.services.sleep is not None:
        app.lowpower = app.part(_PT_LOWPOWER, start_lowpower, app, machine)
    start_restart_fallback(app)
    if app.services is not None and app.failed:
        log_failed_parts(app)
    return app


def start_lowpower(app, machine):
    """AFE low-power mode and lightsleep while the BMS sleeps; wake-pin edges
    end a lightsleep (config LIGHTSLEEP = False keeps plain idle waits)."""
    from drivers.lowpower import LowPower
    ls = getattr(machine, "lightsleep", None) if getattr(app.cfg, "LIGHTSLEEP", True) else None
    pins = []
    for n in app.hw.get("wake_pins", ()):
        try:
            pins.append(machine.Pin(n))   # no mode: a UART's RX pin keeps its function
        except (AttributeError, TypeError, ValueError):
            pass
    return LowPower(app.hw["board"], ls, pins)


def log_failed_parts(app):
    """Every part that did not build goes into the persistent log, so a user
    finds out why a port is silent; out of memory is this firmware's fault,
    not the board's, so a trial update in that state is rejected (bms.services)."""
    from bms import persistlog as PL
    svc = app.services
    if app.oom:
        svc.degraded = tuple(app.oom)
    if svc.plog is None:
        return
    now = app.clock.ticks_ms()
    for name in app.failed:
        why = PL.PART_OOM if name in app.oom else PL.PART_ERROR
        k = PART_NAMES.index(name) if name in PART_NAMES else -1   # every name comes from it
        svc.plog.append(now, PL.PK_PART, k, why)


def start_watchdog(app, ms=WDT_MS):
    from bms.watchdog import Watchdog
    wdt = app.hw["wdt"](ms)
    app.dog = Watchdog(wdt, app.bms.sched, app.clock, bms=app.bms)
    return app.dog


def main():
    global APP
    try:
        import config as cfg
    except ImportError:
        cfg = None
    import machine
    name = board_name(cfg)
    if name == "slave_module":
        import slave_main
        slave_main.run()
        return
    APP = build(name, machine=machine, cfg=cfg)
    if APP.bms is None:  # a slave board named otherwise
        import slave_main
        slave_main.run(APP.hw)
        return
    start_watchdog(APP)
    if GC_IDLE:
        gc.threshold(-1)   # collections by time only (collect_if_idle)
    APP.run()


if __name__ == "__main__":
    main()
