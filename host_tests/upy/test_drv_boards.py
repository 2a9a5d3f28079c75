# The real board files and main.build() on a fake machine module whose buses
# lead to the chip emulators: pins, bus construction, boot to running.
from drv_helpers import run_app as _run
from drv_fakemachine import FakeMachine

from bms import faults as F
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2
from bms.measurements import T_OK, T_OPEN, T_SHORT
from bms.ticks import VirtualClock

import app as main

LFP16 = [3300 + i for i in range(16)]


def test_pico_boots_to_running_on_emulated_chips():
    fm = FakeMachine(LFP16)
    clock = VirtualClock(0x3FFFFFFF - 500)  # across the tick wrap
    app = main.build("pico", machine=fm, clock=clock)
    app.wdt = fm.WDT(4000)
    assert ("I2C", 0, 4, 5, 400000) in fm.created
    assert ("UART", 0, 9600) in fm.created and ("SPI", 0) in fm.created
    assert ("ADC", 28) in fm.created and ("ADC", 26) in fm.created
    _run(app, clock, 3000)
    b = app.bms
    assert b.running and b.exceptions == 0 and b.bus_errors == 0
    assert list(b.meas.cell_mv[:16]) == LFP16
    assert abs(b.meas.tmax[2] - 250) <= 1
    st = b.contactors.state
    assert st[RELAY_L2] and st[RELAY_DSG] and st[RELAY_CHG]
    # Relay GPIOs (LC-5 J1 discharge GP10, J3 charge GP12, J4 level-2 GP13) driven high.
    assert fm.pin(10).v == 1 and fm.pin(12).v == 1 and fm.pin(13).v == 1
    assert fm.feeds == app.loops and fm.feeds > 0
    # Months of loop passes: the counts wrap as small ints (RP2040: 31 bits).
    app.loops = 0x3FFFFFFF
    _run(app, clock, 200)
    assert 0 < app.loops < 1000


def test_dead_afe_at_boot_stays_safe_then_recovers():
    fm = FakeMachine(LFP16)
    fm.bq.dead = True
    clock = VirtualClock(0)
    app = main.build("pico", machine=fm, clock=clock)
    assert not app.hw["board"].afe_ok and app.hw["board"].init_errors >= 1
    _run(app, clock, 3000)
    assert not app.bms.running and fm.pin(10).v == 0 and app.bms.exceptions == 0
    fm.bq.dead = False
    _run(app, clock, 3000)
    assert app.bms.running and app.hw["board"].afe_ok


def test_other_boards_construct():
    for name in ("pico_w", "esp32_devkit"):
        fm = FakeMachine(LFP16, cs_pin=5 if name == "esp32_devkit" else 17)
        app = main.build(name, machine=fm, clock=VirtualClock(0))
        assert app.bms is not None and len(app.hw["ntcs"]) == 3
    fm = FakeMachine(LFP16)
    app = main.build("slave_module", machine=fm, clock=VirtualClock(0))
    assert app.bms is None and app.hw["kind"] == "slave"
    app.hw["can"].init()
    assert app.hw["can"].state() == 0


class _Cfg:
    def __init__(self, **opts):
        self.OPTS = opts


class _UsClock:
    def ticks_us(self):
        return 0

    def ticks_ms(self):
        return 0


def test_the_modbus_line_format_is_a_board_option():
    # Modbus over serial line V1.02, 2.5.1: even parity is required (odd or
    # none may be used, none with two stop bits); docs/modbus.md: option
    # modbus_format 8N1 (default), 8E1, 8O1 or 8N2.  The UART gets that
    # parity and stop, and the server times the 11-bit character (9600 baud:
    # t1.5 1719 us, t3.5 4011 us).
    from comms.modbus_rtu import ModbusRTU
    import boards.common as common
    for fmt, parity, stop, bits in (("8N1", None, 1, 10), ("8E1", 0, 1, 11),
                                    ("8O1", 1, 1, 11), ("8N2", None, 2, 11)):
        fm = FakeMachine(LFP16)
        cfg = None if fmt == "8N1" else _Cfg(modbus_format=fmt)
        app = main.build("pico", machine=fm, cfg=cfg, clock=VirtualClock(0))
        port = app.hw["rs485"]
        kw = [k for uid, k in fm.uart_kw if k.get("baudrate") == 9600][0]
        assert (kw["bits"], kw["parity"], kw["stop"]) == (8, parity, stop), fmt
        assert port.bits == bits, fmt
        s = ModbusRTU(port, None, _UsClock())
        assert (s.t15, s.t35) == ((1563, 3646) if bits == 10 else (1719, 4011)), fmt
    assert common.modbus_format({"modbus_format": "8e1"}) == (0, 1)
    # A typo must not stop the BMS from booting: the port runs 8N1.
    assert common.modbus_format({"modbus_format": "7E1"}) == (None, 1)


def test_backstop_the_chip_does_not_hold_keeps_relays_open():
    # The BQ76952 never stores Enabled Protections A (a write lost every
    # time): configure's read-back fails, the AFE counts as failed and the
    # core stays in its safe state rather than run on the chip's default.
    fm = FakeMachine(LFP16)
    fm.bq.drop_dm[0x9261] = 10 ** 6
    clock = VirtualClock(0)
    app = main.build("pico", machine=fm, clock=clock)
    assert not app.hw["board"].afe_ok and app.hw["board"].init_errors >= 1
    _run(app, clock, 3000)
    assert not app.bms.running and fm.pin(10).v == 0 and fm.pin(12).v == 0
    assert app.hw["afe"].verify_errors >= 1
    fm.bq.drop_dm = {}
    _run(app, clock, 3000)
    assert app.bms.running and app.hw["board"].afe_ok
    assert fm.bq.dm_get(0x9261, "<B") & 0x80        # SCD enabled now


def test_pico_programs_the_shunt_alert_and_stamps_its_edges():
    # GP3: the INA228 ALERT (open drain, pull-up).  The core programs the
    # limits from the chg_oc / dsg_oc thresholds (LFP defaults 100 A / 150 A;
    # 100 uOhm for up to 1.6 kA: ADCRANGE=0, 5 uV/LSB) and the edges carry
    # the core's time.
    from bms import faults as F
    fm = FakeMachine(LFP16)
    clock = VirtualClock(1000)
    app = main.build("pico", machine=fm, clock=clock)
    _run(app, clock, 1000)
    b = app.bms
    chg = F.spec_value(F.TABLE[F.CHG_OC][F.F_THR], b.params.values)
    dsg = F.spec_value(F.TABLE[F.DSG_OC][F.F_THR], b.params.values)
    assert app.hw["shunt"].adcrange == 0
    assert fm.ina.regs[0x0C] == (chg * 100 + 4999) // 5000 == 2000
    assert fm.ina.regs[0x0D] == 0x10000 - (dsg * 100 + 4999) // 5000
    a = app.hw["board"].alert_in
    pin = fm.pin(3)
    assert pin.irq_handler is not None and not a.on
    clock.advance(7)
    pin.drive(0)
    assert a.on and a.at == clock.ticks_ms() and a.edges == 1
    clock.advance(5)
    pin.drive(1)
    assert not a.on and a.edges == 2
    # The INA228 lost its settings (a brown-out): the board programs it
    # again, limits included, when it configures it anew.
    fm.ina.reset()
    app.hw["board"].shunt_ok = False
    _run(app, clock, 200)
    assert app.hw["board"].shunt_ok
    assert fm.ina.regs[0x0C] == 2000


def test_esp32_open_or_shorted_ntc_is_a_sensor_fault():
    # ESP-IDF (ADC, ESP32): at 11 dB the measurable input range is
    # 150..2450 mV; the ADC saturates below the 3V3 an open NTC pulls its pin
    # to, and read_uv of a raw 0 is still the calibration offset.  An open
    # NTC must read T_OPEN and a shorted one T_SHORT (ntc.py), never a
    # temperature: scaled against 3.3 V they read about -26 degC and
    # +116 degC, both inside the table, as valid temperatures.
    fm = FakeMachine(LFP16, cs_pin=5)
    clock = VirtualClock(0)
    app = main.build("esp32_devkit", machine=fm, clock=clock)
    ch = app.hw["ntcs"][0][0]
    assert ch.read() == T_OK and abs(ch.temp_dc - 250) <= 3
    fm.adc_code = 65535            # open NTC: the pin at 3V3
    assert ch.read() == T_OPEN
    fm.adc_code = 0                # shorted NTC: the pin at GND
    assert ch.read() == T_SHORT
    fm.adc_code = 65535
    _run(app, clock, 2000)
    assert app.bms.meas.temp_status[0] == T_OPEN


def test_afe_reset_brings_the_backstop_back():
    # A BQ76952 that resets (a brown-out of its supply) runs on its data
    # memory defaults again: Enabled Protections A back to 0x88 with the
    # default thresholds, Cell Balance Max Cells 1, CC2 in the default unit.
    # Battery Status bit 3 (POR) shows it until EXIT_CFGUPDATE (SLUAA11B:
    # "This also clears the Battery Status()[POR] and [WD] bits"): the board
    # must configure the chip again, not run on defaults nobody chose.
    fm = FakeMachine(LFP16)
    clock = VirtualClock(0)
    app = main.build("pico", machine=fm, clock=clock)
    _run(app, clock, 3000)
    assert app.bms.running
    regs = (0x9261, 0x9278, 0x9275, 0x9280, 0x9282, 0x9286, 0x9303, 0x933A)
    want = [fm.bq.dm_get(a, "<B") for a in regs]
    assert want[0] & 0x80 and not fm.bq.por
    fm.bq.reset()
    assert [fm.bq.dm_get(a, "<B") for a in regs] != want
    _run(app, clock, 2000)
    assert [fm.bq.dm_get(a, "<B") for a in regs] == want
    assert not fm.bq.por and app.bms.running and app.bms.exceptions == 0



def test_shunt_monitor_reset_is_configured_again():
    # An INA228 that resets (a brown-out) answers every read as before, but
    # with its power-on defaults (SLYS021A: SHUNT_CAL 0x1000, ADCRANGE 0,
    # ADC_CONFIG 0xFB68, SOVL 0x7FFF / SUVL 0x8000): the ALERT limits are
    # gone and, on a board whose SHUNT_CAL is not 0x1000, CURRENT is scaled
    # wrongly - with ADCRANGE = 1 (here 300 A on 100 uOhm: 30 mV full
    # scale) 100 A read as 19 A.  The board must see it and configure
    # the chip again, limits included.
    class Cfg:
        OPTS = {"shunt_max_ma": 300000}

    fm = FakeMachine(LFP16)
    clock = VirtualClock(1000)
    app = main.build("pico", machine=fm, cfg=Cfg, clock=clock)
    _run(app, clock, 1000)
    sh = app.hw["shunt"]
    assert sh.adcrange == 1 and fm.ina.regs[0x02] == sh.cal
    lim = (fm.ina.regs[0x0C], fm.ina.regs[0x0D])
    assert lim[0] == (100000 * 100 + 1249) // 1250      # 1.25 uV/LSB with ADCRANGE = 1
    fm.ina.source.current = 100000
    assert abs(sh.read_current_ma() - 100000) < 100
    fm.ina.reset()
    _run(app, clock, 1000)
    assert fm.ina.regs[0x02] == sh.cal and fm.ina.regs[0x01] == sh.adc_cfg
    assert (fm.ina.regs[0x0C], fm.ina.regs[0x0D]) == lim
    assert abs(sh.read_current_ma() - 100000) < 100


def test_esp32_old_precharge_pin_is_held_low():
    # docs/wiring.md, ESP32 rewire note: the precharge relay moved from GPIO14
    # (pulled up and toggled at boot) to GPIO4; GPIO14 is driven low, so a
    # board still wired the old way keeps its precharge relay open once the
    # firmware runs.  The relays come up off, whatever the board's state.
    fm = FakeMachine(LFP16, cs_pin=5)
    clock = VirtualClock(0)
    app = main.build("esp32_devkit", machine=fm, clock=clock)
    assert fm.pin(14).mode == fm.Pin.OUT and fm.pin(14).v == 0
    for n in (13, 4, 27, 33, 26):
        assert fm.pin(n).mode == fm.Pin.OUT and fm.pin(n).v == 0
    highs = []
    for n in (4, 14):
        p = fm.pin(n)

        def value(v=None, p=p, f=p.value):
            if v:
                highs.append(p.n)
            return f(v)
        p.value = value
    _run(app, clock, 3000)
    assert app.bms.running and fm.pin(13).v == 1   # J1 discharge closed: the board runs
    assert 4 in highs and 14 not in highs          # precharged on GPIO4, never on 14


def test_an_ntc_input_left_unfitted_by_option_is_not_read():
    # docs/deploy.md (option ntc_unfitted): a pack built with fewer NTCs names
    # the inputs it left empty (1-based, the board's table in docs/wiring.md:
    # Pico 1 = JT power board, 2 = T1, 3 = T2).  An empty input reads open, a
    # sensor fault that keeps charge and discharge open; named, it is not
    # read.  At least one cell NTC must stay, and an option that is not a
    # list of the board's inputs is not applied: every input is read.
    def boot(opts):
        fm = FakeMachine(LFP16)
        fm.adc_codes[27] = 65535        # T2 (GP27) not fitted: the divider reads open
        clock = VirtualClock(0)
        app = main.build("pico", machine=fm, cfg=_Cfg(**opts) if opts else None, clock=clock)
        _run(app, clock, 4000)
        st = app.bms.contactors.state
        return fm, app, st[RELAY_DSG] and st[RELAY_CHG]
    fm, app, closed = boot({})
    assert not closed and app.bms.prot.active(F.T_SENSOR)
    fm, app, closed = boot({"ntc_unfitted": (3,)})
    assert closed and not app.bms.prot.active(F.T_SENSOR)
    assert ("ADC", 27) not in fm.created and ("ADC", 26) in fm.created
    assert abs(app.bms.meas.tmax[2] - 250) <= 1
    for bad in ({"ntc_unfitted": (2, 3)},       # no cell NTC left
                {"ntc_unfitted": (4,)},         # the Pico has three inputs
                {"ntc_unfitted": 3}):           # not a list
        fm, app, closed = boot(bad)
        assert ("ADC", 27) in fm.created and not closed, bad
