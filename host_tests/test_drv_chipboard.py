# The firmware core on ChipBoard: real drivers (hwboard, bq76952, ina228, ntc,
# gpio) against byte-level emulators fed by the pack model.  CPython only
# (pack.py needs random.Random / bisect).
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2
from bms.params import index as param_index
from tools.sim.chipboard import ChipBoard
from tools.sim.simulator import Simulation


def _sim(**kw):
    return Simulation("LFP", cells=16, soc=0.5, seed=4,
                      board_factory=lambda pack: ChipBoard(pack, seed=5), **kw)


def test_core_runs_on_chip_emulators_and_closes_relays():
    sim = _sim()
    sim.pack.load_a = 20.0
    sim.run(6)
    b = sim.bms
    assert b.running and b.exceptions == 0 and sim.active_faults() == []
    st = b.contactors.state
    assert st[RELAY_L2] and st[RELAY_DSG] and st[RELAY_CHG]
    assert sim.pack.relays[RELAY_DSG] == 1          # through the active-low pins
    m = b.meas
    truth = sim.pack.cell_voltages()
    for i in range(16):
        assert abs(m.cell_mv[i] - truth[i] * 1000.0) <= 3
    # INA228 through SHUNT_CAL: within noise (20 mA) + a few LSB (3 mA).
    assert abs(m.current_ma - sim.pack.current_a * 1000.0) <= 40
    assert abs(m.tmax[2] - 250) <= 2                 # NTC through the divider table
    assert sim.board.i2c.transactions > 100


def test_persistent_nack_ends_in_safe_state_without_crashing():
    sim = _sim()
    sim.run(4)
    assert sim.bms.contactors.state[RELAY_DSG] == 1
    sim.board.i2c.nack_forever = True
    sim.run(5)
    b = sim.bms
    assert b.exceptions == 0                         # no crash of the loop
    assert b.bus_errors > 10
    assert "cell_stale" in sim.active_faults() and "current_stale" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0 and sim.pack.relays[RELAY_CHG] == 0
    # Each failing read was retried by the driver (bounded), then the core.
    assert sim.board.afe.retries > 0 and sim.board.shunt.retries > 0
    sim.board.i2c.nack_forever = False
    sim.run(5)
    assert "cell_stale" not in sim.active_faults()


def test_short_nack_burst_is_absorbed_by_driver_retries():
    sim = _sim()
    sim.run(3)
    before = sim.bms.bus_errors
    sim.board.nack = 2
    sim.run(1)
    assert sim.bms.bus_errors == before and sim.active_faults() == []


def test_open_ntc_and_dead_afe_are_sensor_faults():
    sim = _sim()
    sim.run(3)
    sim.board.ntc_fault[0] = "open"
    sim.run(3)
    assert "temp_sensor" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0
    sim2 = _sim()
    sim2.run(3)
    sim2.board.afe_dead = True
    sim2.run(3)
    assert "cell_stale" in sim2.active_faults() and sim2.bms.exceptions == 0


def test_afe_hardware_trip_reaches_the_core():
    sim = _sim()
    sim.run(3)
    sim.board.afe_trip = 1
    sim.run(1)
    assert "afe" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0


def test_hardware_short_circuit_protection_from_parameters():
    from bms.params import ParamSet
    holder = {}

    def factory(pack):
        holder["b"] = ChipBoard(pack, seed=5, params=ParamSet(1, max_cells=16))
        return holder["b"]

    sim = Simulation("LFP", cells=16, soc=0.5, seed=4, board_factory=factory)
    sim.run(3)
    assert sim.bms.contactors.state[RELAY_DSG] == 1
    emu = holder["b"].emu_afe
    assert emu.dm_get(0x9261, "<B") & 0x80        # SCD enabled in Enabled Protections A
    sim.pack.short = True
    sim.run(1)
    assert emu.safety[1] & 0x80                   # the chip tripped SCD itself
    assert "afe" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0


def test_a_short_beyond_the_shunts_range_trips_the_firmware_whatever_the_gain():
    # docs/safety.md, current beyond the shunt's range: 2000 A through the
    # 100 uOhm shunt is beyond the INA228's 163.84 mV (1638.4 A); its
    # clipped reading counts as at least 1638.4 A, and the calibration (a
    # gain of 0.9 here) never pulls it below that.  short_circuit 1620 A is
    # within the board's range (accepted), so the firmware must trip
    # without the AFE (no hardware backstop on this board, as on a board
    # whose AFE has no short-circuit comparator).
    from bms import params as P
    sim = _sim()
    sim.run(3)
    p = sim.bms.params
    p.set(P.P_SC, 16200)
    p.set(P.P_CUR_GAIN, 9500)
    p.set(P.P_CUR_GAIN, 9000)
    sim.run(1)
    assert sim.bms.contactors.state[RELAY_DSG] == 1 and sim.active_faults() == []
    sim.pack.short = True
    sim.run(0.2)
    assert "short" in sim.active_faults()
    assert sim.pack.relays[RELAY_DSG] == 0


def test_backstop_thresholds_the_afe_steps_loosen_are_reported():
    # docs/safety.md, AFE backstop: OCC / OCD1 step in 2 mV across the shunt
    # from a 4 mV floor, rounded up; on the 100 uOhm shunt that is 40 A, so
    # chg_oc 20 A asks for OCC at 25 A (125 %) and the chip takes 40 A.
    # The board keeps what the chip applied and lists each threshold that
    # differs from the one asked for.
    from bms import params as P
    holder = {}
    ps = P.ParamSet(1, max_cells=16)     # the parameters the backstop follows

    def factory(pack):
        holder["b"] = ChipBoard(pack, seed=5, params=ps)
        return holder["b"]

    sim = Simulation("LFP", cells=16, soc=0.5, seed=4, board_factory=factory)
    sim.run(2)
    hw = holder["b"].hw
    # The defaults fit the steps: chg_oc 100 A -> OCC 125 A asked, 12.5 mV
    # -> 14 mV, 140 A; peak 300 A -> OCD1 375 A, 37.5 mV -> 38 mV, 380 A.
    assert hw.afe_applied["occ_ma"] == 140000 and hw.afe_applied["ocd1_ma"] == 380000
    assert ("occ_ma", 125000, 140000) in hw.backstop_slack()
    ps.set(P.P_CHG_OC, 200)
    sim.run(1)
    assert hw.afe_conf["occ_ma"] == 25000
    assert hw.afe_applied["occ_ma"] == 40000              # the 4 mV floor
    assert ("occ_ma", 25000, 40000) in hw.backstop_slack()
    assert holder["b"].emu_afe.dm_get(0x9280, "<b") == 2  # OCC threshold code: 2 x 2 mV


def _bal_sim():
    # An unbalanced NMC pack above bal_start, balancing at rest (bal_mode 1).
    sim = Simulation("NMC", cells=16, capacity_ah=2.0, soc=0.75, seed=4,
                     params={"bal_start": 3800, "bal_mode": 1},
                     board_factory=lambda pack: ChipBoard(pack, seed=5))
    for k, c in enumerate(sim.pack.cells):
        c.soc = 0.70 + 0.01 * (k % 5)  # ~35 mV spread
    return sim


def _bleeding(sim):
    return [k for k, c in enumerate(sim.pack.cells) if c.bleed_a > 0]


def test_balancing_stops_on_balance_temperature_when_the_off_write_fails_once():
    # docs/safety.md: balance-board over-temperature -> balancing off (the
    # balancer backs off at t_bal_rec within one sweep).  One I2C error on the
    # chip's "all off" write must not leave its bleed FETs on.
    sim = _bal_sim()
    sim.run(20)
    assert sim.bms.balancer.state == 5 and sim.board.emu_afe.cb_mask  # ST_ACTIVE, bleeding
    afe = sim.board.hw.afe
    real = afe.balance
    fails = [1]

    def flaky(flags):
        if not any(flags) and fails[0]:
            fails[0] -= 1
            raise OSError(5)   # the bus glitched during the off write
        return real(flags)
    afe.balance = flaky
    sim.board.temp_override[1] = 66.0   # balance NTC at t_bal_rec + 1
    sim.run(3)
    assert fails[0] == 0 and sim.bms.balancer.state == 4   # ST_HOT
    assert sim.board.emu_afe.cb_mask == 0 and _bleeding(sim) == []


def test_bleeding_left_on_by_an_mcu_restart_stops():
    # A watchdog reset restarts the MCU, not the AFE: the chip keeps the bleed
    # mask of the firmware that ran before.  With nothing to balance (at rest,
    # bal_mode 0: charging only) no cell may go on bleeding.
    sim = _bal_sim()
    sim.params.set(param_index("bal_mode"), 0)
    f = bytearray(16)
    f[3] = 1
    sim.board.afe.balance(f)            # what the chip still does at the restart
    assert _bleeding(sim) == [3]
    sim.run(5)
    assert sim.bms.balancer.state == 2  # ST_WAIT: not charging
    assert sim.board.emu_afe.cb_mask == 0 and _bleeding(sim) == []


def test_an_open_sense_wire_opens_the_charge_path():
    # docs/safety.md, open sense wire (BQ76952): a VC pin whose sense wire
    # came off keeps its filter capacitors' voltage, and the two cells beside
    # it read a plausible pair however the cells themselves go (SLUUBY2B,
    # Cell Open Wire).  The driver turns on the chip's cell open-wire check
    # (Check Time 1 s), whose current drains the floating pin: the cell below
    # reads low, then invalid, the one above high, and charging stops (a cell
    # that cannot be measured is not charged) within 8 s, for good.
    from bms.params import ParamSet
    holder = {}

    def factory(pack):
        holder["b"] = ChipBoard(pack, seed=5, params=ParamSet(1, max_cells=16))
        return holder["b"]

    sim = Simulation("LFP", cells=16, soc=0.5, seed=4, board_factory=factory)
    sim.pack.charger_a = 10.0
    sim.run(4)
    assert sim.pack.relays[RELAY_CHG] == 1 and sim.active_faults() == []
    emu = holder["b"].emu_afe
    emu.open_tap(6)                     # the wire between cells 6 and 7
    assert sim.run_until(lambda s: s.pack.relays[RELAY_CHG] == 0, 8.0)
    for _ in range(40):                 # 20 s: it stays open
        sim.run(0.5)
        assert sim.pack.relays[RELAY_CHG] == 0
    m = sim.bms.meas
    assert not m.cell_ok[5] or m.cell_mv[5] < 1000    # the cell below the open tap
    assert "cell_stale" in sim.active_faults()
    assert holder["b"].hw.afe_applied["open_wire_s"] == 1   # written and read back
