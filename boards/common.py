"""Shared wiring recipe for the board files: machine objects in, drivers out.

A board file (pico.py, esp32_devkit.py, ...) is a pin table plus a call to
``build_master`` or ``build_slave``; this module and the board files are the
only places that construct ``machine`` objects.  ``machine`` is passed in
so host tests can build a board on fakes or on the chip emulators.

Returned dict (the application picks what it needs):
    kind      "master" or "slave"
    board     drivers.hwboard.HwBoard (master) - the core's board interface
    afe, shunt, ntcs
    afes      the BQ76952 drivers, bottom first (two on a stacked board)
    i2c_top   the top chip's isolated bus (stacked boards), else absent
    can       drivers.mcp2515.MCP2515 (not yet initialised: call init())
    rs485     drivers.rs485.Rs485 on the PC port (LC-3 485A/B)
    ttl       machine.UART on the display port (LC-2 TX/RX)
    led       drivers.gpio.StatusLed or None
    wdt(ms)   factory for machine.WDT (started only by main.py)
    ble       True on boards with a Bluetooth radio (set by the board file)
"""
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER
from drivers import gpio
from drivers.bq76952 import BQ76952
from drivers.hwboard import HwBoard
from drivers.ina228 import INA228
from drivers.mcp2515 import MCP2515
from drivers.ntc import Beta, Ntc, NtcTable
from drivers.rs485 import Rs485, char_bits

ROLES = {"power": ROLE_POWER, "balance": ROLE_BALANCE, "cell": ROLE_CELL}
DEFAULTS = {
    "shunt_uohm": 100,          # 0.1 mOhm: 500 A shunt with 50 mV full scale
    "shunt_max_ma": 1600000,    # picks the INA228 range: 163.84 mV / 100 uOhm = 1638.4 A,
                                # the board's current range (params.CurrentRule)
    "ntc_r25": 10000.0, "ntc_beta": 3950.0, "ntc_series": 10000.0,
    "can_bitrate": 250000, "can_xtal": 8000000,
    "modbus_baud": 9600, "modbus_format": "8N1", "ttl_baud": 9600,
    "afe_crc": True, "cells": 16,
    "ntc_unfitted": (),
}


def _opt(opts, key):
    return opts[key] if opts and key in opts else DEFAULTS[key]


# The RS485 line formats (Modbus over serial line V1.02, 2.5.1: even parity
# is required, odd and none may be used, none with two stop bits): option
# ``modbus_format`` -> machine.UART's parity (None, 0 even, 1 odd) and stop.
MODBUS_FORMATS = {"8N1": (None, 1), "8E1": (0, 1), "8O1": (1, 1), "8N2": (None, 2)}


def modbus_format(opts):
    """(parity, stop) of the option ``modbus_format`` (any case).  An unknown
    one runs 8N1 and says so: a typo in config.py must not stop the BMS from
    booting (its protection does not need the PC port)."""
    f = _opt(opts, "modbus_format")
    f = f.upper() if isinstance(f, str) else f
    if f not in MODBUS_FORMATS:
        print("modbus_format %r unknown (8N1, 8E1, 8O1, 8N2): 8N1" % (f,))
        f = "8N1"
    return MODBUS_FORMATS[f]


def _out(machine, n, value=0):
    return machine.Pin(n, machine.Pin.OUT, value=value)


def _in(machine, n, pull_up=True):
    return machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP if pull_up else None)


def _ticks():
    import time
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms, time.ticks_diff
    from bms.ticks import ticks_diff  # host (CPython) tests
    return (lambda: int(time.monotonic() * 1000) & 0x3FFFFFFF), ticks_diff


def _sleep_us(machine):
    """The wait the chip drivers need between some bus accesses (data-sheet
    times, microseconds): time.sleep_us on a board.  A fake ``machine`` may
    bring its own virtual one, so host tests never sleep on the wall clock."""
    f = getattr(machine, "sleep_us", None)
    if f is None:
        import time
        f = time.sleep_us
    return f


def build_i2c(machine, pins, key="i2c"):
    bus_id, sda, scl, freq = pins[key]
    return machine.I2C(bus_id, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)


def build_can(machine, pins, opts):
    bus_id, sck, mosi, miso = pins["spi"]
    spi = machine.SPI(bus_id, baudrate=8000000, polarity=0, phase=0,
                      sck=machine.Pin(sck), mosi=machine.Pin(mosi), miso=machine.Pin(miso))
    cs = _out(machine, pins["can_cs"], 1)
    irq = pins.get("can_int")
    if irq is not None:
        irq = machine.Pin(irq, machine.Pin.IN, machine.Pin.PULL_UP)
    return MCP2515(spi, cs, xtal_hz=_opt(opts, "can_xtal"), bitrate=_opt(opts, "can_bitrate"),
                   wait_us=_sleep_us(machine), int_pin=irq)


def fitted_ntcs(pins, opts):
    """The board's NTC inputs (``pins["ntc"]``) less those the option
    ``ntc_unfitted`` names (1-based, in the table's order: docs/wiring.md).
    An input without its NTC reads open, a sensor fault that keeps the
    relays open, so a pack built with fewer sensors says so here.  At least
    one cell NTC must stay; an option that would leave none, or names an
    input the board does not have, is not applied (every input stays, the
    missing NTC shows as open) and says why: a typo must never remove a
    sensor the pack has."""
    table = pins["ntc"]
    off = _opt(opts, "ntc_unfitted")
    if not off:
        return table
    try:
        ok = all(isinstance(n, int) and 1 <= n <= len(table) for n in off)
        keep = tuple(e for i, e in enumerate(table) if (i + 1) not in off)
    except TypeError:       # not a tuple or list of numbers
        ok = False
        keep = ()
    if not ok or not any(role == "cell" for _p, role in keep):
        print("ntc_unfitted %r not applied (inputs 1..%d, at least one cell NTC left): "
              "every NTC input is read" % (off, len(table)))
        return table
    return keep


def build_ntcs(machine, pins, opts, adc_wrap=None, inputs=None):
    table = NtcTable(Beta(_opt(opts, "ntc_r25"), _opt(opts, "ntc_beta")),
                     r_series=_opt(opts, "ntc_series"))
    out = []
    for pin, role in (pins["ntc"] if inputs is None else inputs):
        adc = machine.ADC(machine.Pin(pin))
        if adc_wrap is not None:
            adc = adc_wrap(adc)
        out.append((Ntc(adc, table), ROLES[role]))
    return out


def _soft_timer(machine):
    """A virtual one-shot timer (rp2: id -1), or None where there is none."""
    t = getattr(machine, "Timer", None)
    if t is None:
        return None
    try:
        return t(-1)
    except (ValueError, TypeError, OSError):
        return None


def build_ports(machine, pins, opts):
    uid, tx, rx, de = pins["rs485"]
    baud = _opt(opts, "modbus_baud")
    parity, stop = modbus_format(opts)
    # txbuf holds a whole Modbus reply (256 B): the write returns at once and
    # a timer releases DE (drivers.rs485).  The character's bits (11 with a
    # parity bit or a second stop bit) set the server's t1.5 / t3.5.
    u = machine.UART(uid, baudrate=baud, bits=8, parity=parity, stop=stop,
                     tx=machine.Pin(tx), rx=machine.Pin(rx), txbuf=512)
    # rx_timer: the arrival watch, so a request read late inside a task is
    # timed from its arrival (drivers.rs485).
    rs485 = Rs485(u, _out(machine, de, 0), baud, bits=char_bits(8, parity, stop),
                  timer=_soft_timer(machine), later_timer=_soft_timer(machine),
                  rx_timer=_soft_timer(machine))
    ttl = None
    if pins.get("ttl"):
        uid, tx, rx = pins["ttl"]
        ttl = machine.UART(uid, baudrate=_opt(opts, "ttl_baud"), tx=machine.Pin(tx),
                           rx=machine.Pin(rx))
    return rs485, ttl


def _key_in(machine, pins, name, ticks_ms, ticks_diff, active_low=True):
    """The debounced input ``pins[name]`` (gpio.Key), or None where the board
    has none.  Active low: a contact to GND, the internal pull-up on."""
    n = pins.get(name)
    if n is None:
        return None
    return gpio.Key(_in(machine, n, active_low), ticks_ms, ticks_diff, active_low=active_low)


def build_master(machine, pins, opts=None, adc_wrap=None):
    ticks_ms, ticks_diff = _ticks()
    i2c = build_i2c(machine, pins)
    stacked = bool(pins.get("i2c_top"))
    wait_us = _sleep_us(machine)
    afe = BQ76952(i2c, crc=_opt(opts, "afe_crc"), cells=16 if stacked else _opt(opts, "cells"),
                  wait_us=wait_us)
    afes = [afe]
    # The BQ76952 die sits next to its internal bleed FETs: balance temperature.
    afe_temps = [(0, ROLE_BALANCE)]
    cells = _opt(opts, "cells")
    top_i2c = None
    if stacked:
        # Stacked single board (17S-32S): the top BQ76952 on its own,
        # isolated bus (same address 0x08); AfeStack splits the cells.
        # Imported here so single-chip boards do not spend heap on it.
        from drivers.afe_stack import AfeStack
        top_i2c = build_i2c(machine, pins, "i2c_top")
        afes.append(BQ76952(top_i2c, crc=_opt(opts, "afe_crc"), cells=3, wait_us=wait_us))
        afe = AfeStack(afes)
        afe_temps.append((4, ROLE_BALANCE))   # the top chip's die (its own bleed FETs)
        cells = opts["cells"] if opts and "cells" in opts else afe.max_cells
    uohm = _opt(opts, "shunt_uohm")
    shunt = INA228(i2c, shunt_uohm=uohm, max_current_ma=_opt(opts, "shunt_max_ma"))
    ntcs = build_ntcs(machine, pins, opts, adc_wrap, fitted_ntcs(pins, opts))
    relays = build_relays(machine, pins)
    for n in pins.get("hold_low", ()):
        # A pin of an earlier layout (esp32_devkit: the old precharge pin):
        # an output at 0, so a board not yet rewired keeps that relay open.
        _out(machine, n, 0)
    buzzer = gpio.Buzzer(_out(machine, pins["buzzer"], 0)) if pins.get("buzzer") is not None else None
    key = _key_in(machine, pins, "key", ticks_ms, ticks_diff)
    sleep_key = _key_in(machine, pins, "sleep_key", ticks_ms, ticks_diff)  # push button
    led = None
    if pins.get("led") is not None:
        led = gpio.StatusLed(machine.Pin(pins["led"], machine.Pin.OUT))
    # The charge-port voltage divider: active high, no pull-up.
    charger = _key_in(machine, pins, "charger_sense", ticks_ms, ticks_diff, False)
    alert = None
    if pins.get("shunt_alert") is not None:   # INA228 ALERT, open drain, active low
        alert = gpio.Alert(_in(machine, pins["shunt_alert"]), ticks_ms)
    conf = {"cells": cells, "shunt_uohm": uohm}
    board = HwBoard(afe, shunt, ntcs, relays, buzzer, key, led=led, afe_conf=conf,
                    afe_temps=afe_temps, pack_source="afe", load_source="shunt",
                    charger=charger, alert=alert, sleep_key=sleep_key)
    rs485, ttl = build_ports(machine, pins, opts)
    hw = {"kind": "master", "board": board, "afe": afe, "afes": afes, "shunt": shunt,
          "ntcs": ntcs, "can": build_can(machine, pins, opts), "rs485": rs485, "ttl": ttl,
          "led": led, "i2c": i2c, "wdt": lambda ms: machine.WDT(timeout=ms)}
    if top_i2c is not None:
        hw["i2c_top"] = top_i2c
    if pins.get("charger_rs485"):
        # A second RS485 (RS485-1) for the special charger: the display keeps
        # the TTL port.
        uid, tx, rx, de = pins["charger_rs485"]
        u = machine.UART(uid, baudrate=9600, bits=8, parity=None, stop=1,
                         tx=machine.Pin(tx), rx=machine.Pin(rx))
        hw["charger_port"] = Rs485(u, _out(machine, de, 0), 9600, timer=_soft_timer(machine))
    hw["wake_pins"] = wake_pins(pins)
    if hasattr(machine, "RTC"):
        board.rtc_of = machine.RTC   # built when the clock is first set (drivers.rtc)
    return hw


def build_relays(machine, pins):
    """The five relay outputs (J1 discharge, J2 precharge, J3 charge, J4
    level-2, JR heater), each with its readback input where the board's
    ``relay_fb`` names one (a contactor's auxiliary contact, or a sense of the
    coil driver's output; ``relay_fb_active_low``: the contact pulls the
    input to GND, the default).  Without readback a welded relay is found by
    its current alone (docs/safety.md)."""
    low = pins.get("relay_active_low", False)
    fbs = pins.get("relay_fb") or ()
    fb_low = pins.get("relay_fb_active_low", True)
    relays = []
    for k, n in enumerate(pins["relays"]):
        fb = fbs[k] if k < len(fbs) else None
        # Outputs start de-energised: value chosen so the coil is off at boot.
        relays.append(gpio.Relay(_out(machine, n, 1 if low else 0), active_low=low,
                                 fb_pin=_in(machine, fb, fb_low) if fb is not None else None,
                                 fb_active_low=fb_low))
    return relays


def wake_pins(pins):
    """Pin numbers whose edges end a lightsleep (drivers.lowpower): key, AFE
    alert, charger sense, and the RX pins of the UARTs (RS485, display,
    charger).  Numbers only: the app builds the Pin objects when sleep is
    configured, so a board without it spends no heap on them."""
    nums = [pins.get("key"), pins.get("sleep_key"), pins.get("afe_alert"),
            pins.get("charger_sense")]
    for port in ("rs485", "ttl", "charger_rs485"):
        if pins.get(port) is not None:
            nums.append(pins[port][2])
    return tuple(n for n in nums if n is not None)


def build_slave(machine, pins, opts=None):
    i2c = build_i2c(machine, pins)
    afe = BQ76952(i2c, crc=_opt(opts, "afe_crc"), cells=_opt(opts, "cells"),
                  wait_us=_sleep_us(machine))
    led = None
    if pins.get("led") is not None:
        led = gpio.StatusLed(machine.Pin(pins["led"], machine.Pin.OUT))
    return {"kind": "slave", "afe": afe, "ntcs": build_ntcs(machine, pins, opts),
            "can": build_can(machine, pins, opts), "led": led, "i2c": i2c,
            "wdt": lambda ms: machine.WDT(timeout=ms)}
