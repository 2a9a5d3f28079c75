"""Board entry for a slave module: ``import slave_main; slave_main.run()``
(or copy as main.py on the slave's filesystem).

The board file (``boards/slave_module.py``, branch ``drivers``) builds the
machine objects and drivers; this loop only wires them to ``slave.core``
(and ``slave.fw`` for firmware updates through the master).

Watchdog: the verify + unpack of a firmware update (on the master's FINISH)
runs as bounded steps of ``Updater.finish_step``, one per loop pass
(``SlaveFw._finish_work``), so the loop keeps feeding the ``WDT_MS``
watchdog and sending its frames.  A reset mid-finish (power cut) leaves the
old firmware; the master then reports the slave as not answering.

Settings live in ``slave.json`` on the module: ``addr`` (0 = take the DIP
switch; DIP all off = auto-address), ``cells`` and ``locked`` (the TOPBMS
"button 1": while locked the master cannot change the cell count).  The
cell count the master sets while unlocked is saved there.
"""
import gc
import time

from slave.core import Slave
from slave.afe import SlaveAfe
from bms.ticks import TICKS_MAX, ticks_diff
from comms.can_ids import LF_DEFAULTS, MAX_MODULE_CELLS, MAX_MODULES, MIN_MODULE_CELLS
# At module level: ``from drivers import gpio`` inside led_pattern, once per
# loop pass, allocated 16 B each time on the chip (about 11 KB/s: the heap
# was full every 15 s or so, and MicroPython collected in the middle of a
# pass, 11 ms, while CAN frames waited).
from drivers.gpio import LED_BLIP, LED_FAST, LED_SLOW

SETTINGS = "slave.json"
WDT_MS = 2000
LOOP_MS = 1        # CAN RX is polled every pass: frames come one per GAP_MS
SLEEP_LOOP_MS = 50
SAVE_CHECK_MS = 5000
# Garbage collection between steps (loop, gc_due), like the master's
# (app.App.collect_if_idle): without it MicroPython collects when an
# allocation finds the heap full, at whatever allocates then, a step
# included, while frames wait in the MCP2515's two RX buffers.
GC_MIN_IDLE_MS = 20      # a collection takes about 11.4 ms here (emulated chip, 190 KB free)
GC_PERIOD_MS = 10000
GC_FORCE_MS = 30000      # a collection after this long even without a quiet gap
GC_IDLE = hasattr(gc, "threshold")   # MicroPython; CPython tests pass their own collect


def load_settings():
    """The module's settings; a missing, torn or out-of-range file gives the
    defaults for what is wrong (the loop must start: an exception here
    would reset the module every 8 s from the boot watchdog)."""
    import json
    d = {"addr": 0, "cells": 16, "locked": False}
    for path in (SETTINGS, SETTINGS + ".new"):
        try:
            with open(path) as f:
                s = json.load(f)
            addr = int(s.get("addr", d["addr"]))
            cells = int(s.get("cells", d["cells"]))
            return {"addr": addr if 0 <= addr <= MAX_MODULES else d["addr"],
                    "cells": cells if MIN_MODULE_CELLS <= cells <= MAX_MODULE_CELLS
                    else d["cells"],
                    "locked": bool(s.get("locked", d["locked"]))}
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    return d


def save_settings(s):
    """Written beside the old file, then renamed over it (littlefs renames
    atomically): a power cut leaves the old settings or the new ones, never
    a torn file.  ``.new`` is read if a cut came between the two steps on a
    filesystem whose rename is not atomic."""
    import json
    import os
    try:
        with open(SETTINGS + ".new", "w") as f:
            json.dump(s, f)
        os.rename(SETTINGS + ".new", SETTINGS)
    except OSError:
        pass


def dip_address(machine, pins):
    """DIP switches to ground (pull-ups): value v -> address v; 0 -> auto."""
    v = 0
    for bit, n in enumerate(pins):
        p = machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP)
        if not p.value():
            v |= 1 << bit
    return v


def uid48(machine):
    u = machine.unique_id()
    v = 0
    for b in u[-6:]:
        v = (v << 8) | b
    return v or 1


def build_slave(hw, machine, st, now):
    """``slave.core.Slave`` on the board's CAN controller and AFE (the real slave entry)."""
    from boards import slave_module as bd
    can = hw["can"]
    try:
        can.init()
    except OSError:
        pass    # the slave's bus guard restarts it with back-off
    addr = st["addr"] or dip_address(machine, bd.PINS.get("addr_pins", ()))
    afe = SlaveAfe(hw["afe"], hw["ntcs"])
    return Slave(can, afe, addr=addr, cells=st["cells"], temps=len(hw["ntcs"]),
                 uid=uid48(machine), locked=st["locked"], now=now)


def attach_update(slave, machine, now, fs=None):
    """Firmware update over CAN (slave.fw) on the module's own flash
    (``fs``: the board's littlefs when None).

    boot.py already selected the slot (an applied update becomes a trial, one
    staged but never applied is dropped);
    ``UPDATE_KEY`` in config.py (bytes or hex) makes every package need a
    valid signature made with it.  Without a filesystem the slave runs on.
    """
    try:
        from slave.fw import SlaveFw
        from bms.store import BoardFs
        from bms.update import Updater
        try:
            import config
            key = getattr(config, "UPDATE_KEY", None)
        except ImportError:
            key = None
        if isinstance(key, str):
            import binascii
            key = binascii.unhexlify(key)
        fs = fs if fs is not None else BoardFs()
        from bms import romslot
        part = romslot.partition()
        if part is not None:
            # The module's own image has a ROMFS partition: the package is its
            # ROMFS application (fwpkg --romfs --board slave_module): slave_main
            # and what it imports (the frozen main.py and app dispatch to it).
            from bms.romupdate import RomUpdater
            up = RomUpdater(fs, part, key=key or None, entry="slave_main.mpy")
        else:
            up = Updater(fs, key=key or None)
        slave.fw = SlaveFw(slave, up, reset=getattr(machine, "reset", None), now=now)
    except Exception as e:  # noqa: BLE001 - the measurements matter more than updates
        print("slave update unavailable:", e)


def led_pattern(slave):
    if slave.sleeping or not slave.sync_seen:
        return LED_BLIP
    if slave.faults & ~LF_DEFAULTS:
        return LED_FAST
    return LED_SLOW


def loop(slave, wdt, led, st, now, collect=None, clock=None, passes=None):
    """The slave loop from ``now`` on: the slave's step, the watchdog, the
    LED, the settings save and the idle collection, then the pass's sleep.

    One function with its state in locals: an object holding the state,
    stepped by a method call per pass, cost 57 us more per pass than the
    same work inline, this function 4 us (emulated RP2040, about 700 passes
    a second, a pass about 340 us).  Nothing in a steady pass allocates
    (test_slave_loop_alloc runs it with the heap locked on the board's
    drivers).  Tests: ``clock`` has ticks_ms() and sleep_ms(ms) for the
    time module's, ``passes`` ends the loop after that many passes,
    ``collect`` stands for gc.collect."""
    if clock is None:
        ticks_ms = time.ticks_ms
        sleep_ms = time.sleep_ms
    else:
        ticks_ms = clock.ticks_ms
        sleep_ms = clock.sleep_ms
    if collect is None and GC_IDLE:
        collect = gc.collect
    step = slave.step
    feed = wdt.feed
    last_save = now
    gc_at = now
    while passes is None or passes > 0:
        if passes is not None:
            passes -= 1
        now = ticks_ms() & TICKS_MAX
        step(now)
        feed()
        if led is not None:
            led.step(now, led_pattern(slave))
        if ticks_diff(now, last_save) >= SAVE_CHECK_MS:
            last_save = now
            if slave.cells != st["cells"]:
                st["cells"] = slave.cells
                save_settings(st)
        if collect is not None:
            since = ticks_diff(now, gc_at)
            if since >= GC_PERIOD_MS and gc_due(slave, now, since):
                collect()
                gc_at = now
        sleep_ms(SLEEP_LOOP_MS if slave.sleeping else LOOP_MS)


def gc_due(slave, now, since):
    """A collection between steps, so that none lands inside one: asked
    every pass from GC_PERIOD_MS after the last one (``since`` ms ago) on,
    it is due once the slave is quiet for GC_MIN_IDLE_MS (no frame of its
    slot, no sample, no SYNC due: Slave.quiet_ms), or after GC_FORCE_MS
    without such a gap (between steps still).  The steady loop allocates
    nothing, so this only gathers what events left (the AFE configured for
    a new cell count, a settings save, a firmware update) before it could
    fill the heap."""
    return since >= GC_FORCE_MS or slave.quiet_ms(now) >= GC_MIN_IDLE_MS


def run(hw=None, machine=None):
    """The slave loop; ``hw`` from ``boards.slave_module.build`` (built here if None)."""
    if machine is None:
        import machine
    if hw is None:
        from boards import slave_module as bd
        hw = bd.build(machine)
    st = load_settings()
    now = time.ticks_ms() & TICKS_MAX
    slave = build_slave(hw, machine, st, now)
    attach_update(slave, machine, now)
    loop(slave, hw["wdt"](WDT_MS), hw.get("led"), st, now)
