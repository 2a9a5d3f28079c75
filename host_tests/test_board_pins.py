"""The board pin tables against the chips' data sheets (docs/wiring.md, "Pin rules").

Rules under test, as documented in docs/wiring.md:
* every pin of a table exists and is used once; a peripheral's pins belong to
  the instance the table names (MicroPython rp2 raises ValueError on a pin
  the RP2040's function table does not give that instance);
* Pico W: GP23, GP24, GP25 and GP29 belong to the CYW43 radio;
* a relay output's off level is the level its pin holds from reset until the
  firmware drives it (reset, boot, a watchdog reset, a crash before the board
  is built): on the RP2040 every GPIO comes out of reset as an input with its
  pull-down, so relay drivers are active high; on the ESP32 no relay, and no
  RS485 driver enable, sits on a pin that is pulled up or driven at boot
  (GPIO0, 1, 3, 5, 14, 15) or on a strapping pin (GPIO0, 2, 5, 12, 15);
* ESP32: nothing on the flash pins GPIO6-11, no output on the input-only
  GPIO34-39, NTCs on ADC1 only (GPIO32-39).
"""
import importlib

import pytest

from tools import gen_wiring

RP2 = ("pico", "pico_w", "pico32", "slave_module")
ESP32 = ("esp32_devkit",)


def _pins(board):
    return importlib.import_module("boards." + board).PINS


# ---- RP2040 (RP2040 datasheet 2.19.2, GPIO function table) ---------------------------
def rp2_i2c(n):
    """(instance, "SDA"|"SCL") of GPIO n."""
    return (n // 2) % 2, ("SDA", "SCL")[n % 2]


def rp2_spi(n):
    """(instance, "RX"|"CSn"|"SCK"|"TX") of GPIO n."""
    return (n // 8) % 2, ("RX", "CSn", "SCK", "TX")[n % 4]


def rp2_uart(n):
    """(instance, "TX"|"RX"|"CTS"|"RTS") of GPIO n."""
    return ((n + 4) // 8) % 2, ("TX", "RX", "CTS", "RTS")[n % 4]


def test_the_rp2040_function_tables_match_the_data_sheet_rows():
    # Spot checks against the data sheet's rows, so the helpers above cannot
    # drift: GP0 UART0 TX / I2C0 SDA / SPI0 RX, GP4 UART1 TX, GP12 UART0 TX,
    # GP20 UART1 TX, GP28 UART0 TX, GP7 I2C1 SCL, GP18 SPI0 SCK, GP11 SPI1 TX.
    assert rp2_uart(0) == (0, "TX") and rp2_i2c(0) == (0, "SDA") and rp2_spi(0) == (0, "RX")
    assert rp2_uart(4) == (1, "TX") and rp2_uart(12) == (0, "TX")
    assert rp2_uart(20) == (1, "TX") and rp2_uart(28) == (0, "TX") and rp2_uart(9) == (1, "RX")
    assert rp2_i2c(7) == (1, "SCL") and rp2_spi(18) == (0, "SCK") and rp2_spi(11) == (1, "TX")


def _all_pins(pins):
    """[(key, pin)] of every MCU pin in a table."""
    out = []
    for key, v in pins.items():
        if v is None or key in ("relay_active_low", "relay_fb_active_low"):
            continue
        if key in ("i2c", "i2c_top"):
            out += [(key, p) for p in v[1:3]]
        elif key == "spi":
            out += [(key, p) for p in v[1:4]]
        elif key in ("rs485", "ttl", "charger_rs485"):
            out += [(key, p) for p in v[1:]]
        elif key == "ntc":
            out += [(key, p) for p, _role in v]
        elif isinstance(v, tuple):
            out += [(key, p) for p in v if p is not None]
        else:
            out.append((key, v))
    return out


@pytest.mark.parametrize("board", gen_wiring.BOARDS)
def test_no_pin_is_used_twice(board):
    seen = {}
    for key, p in _all_pins(_pins(board)):
        assert p not in seen, (board, p, seen.get(p), key)
        seen[p] = key


@pytest.mark.parametrize("board", RP2)
def test_rp2_peripheral_pins_belong_to_their_instance(board):
    pins = _pins(board)
    for key in ("i2c", "i2c_top"):
        if pins.get(key):
            bus, sda, scl = pins[key][:3]
            assert rp2_i2c(sda) == (bus, "SDA"), (board, key, sda)
            assert rp2_i2c(scl) == (bus, "SCL"), (board, key, scl)
    if pins.get("spi"):
        bus, sck, mosi, miso = pins["spi"]
        assert rp2_spi(sck) == (bus, "SCK"), (board, sck)
        assert rp2_spi(mosi) == (bus, "TX"), (board, mosi)
        assert rp2_spi(miso) == (bus, "RX"), (board, miso)
    for key in ("rs485", "ttl", "charger_rs485"):
        if pins.get(key):
            uid, tx, rx = pins[key][:3]
            assert rp2_uart(tx) == (uid, "TX"), (board, key, tx)
            assert rp2_uart(rx) == (uid, "RX"), (board, key, rx)
    for p, _role in pins.get("ntc", ()):
        assert 26 <= p <= 28, (board, p)   # ADC0..2 (GP29 is VSYS/3 on the Pico)
    for key, p in _all_pins(pins):
        assert p == "LED" or 0 <= p <= 28, (board, key, p)


def test_pico_w_leaves_the_radio_pins_alone():
    for key, p in _all_pins(_pins("pico_w")):
        assert p not in (23, 24, 25, 29), (key, p)


# ---- relay outputs from reset to the first drive ------------------------------------
# The level a pin holds from reset until the firmware configures it: 0 (pulled
# down), 1 (pulled up, or driven / toggled by the boot ROM), None (floating).
# RP2040: every bank-0 GPIO resets to an input with its pull-down on (RP2040
# datasheet, PADS_BANK0 GPIOx reset 0x56: PDE=1).
# ESP32: the data sheet's pin list, "At reset" column; GPIO14 (MTMS) and
# GPIO15 (MTDO) come up pulled high and are seen toggling at boot, GPIO5 too,
# GPIO1 is the ROM's log output, GPIO3 the pulled-up console RX.
ESP32_PULLED_UP_OR_ACTIVE_AT_BOOT = (0, 1, 3, 5, 14, 15)
ESP32_PULLED_DOWN_AT_RESET = (2, 4, 12, 13)
ESP32_STRAPPING = (0, 2, 5, 12, 15)
ESP32_FLASH = (6, 7, 8, 9, 10, 11)
ESP32_INPUT_ONLY = (34, 35, 36, 37, 38, 39)


def reset_level(board, n):
    if board in RP2:
        return 0
    if n in ESP32_PULLED_UP_OR_ACTIVE_AT_BOOT:
        return 1
    if n in ESP32_PULLED_DOWN_AT_RESET:
        return 0
    return None


@pytest.mark.parametrize("board", ("pico", "pico_w", "pico32", "esp32_devkit"))
def test_relay_pins_hold_the_off_level_from_reset(board):
    """A pin pulled to the relay's on level during reset and boot closes a
    contactor before the BMS has measured anything (and again at every
    watchdog reset).  Floating pins need an external pull-down (next test)."""
    pins = _pins(board)
    off = 1 if pins.get("relay_active_low", False) else 0
    for k, n in enumerate(pins["relays"]):
        lvl = reset_level(board, n)
        assert lvl is None or lvl == off, (board, gen_wiring.RELAYS[k], n, lvl)
        if board in ESP32:
            assert n not in ESP32_STRAPPING, (board, gen_wiring.RELAYS[k], n)


@pytest.mark.parametrize("board", ESP32)
def test_esp32_rs485_driver_is_off_at_boot(board):
    """DE high during boot would drive the shared RS485 bus (LC-3) for the
    whole boot: a pin pulled up or toggled at boot is no DE pin."""
    de = _pins(board)["rs485"][3]
    assert reset_level(board, de) != 1, (board, de)


@pytest.mark.parametrize("board", ESP32)
def test_esp32_pins_are_usable(board):
    pins = _pins(board)
    for key, p in _all_pins(pins):
        assert p not in ESP32_FLASH, (board, key, p)
        assert 0 <= p <= 39, (board, key, p)
    outs = []
    for key in ("relays", "buzzer", "can_cs", "led"):
        v = pins.get(key)
        outs += list(v) if isinstance(v, tuple) else ([v] if v is not None else [])
    outs += [pins["rs485"][1], pins["rs485"][3], pins["ttl"][1]]
    outs += list(pins["spi"][1:3]) + list(pins["i2c"][1:3])
    for p in outs:
        assert p not in ESP32_INPUT_ONLY, (board, p)
    for p, _role in pins["ntc"]:
        assert 32 <= p <= 39, (board, p)   # ADC1; ADC2 is taken by the radio


def _doc_section(section_start):
    """The text of docs/wiring.md's section starting with ``section_start``."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "wiring.md")) as f:
        text = f.read()
    sec = text[text.index(section_start):]
    nxt = sec.find("\n## ", 1)
    return sec if nxt < 0 else sec[:nxt]


def _doc_rows(section_start, first_cell):
    """The rows of the section's tables whose first cell starts with ``first_cell``."""
    return [ln for ln in _doc_section(section_start).splitlines()
            if ln.startswith("| " + first_cell)]


def test_esp32_relay_pins_that_float_at_reset_need_a_documented_pull_down():
    """GPIO26, 27 and 33 have no pull resistor at reset: a driver input (a
    MOSFET gate) left floating from reset until the board is built may turn
    the coil on.  The wiring table must ask for the external pull-down."""
    pins = _pins("esp32_devkit")
    floating = [n for n in pins["relays"] if reset_level("esp32_devkit", n) is None]
    assert floating   # 27, 33, 26
    rows = _doc_rows("## Master, ESP32 DevKit", "Relays")
    assert len(rows) == 1, rows
    assert "pull-down" in rows[0], rows[0]
    for n in floating:
        assert str(n) in rows[0], (n, rows[0])


def test_free_pins_the_wiring_doc_suggests_are_free_or_flagged():
    """The optional inputs (relay readback, sleep button, charge-port sense)
    go on "free" GPIOs.  A pin the doc suggests must be free on every board
    the row applies to, or the row must name the board where it is not (the
    17S-32S board's I2C1 to the top BQ76952 is GP6 / GP7: a readback input
    there reconfigures the pin and silences the top chip)."""
    import re
    rows = [r for r in _doc_rows("## Master, Raspberry Pi Pico", "") if "(optional)" in r]
    assert len(rows) >= 3, rows
    for row in rows:
        cell = row.split("|")[2]
        for gp in re.findall(r"GP(\d+)", cell):
            for board in ("pico", "pico_w", "pico32"):
                used = [k for k, p in _all_pins(_pins(board)) if p == int(gp)]
                assert not used or board in row, (board, "GP" + gp, used, row[:60])


def test_esp32_inputs_on_input_only_pins_have_a_documented_pull_up():
    """GPIO34-39 have no pull resistors: an input there that is not driven
    all the time (a UART RX whose cable can be unplugged, a key, an open-drain
    alert) floats, reads noise and ends every lightsleep (wake pins).  The
    MCP2515's INT is a push-pull output and needs none."""
    pins = _pins("esp32_devkit")
    roles = {"ttl": ("Display TTL", pins["ttl"][2]),
             "rs485": ("RS485", pins["rs485"][2])}
    for key in ("key", "sleep_key", "charger_sense", "shunt_alert", "afe_alert"):
        if pins.get(key) is not None:
            roles[key] = ({"key": "Key"}.get(key, key), pins[key])
    checked = 0
    for key, (row_name, n) in roles.items():
        if n in ESP32_INPUT_ONLY:
            rows = _doc_rows("## Master, ESP32 DevKit", row_name)
            assert len(rows) == 1, (key, rows)
            assert "pull-up" in rows[0], (key, n, rows[0])
            checked += 1
    assert checked   # the display RX on GPIO35


def test_esp32_psram_pins_are_flagged_for_wrover_modules():
    """On ESP32-WROVER modules (PSRAM) GPIO16 and GPIO17 drive the PSRAM; a
    table using them is for WROOM modules only, and the wiring doc says so."""
    used = [(k, p) for k, p in _all_pins(_pins("esp32_devkit")) if p in (16, 17)]
    if used:
        sec = _doc_section("## Master, ESP32 DevKit")
        assert "WROVER" in sec and "WROOM" in sec, used


def test_slave_address_switches_are_documented_to_ground():
    """slave_main.dip_address reads each switch with the pin's pull-up on: a
    switch to 3V3 would never read as set (every module auto-addressed)."""
    pins = _pins("slave_module")
    assert pins["addr_pins"] == (6, 7, 8, 9)
    rows = _doc_rows("## Slave module", "Module address")
    assert len(rows) == 1 and "GND" in rows[0] and "GP6 = bit 0" in rows[0], rows


@pytest.mark.parametrize("board", ("pico", "pico_w", "pico32", "esp32_devkit"))
def test_building_the_product_never_drives_a_relay_pin_on(board):
    """From the first machine object to the end of app.build (before the
    first control step): every relay pin is made an output at its off level
    and no write ever puts it at the on level (docs/wiring.md, Pin rules)."""
    import app
    import drv_fakemachine as FM
    from bms.ticks import VirtualClock

    writes = []

    class RecPin(FM.Pin):
        def __init__(self, n, mode=None, pull=None, value=None):
            FM.Pin.__init__(self, n, mode, pull, value)
            if value is not None:
                writes.append((n, 1 if value else 0))

        def value(self, v=None):
            if v is not None:
                writes.append((self.n, 1 if v else 0))
            return FM.Pin.value(self, v)

    cells = [3300 + i for i in range(16)]
    fm = FM.FakeMachine(cells, cs_pin=_pins(board)["can_cs"],
                        top_mv=[3300] * 8 if board == "pico32" else None)
    fm.Pin = RecPin
    a = app.build(board, machine=fm, clock=VirtualClock(0))
    pins = _pins(board)
    off = 1 if pins.get("relay_active_low", False) else 0
    for n in pins["relays"]:
        assert [v for p, v in writes if p == n], (board, n)     # driven, not left as reset
        assert all(v == off for p, v in writes if p == n), (board, n, writes)
        assert FM.Pin.registry[n].mode == FM.Pin.OUT and FM.Pin.levels[n] == off
    assert a.bms is not None and not any(a.bms.contactors.state)


@pytest.mark.parametrize("board", ("pico", "pico32", "esp32_devkit"))
def test_main_py_drives_the_relay_pins_off_before_importing_the_application(board, monkeypatch):
    """An ESP32 keeps its GPIO levels through a watchdog reset (task
    watchdog -> panic -> restart) and machine.reset(): relays closed when
    the control task hung stay closed through the boot.  main.py drives
    every relay pin (and hold_low pin) off before it imports the application,
    whose imports are the longest part of the boot (docs/wiring.md)."""
    import os
    import sys
    import types
    import drv_fakemachine as FM

    fm = FM.FakeMachine([3300] * 16, cs_pin=_pins(board)["can_cs"])
    pins = _pins(board)
    off = 1 if pins.get("relay_active_low", False) else 0
    watched = list(pins["relays"]) + list(pins.get("hold_low", ()))
    for n in watched:     # left driven on by the firmware before the reset
        FM.Pin(n, FM.Pin.OUT, value=1 - off if n in pins["relays"] else 1)
    seen = {}

    def app_import_time():
        seen.update({n: FM.Pin.levels[n] for n in watched})

    fake_app = types.ModuleType("app")
    fake_app.main = lambda: None
    monkeypatch.setitem(sys.modules, "machine", fm)
    monkeypatch.setitem(sys.modules, "config", types.SimpleNamespace(BOARD=board))
    monkeypatch.setitem(sys.modules, "app", fake_app)
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) \
        else __builtins__.__import__

    def spy(name, *a, **kw):
        if name == "app":
            app_import_time()
        return real_import(name, *a, **kw)
    monkeypatch.setattr("builtins.__import__", spy)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "firmware", "main.py")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), {"__name__": "__main__"})
    assert seen and all(v == (off if n in pins["relays"] else 0) for n, v in seen.items()), seen


def test_importing_a_board_table_loads_no_driver():
    """boards.relays_off runs before the application: a board file's table
    must import without boards.common and the drivers (docs/wiring.md)."""
    import subprocess
    import sys
    code = ("import sys, tools; import boards.esp32_devkit, boards.pico32, boards.pico_w, "
            "boards.slave_module; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('drivers', 'bms', 'comms') "
            "or m == 'boards.common']; print(bad); sys.exit(1 if bad else 0)")
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _cell_numbers(row, col=1):
    import re
    return [int(x) for x in re.findall(r"(?<![A-Za-z0-9])(?:GPIO|GP)?(\d+)", row.split("|")[col + 1])]


def test_the_wiring_tables_agree_with_the_pin_tables_pin_for_pin():
    """docs/wiring.md's tables are written by hand: every pin they give for a
    function is the board table's (boards/*.py is the source)."""
    p = _pins("pico")
    pico = {"I2C0 SDA / SCL": list(p["i2c"][1:3]),
            "NTC power board": [p["ntc"][0][0]], "NTC cell T1": [p["ntc"][1][0]],
            "NTC cell T2": [p["ntc"][2][0]],
            "Discharge relay J1": [p["relays"][0]], "Precharge relay J2": [p["relays"][1]],
            "Charge relay J3": [p["relays"][2]], "Level-2 protect relay J4": [p["relays"][3]],
            "Heater relay JR": [p["relays"][4]], "Buzzer": [p["buzzer"]],
            "ON/OFF key K": [p["key"]], "RS485 to PC": list(p["rs485"][1:]),
            "Display TTL": list(p["ttl"][1:]),
            "CAN (slaves": [p["spi"][1], p["spi"][2], p["spi"][3], p["can_cs"], p["can_int"]],
            "BQ76952 ALERT": [p["afe_alert"]], "INA228 ALERT": [p["shunt_alert"]]}
    for name, want in pico.items():
        rows = _doc_rows("## Master, Raspberry Pi Pico", name)
        assert len(rows) == 1, (name, rows)
        assert _cell_numbers(rows[0]) == want, (name, rows[0][:90])
    top = _pins("pico32")["i2c_top"]
    rows = _doc_rows("## Single board 17S-32S", "I2C1 SDA / SCL")
    assert len(rows) == 1 and _cell_numbers(rows[0]) == list(top[1:3]), rows
    e = _pins("esp32_devkit")
    esp = {"I2C SDA / SCL": list(e["i2c"][1:3]),
           "MCP2515": list(e["spi"][1:]) + [e["can_cs"], e["can_int"]],
           "RS485 TX / RX / DE": list(e["rs485"][1:]), "Display TTL": list(e["ttl"][1:]),
           "NTC JT / T1 / T2": [n for n, _r in e["ntc"]], "Relays": list(e["relays"]),
           "(held low)": list(e.get("hold_low", ())), "Buzzer": [e["buzzer"]],
           "Key K": [e["key"]]}
    for name, want in esp.items():
        rows = _doc_rows("## Master, ESP32 DevKit", name)
        assert len(rows) == 1, (name, rows)
        assert _cell_numbers(rows[0]) == want, (name, rows[0][:90])
    s = _pins("slave_module")
    slave = {"BQ76952 I2C": list(s["i2c"][1:3]), "NTC T0 / T1 / T2": [n for n, _r in s["ntc"]]}
    for name, want in slave.items():
        rows = _doc_rows("## Slave module", name)
        assert len(rows) == 1 and _cell_numbers(rows[0]) == want, (name, rows)
