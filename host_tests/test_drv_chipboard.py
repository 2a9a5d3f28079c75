# The firmware core on ChipBoard: real drivers (hwboard, bq76952, ina228, ntc,
# gpio) against byte-level emulators fed by the pack model.  CPython only
# (pack.py needs random.Random / bisect).
from bms.contactors import RELAY_CHG, RELAY_DSG, RELAY_L2
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
