"""docs/wiring_<board>.svg: one wiring picture per board, drawn from its ``PINS`` table.

The MCU on the left with every pin the board's table uses; on the right the
chips and the TOPBMS ports each pin goes to, one wire per pin.  Drawn with
schemdraw (``make docs``); the table in ``boards/<board>.py`` is the only
source, so a new pin appears in the picture by itself, and
host_tests/test_wiring_svg.py fails if a pin of a table is missing from its
picture.  The details between pin and port (level shifters, drivers,
isolation) are in docs/wiring.md.
"""
import importlib
import os

import tools  # noqa: F401  (boards/ on sys.path)

BOARDS = ("pico", "pico_w", "pico32", "esp32_devkit", "slave_module")
TITLES = {
    "pico": "Raspberry Pi Pico master (boards/pico.py)",
    "pico_w": "Raspberry Pi Pico W master (boards/pico_w.py)",
    "pico32": "Pico 17S-32S single board, two BQ76952 (boards/pico32.py)",
    "esp32_devkit": "ESP32 DevKit master (boards/esp32_devkit.py)",
    "slave_module": "CAN slave module (boards/slave_module.py)",
}
RELAYS = ("J1 discharge", "J2 precharge", "J3 charge", "J4 level-2", "JR heater")


def pin_name(board, pin):
    if isinstance(pin, str):
        return pin
    return ("GPIO%d" if board.startswith("esp32") else "GP%d") % pin


def connections(board, pins):
    """[(pin, signal, target)]: every pin of ``pins`` (a board's PINS), where it goes."""
    out = []

    def add(pin, signal, target):
        if pin is not None:
            out.append((pin, signal, target))
    afe = "BQ76952 + INA228 (I2C)" if board != "slave_module" else "AFE (I2C)"
    if "i2c" in pins:
        _id, sda, scl = pins["i2c"][:3]
        add(sda, "I2C%d SDA" % _id, afe)
        add(scl, "I2C%d SCL" % _id, afe)
    if "i2c_top" in pins:
        _id, sda, scl = pins["i2c_top"][:3]
        add(sda, "I2C%d SDA" % _id, "ISO1640 -> top BQ76952")
        add(scl, "I2C%d SCL" % _id, "ISO1640 -> top BQ76952")
    can = "MCP2515 + CAN transceiver (LC-3 CANH/CANL)"
    if "spi" in pins:
        _id, sck, mosi, miso = pins["spi"]
        add(sck, "SPI%d SCK" % _id, can)
        add(mosi, "SPI%d MOSI" % _id, can)
        add(miso, "SPI%d MISO" % _id, can)
    add(pins.get("can_cs"), "CAN CS", can)
    add(pins.get("can_int"), "CAN INT", can)
    if "rs485" in pins:
        u, tx, rx, de = pins["rs485"]
        t = "RS485 transceiver -> LC-3 485A/B (PC, Modbus)"
        add(tx, "UART%d TX" % u, t)
        add(rx, "UART%d RX" % u, t)
        add(de, "DE/RE", t)
    if "ttl" in pins:
        u, tx, rx = pins["ttl"]
        t = "level shifter -> LC-2 TTL (display / JBD)"
        add(tx, "UART%d TX" % u, t)
        add(rx, "UART%d RX" % u, t)
    for k, (pin, role) in enumerate(pins.get("ntc", ())):
        port = {"power": "LC-5 JT", "cell": "LC-4 T%d" % k}.get(role, role)
        if board == "slave_module":
            port = "LC-7 T%d" % k
        add(pin, "ADC NTC %s" % role, "NTC divider -> " + port)
    for k, pin in enumerate(pins.get("relays", ())):
        add(pin, "relay %s" % RELAYS[k].split()[1], "relay driver -> LC-5 %s" % RELAYS[k])
    for pin in pins.get("hold_low", ()):
        add(pin, "held low", "not connected (an earlier layout's relay pin)")
    add(pins.get("buzzer"), "buzzer", "transistor -> LC-2 buzzer")
    add(pins.get("key"), "key K", "opto-coupler <- LC-2 K")
    add(pins.get("afe_alert"), "AFE ALERT", "BQ76952 ALERT")
    add(pins.get("shunt_alert"), "shunt ALERT", "INA228 ALERT (over-current onset)")
    add(pins.get("led"), "status LED", "LED")
    for k, pin in enumerate(pins.get("addr_pins", ())):
        add(pin, "address bit %d" % k, "module address DIP switch")
    return out


def draw(board):
    """The SVG text of ``board``'s picture."""
    import schemdraw
    schemdraw.use("svg")
    data = build(board).get_imagedata("svg")
    return data.decode() if isinstance(data, bytes) else data


def build(board):
    """``board``'s picture as a schemdraw Drawing (in the current backend)."""
    import schemdraw
    import schemdraw.elements as elm
    pins = importlib.import_module("boards." + board).PINS
    conns = connections(board, pins)
    mcu = "ESP32 DevKit" if board.startswith("esp32") else (
        "Pico W" if board == "pico_w" else "RP2040 Pico")
    targets = []
    for _p, _s, t in conns:
        if t not in targets:
            targets.append(t)
    d = schemdraw.Drawing(show=False)
    d.config(fontsize=10, unit=1.0)
    # schemdraw stacks right-side pins bottom-up: reversed, the table reads top-down.
    ic_pins = [elm.IcPin(name="%s  %s" % (pin_name(board, p), s), side="right",
                         anchorname="p%d" % k)
               for k, (p, s, _t) in reversed(list(enumerate(conns)))]
    ic = elm.Ic(pins=ic_pins, pinspacing=0.6, edgepadW=5.5, edgepadH=1.2, lblsize=12,
                label=mcu, lblloc="top")
    d.add(ic)
    d.add(elm.Label().at((0, 0.6 * len(conns) + 2.6)).label(TITLES.get(board, board),
                                                              fontsize=13, halign="left"))
    # One box per target, stacked in the order of their first pin.
    x_box = 14.0
    boxes = {}
    for t in targets:
        first = min(k for k, c in enumerate(conns) if c[2] == t)
        boxes[t] = first
    for k, (p, s, t) in enumerate(conns):
        start = getattr(ic, "p%d" % k)
        end = (x_box, start[1])
        d.add(elm.Line().at(start).to(end))
        d.add(elm.Dot().at(end))
    for t in targets:
        ks = [k for k, c in enumerate(conns) if c[2] == t]
        ys = [getattr(ic, "p%d" % k)[1] for k in ks]
        top, bot = max(ys) + 0.3, min(ys) - 0.3
        d.add(elm.Line().at((x_box, top)).to((x_box, bot)).color("#888"))
        d.add(elm.Label().at((x_box + 0.4, (top + bot) / 2)).label(t, halign="left", fontsize=10))
    return d


def generated():
    """(file name, generator) of every board picture, for tools.gendocs."""
    return [("wiring_%s.svg" % b, (lambda b=b: draw(b))) for b in BOARDS]
