"""Optional board inputs reach the core on every build, a master with CAN
modules included (its board wraps the master's own one).

Rules under test, as documented:
* docs/safety.md: a relay whose readback disagrees with its command raises
  ``relay_weld`` (latched, critical): level 2 opens.  The readback inputs are
  the board's ``relay_fb`` pins (docs/wiring.md).
* docs/power_lease_clock.md: one-key sleep is the sleep button (board pin
  ``sleep_key``) held 3 s; asleep, a press of it wakes the BMS.
* bms.core: a charge-port sense (``charger_sense``) says a charger is there.
"""
import pytest

import boards.pico as pico
from test_app_wiring import Rig

from bms import faults as F
from bms.contactors import RELAY_DSG, RELAY_L2
from bms.params import P_DSG_SWITCH


class Modular:
    MODULES = True


class Single:
    pass


class ModularSleep:
    MODULES = True
    SLEEP = True


class SingleSleep:
    SLEEP = True


def _virtual_rig(monkeypatch, cfg):
    """A Rig whose inputs debounce on its virtual clock (boards.common takes
    the board's time.ticks_ms, the wall clock under CPython)."""
    import boards.common as BC
    from bms.ticks import ticks_diff
    box = []
    monkeypatch.setattr(BC, "_ticks",
                        lambda: ((lambda: box[0].ticks_ms() if box else 0), ticks_diff))
    rig = Rig(cfg=cfg)
    box.append(rig.clock)
    return rig


def _pin(n):
    import drv_fakemachine as FM
    return FM.Pin.registry[n]


def _run_with_contact(rig, ms, welded):
    """The discharge contactor's auxiliary contact (GP6 to GND when closed)
    follows its coil (GP10), or stays closed when welded."""
    fb = _pin(6)
    coil = _pin(pico.PINS["relays"][RELAY_DSG])
    for _ in range(ms):
        fb.v = 0 if (welded or coil.v) else 1
        rig.run(1)


@pytest.mark.parametrize("cfg", [Single, Modular], ids=["single", "modular"])
def test_relay_readback_disagreeing_opens_level2(monkeypatch, cfg):
    monkeypatch.setitem(pico.PINS, "relay_fb", (6,))
    rig = Rig(cfg=cfg)
    bms = rig.app.bms
    _run_with_contact(rig, 2000, False)
    assert bms.contactors.state[RELAY_L2] == 1
    assert not bms.prot.active(F.RELAY_WELD)
    bms.params.set_many([(P_DSG_SWITCH, 0)])      # discharge commanded open
    _run_with_contact(rig, 200, False)
    assert bms.contactors.state[RELAY_DSG] == 0
    assert not bms.prot.active(F.RELAY_WELD)
    # 3 readback checks, one per cell sweep (250 ms; 500 ms on a master with
    # modules) + 500 ms + a fast tick
    _run_with_contact(rig, 2100, True)
    assert bms.prot.active(F.RELAY_WELD)
    assert bms.contactors.state[RELAY_L2] == 0


@pytest.mark.parametrize("cfg", [SingleSleep, ModularSleep], ids=["single", "modular"])
def test_sleep_button_held_3s_sleeps_and_a_press_wakes(monkeypatch, cfg):
    import app as main
    monkeypatch.setitem(pico.PINS, "sleep_key", 6)
    rig = _virtual_rig(monkeypatch, cfg)
    monkeypatch.setattr(main.time, "sleep_ms", lambda ms: rig.clock.advance(ms), raising=False)
    app = rig.app
    rig.fm.lightsleep = rig.clock.advance
    app.lowpower.lightsleep = rig.clock.advance
    assert 6 in app.hw["wake_pins"]
    rig.run(1000)
    assert not app.asleep()
    key = _pin(6)
    key.v = 0                    # pressed (to GND)
    rig.run(2000)
    assert not app.asleep()      # not yet 3 s
    rig.run(1200)
    assert app.asleep()
    assert app.bms.sleep_requested
    key.v = 1                    # released: it stays asleep
    rig.run(2000)
    assert app.asleep()
    key.v = 0                    # a press wakes it
    rig.run(300)
    assert not app.asleep()


def test_charger_sense_reaches_the_core_on_a_master_with_modules(monkeypatch):
    monkeypatch.setitem(pico.PINS, "charger_sense", 7)
    rig = _virtual_rig(monkeypatch, Modular)
    bms = rig.app.bms
    rig.run(200)
    now = rig.clock.ticks_ms()
    assert not bms.charger_present(now)
    _pin(7).v = 1
    rig.run(2100)                # read by the slow task (1 s), debounced
    assert bms.charger_present(rig.clock.ticks_ms())


@pytest.mark.parametrize("loop", ["lightsleep", "plain", "asyncio"])
def test_a_short_press_of_the_sleep_button_wakes_it_between_sleep_passes(monkeypatch, loop):
    # docs/power_lease_clock.md: asleep, a press of the sleep button wakes the
    # BMS, whatever the loop waits in between its passes (one a second):
    # machine.lightsleep (an edge ends it), a plain wait (LIGHTSLEEP = False)
    # or the asyncio loop of the BLE boards.  Before, only lightsleep heard a
    # press shorter than the wait: the others read the button once a second
    # and its 50 ms debounce needs two reads, so a 300 ms press never woke it.
    import asyncio

    import app as main
    from bms.core import CMD_SLEEP
    from bms.ticks import ticks_diff
    monkeypatch.setitem(pico.PINS, "sleep_key", 6)
    rig = _virtual_rig(monkeypatch, SingleSleep)
    app = rig.app
    lp = app.lowpower
    key = _pin(6)
    events = []          # (tick, level) of the button pin, in order

    def wait(ms, ended_by_edge=False):
        e0 = lp.edges
        for _ in range(ms):
            rig.clock.advance(1)
            now = rig.clock.ticks_ms()
            while events and ticks_diff(now, events[0][0]) >= 0:
                key.drive(events.pop(0)[1])
            if ended_by_edge and lp.edges != e0:
                return

    async def fake_sleep(s):
        wait(int(s * 1000))

    monkeypatch.setattr(main.time, "sleep_ms", wait, raising=False)
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    lp.lightsleep = (lambda ms: wait(ms, True)) if loop == "lightsleep" else None

    def passes(n):
        if loop == "asyncio":
            asyncio.run(app.run_async(loops=n))
        else:
            for _ in range(n):
                w = app.step()
                if w > 0:
                    app.idle(w)

    rig.run(1000)
    app.bms.request(CMD_SLEEP, 1)
    rig.run(200)
    assert app.asleep()
    passes(12)           # past the command's busy hold: one pass a second
    t = rig.clock.ticks_ms()
    passes(1)
    assert ticks_diff(rig.clock.ticks_ms(), t) >= 900     # really a sleep pass
    t = rig.clock.ticks_ms()
    # Right after a pass: the next wait covers the whole press.
    events[:] = [((t + 200) & 0x3FFFFFFF, 0), ((t + 500) & 0x3FFFFFFF, 1)]   # to GND, 300 ms
    for _ in range(200):
        passes(1)
        if not app.asleep() or ticks_diff(rig.clock.ticks_ms(), t) > 5000:
            break
    assert not app.asleep(), loop
    assert ticks_diff(rig.clock.ticks_ms(), t) <= 1500
