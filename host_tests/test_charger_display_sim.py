"""Special charger and display emulators against the simulated pack."""
from bms import faults as F
from bms.params import P_SPECIAL_CHARGER
from comms.charger import Charger
from comms.display import DisplayPort
from tools.sim.charger_emu import ChargerEmu
from tools.sim.display_emu import BytePipe, DisplayEmu
from tools.sim.simulator import Simulation


def charger_setup(enabled=True):
    sim = Simulation(chem="LFP", cells=16, soc=0.5,
                     params={"special_charger": 1 if enabled else 0})
    bms_end, chg_end = BytePipe()
    link = Charger(sim.bms, sim.clock, port=bms_end)
    emu = ChargerEmu(chg_end, sim.pack, rated_a=20.0)
    state = {"t": 0}

    def poller(s):
        link.poll()
        emu.step(s.t_ms - state["t"])
        state["t"] = s.t_ms
    sim.pollers.append(poller)
    return sim, link, emu


def test_charger_follows_limits_and_reports():
    sim, link, emu = charger_setup()
    sim.run(5)
    # Full limits from the first complete measurement on (no soft start
    # after boot): every command the charger got carries 80 A.
    cmds = [(c[0], c[2]) for c in emu.commands if c[3] == 0]
    assert len(cmds) >= 3 and all(abs(a - 80.0) < 0.01 for _t, a in cmds), cmds
    t, v, a, ctrl = emu.commands[-1]
    # Full limits: CVL 16 x ov_rec 3.55 V, CCL 80 % of chg_oc 100 A.
    assert ctrl == 0 and abs(v - 16 * 3.55) < 0.01 and abs(a - 80.0) < 0.01
    assert emu.running and 18.0 < sim.pack.current_a < 20.5
    assert link.present and abs(link.out_da / 10.0 - sim.pack.current_a) < 1.0
    assert abs(link.out_dv / 10.0 - sim.pack.pack_voltage()) < 0.3


def test_protection_stops_the_charger_at_once():
    # The charge limit drops to 0 when the cells get too hot to charge (the
    # derating does it at once at the charge over-temperature threshold, the
    # t_chg fault follows after its delay): the stop goes out at that moment,
    # not at the next 1 s period, and stays until the fault clears.
    sim, link, emu = charger_setup()
    sim.run(3)
    assert emu.running
    sim.board.temp_override[2] = sim.board.temp_override[3] = 60.0
    assert sim.run_until(lambda s: s.bms.derating.ccl_ma == 0, 10)
    t0 = sim.t_ms
    sim.run(0.1)
    stops = [c for c in emu.commands if c[0] >= t0 - 50 and c[3] == 1]
    assert stops and stops[0][0] - t0 <= 100 and stops[0][1:3] == (0.0, 0.0), (t0, emu.commands)
    assert [c for c in emu.commands if t0 - 1000 <= c[0] < t0 - 50] and \
        all(c[3] == 0 for c in emu.commands if t0 - 1000 <= c[0] < t0 - 50)   # it was charging
    assert not emu.running and sim.pack.charger_a == 0.0
    assert sim.run_until(lambda s: s.bms.prot.active(F.T_CHG), 10)
    sim.run(1.5)
    assert not emu.running and all(c[3] == 1 for c in emu.commands if c[0] >= t0)


def test_disabled_parameter_and_hung_bms():
    sim, link, emu = charger_setup(enabled=False)
    sim.run(3)
    assert emu.commands and all(c[3] == 1 for c in emu.commands)
    sim.params.set(P_SPECIAL_CHARGER, 1)
    sim.run(2)
    assert emu.running
    # The BMS stops talking: the charger's own time-out stops it.
    sim.pollers[:] = [lambda s: emu.step(50)]
    sim.run(6)
    assert not emu.running and emu.status & 0x10


def test_display_emulator_matches_the_sim():
    sim = Simulation(chem="LFP", cells=16, soc=0.5)
    sim.pack.charger_a = 10.0
    bms_end, disp_end = BytePipe()
    dp = DisplayPort(bms_end, sim.bms, sim.clock, jbd=True)
    emu = DisplayEmu(disp_end, step=dp.poll)
    sim.run(3)
    s = emu.summary()
    m = sim.bms.meas
    assert s["pack_mv"] == m.pack_mv and s["current_ma"] == m.current_ma
    assert abs(s["current_ma"] - 10000) < 300
    assert s["soc_pm"] == sim.bms.soc.soc_pm and s["cells"] == 16
    assert emu.cells(16) == [m.cell_mv[i] for i in range(16)]
    assert [t[2] for t in emu.temps()] == [m.temp_dc[i] for i in range(4)]
    assert "V" in emu.screen()
