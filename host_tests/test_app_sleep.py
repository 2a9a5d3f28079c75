"""Real sleep on the board build (issue 16, item 2): the sleep command puts
the AFE into its SLEEP mode and the loop into lightsleep, one control pass a
second; a wake-pin edge (UART RX, key, AFE alert) holds it out of
lightsleep so a retried request is served; waking restores the AFE."""
from test_app_wiring import Rig

from bms.core import CMD_SLEEP, CMD_WAKE
from bms.params import P_SLEEP_IDLE, P_SLEEP_CURRENT
from drivers.lowpower import LowPower as LP


class Cfg:
    SLEEP = True


def _rig(monkeypatch):
    import app as main
    rig = Rig(cfg=Cfg)
    slept = []
    # A plain idle wait passes virtual time too (CPython has no sleep_ms).
    monkeypatch.setattr(main.time, "sleep_ms", lambda ms: rig.clock.advance(ms), raising=False)

    def lightsleep(ms):
        slept.append(ms)
        rig.clock.advance(ms)   # the chip stops for that long

    rig.fm.lightsleep = lightsleep
    rig.app.lowpower.lightsleep = lightsleep
    return rig, slept


def test_sleep_command_enters_afe_sleep_and_lightsleep_and_wake_leaves_it(monkeypatch):
    rig, slept = _rig(monkeypatch)
    app = rig.app
    assert app.lowpower is not None and "lowpower" not in app.failed
    rig.run(2000)
    bq = rig.fm.bq
    assert not bq.sleep_enabled
    app.bms.request(CMD_SLEEP, 1)
    rig.run(200)
    assert app.asleep()
    app.idle(app.step())
    assert bq.sleep_enabled            # the AFE in its low-power mode
    assert slept == [LP.PASS_MS]       # the MCU in lightsleep for one pass
    fast = app.bms.sched.runs[1]
    for _ in range(5):
        app.idle(app.step())
    assert app.bms.sched.runs[1] - fast <= 6   # one control pass per second, not 20
    # An edge on a wake pin (the first byte of a Modbus request): no lightsleep
    # for HOLD_MS, so the client's retry is heard.
    app.lowpower.irq()
    t_edge = rig.clock.ticks_ms()
    n = len(slept)
    app.idle(app.step())
    assert len(slept) == n
    while len(slept) == n and rig.clock.ticks_ms() - t_edge < LP.HOLD_MS + 100:
        app.idle(app.step())
    assert rig.clock.ticks_ms() - t_edge >= LP.HOLD_MS
    assert len(slept) == n + 1
    # Wake over the bus: relays may close again, the AFE back to NORMAL.
    app.bms.request(CMD_WAKE, 1)
    rig.run(200)
    assert not app.asleep()
    app.idle(app.step())
    assert not bq.sleep_enabled
    assert len(slept) == n + 1


def test_smart_sleep_follows_its_parameters(monkeypatch):
    rig, slept = _rig(monkeypatch)
    app = rig.app
    p = app.bms.params
    p.set_many([(P_SLEEP_IDLE, 1), (P_SLEEP_CURRENT, 500)])
    rig.run(2000)
    sl = app.services.sleep
    assert sl.idle_ms == 60000 and sl.idle_ma == 500 and sl.smart
    p.set_many([(P_SLEEP_IDLE, 0)])
    rig.run(10)
    assert not sl.smart


def test_asyncio_loop_sleeps_the_afe_but_serves_uart_input_at_full_rate(monkeypatch):
    """BLE boards run the asyncio loop: no lightsleep there, one pass a second
    while asleep, full rate again while a watched UART has input."""
    import asyncio
    rig, slept = _rig(monkeypatch)
    app = rig.app
    rig.run(2000)
    app.bms.request(CMD_SLEEP, 1)
    rig.run(200)
    assert app.asleep()
    waits = []

    async def fake_sleep(s):
        waits.append(int(s * 1000))
        rig.clock.advance(int(s * 1000))

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    asyncio.run(app.run_async(loops=3))
    # one pass a second (its wait in slices that an edge could end)
    assert rig.fm.bq.sleep_enabled and sum(waits) == 3 * LP.PASS_MS and slept == []
    rig.rs485.rx += b"\x01\x03"   # a request arriving
    waits.clear()
    asyncio.run(app.run_async(loops=3))
    assert sum(waits) < LP.PASS_MS and rig.fm.bq.sleep_enabled   # still asleep, serving


def test_sleep_after_a_week_without_input_still_uses_lightsleep(monkeypatch):
    # drivers/lowpower.py: while asleep, one control pass a second in
    # lightsleep unless a wake-pin edge or a byte came within HOLD_MS.  The
    # loop's "busy until" stamp is a tick deadline: a week without any input
    # must not make it read as ahead again (tick differences wrap after
    # 2**29 ms, 6.2 days) and keep the MCU awake at full rate.
    rig, slept = _rig(monkeypatch)
    app = rig.app
    rig.run(2000)
    for _ in range(7):
        rig.clock.advance(86400000)   # a day at a time, the loop running between
        rig.run(100)
    app.bms.request(CMD_SLEEP, 1)
    rig.run(200)
    assert app.asleep()
    n = len(slept)
    app.idle(app.step())
    assert len(slept) == n + 1 and slept[-1] == LP.PASS_MS


def _with_load(monkeypatch):
    """The app rig with a load on the discharge path: its current flows only
    through the closed discharge relay (or, ``path``, whatever the relays)."""
    from bms.contactors import RELAY_DSG
    rig, slept = _rig(monkeypatch)
    bms = rig.app.bms
    box = {"load": 0, "path": False}

    def run(ms, hist=None):
        for _ in range(ms):
            c = box["load"] if (box["path"] or bms.contactors.state[RELAY_DSG]) else 0
            rig.fm.ina.source.current = c
            rig.fm.bq.source.current = c
            rig.run(1)
            if hist is not None:
                hist.append(bms.contactors.state[RELAY_DSG])
    return rig, box, run


def test_sleep_under_load_is_not_undone_by_the_current_before_the_relays_opened(monkeypatch):
    # bms/sleep.py, docs/power_lease_clock.md: asleep, current of wake_ma or
    # more wakes the BMS where a path still conducts with the relays open.
    # The sample taken before the relays opened is no such path: the sleep
    # command under a 10 A load woke the BMS at the next poll (cause
    # "current") and the discharge relay, opened under load, closed again
    # 0.1 s later.
    from bms import sleep as SL
    rig, box, run = _with_load(monkeypatch)
    app = rig.app
    run(3000)
    box["load"] = -10000
    run(2000)
    assert app.bms.contactors.state[0] == 1 and app.bms.meas.current_ma == -10000
    app.bms.request(CMD_SLEEP, 1)
    hist = []
    run(5000, hist)
    assert app.asleep(), SL.CAUSE_NAMES[app.services.sleep.cause]
    assert 1 not in hist[200:], "discharge relay closed again"
    # A path that does conduct with the relays open still wakes it.
    box["path"] = True
    run(3000)
    assert not app.asleep()
    assert app.services.sleep.cause == SL.C_CURRENT


def test_a_sleep_command_while_charging_is_refused_and_no_relay_moves(monkeypatch):
    # docs/power_lease_clock.md (Sleep): a charger wakes a sleeping BMS, so a
    # sleep asked for while one is there would open the charge relay under
    # the charge current and close it again at once.  The command is refused
    # with its reason and the relays stay as they are.
    from bms.contactors import RELAY_CHG
    from bms.core import CMD_REASONS
    rig, _slept = _rig(monkeypatch)
    app = rig.app
    bms = app.bms
    hist = []

    def run(ms):
        for _ in range(ms):
            c = 20000 if bms.contactors.state[RELAY_CHG] else 0
            rig.fm.ina.source.current = c
            rig.fm.bq.source.current = c
            rig.run(1)
            hist.append(bms.contactors.state[RELAY_CHG])
    run(3000)
    assert bms.contactors.state[RELAY_CHG] and bms.meas.current_ma > 15000
    del hist[:]
    bms.request(CMD_SLEEP, 1)
    run(3000)
    assert not app.asleep()
    assert 0 not in hist, "the charge relay opened"
    assert bms.cmd_status == 3 and "charger" in CMD_REASONS[bms.cmd_reason]
