"""Named scenarios: the hazards of docs/safety.md played on the simulated pack.

Each scenario builds a Simulation (16S LFP unless it says otherwise), sets
the pack's starting state and attaches a profile hook that changes the
world over time (charger, load, heat, sensor faults).  The firmware is never
touched: everything it does, it does by itself.  ``run_scenario`` runs one
at full speed; the scenario tests in host_tests assert on the result and the
CLI (``make sim ARGS="--scenario overcharge --out x.json"``) writes its
timeline.

``board`` selects the hardware layer: "chip" runs the real drivers against
the byte-level chip emulators (up to 16 cells), "fake" the value-level
board (faster, any cell count).
"""
from tools.sim.simulator import Simulation


def _board_factory(board, seed):
    if board == "chip":
        from tools.sim.chipboard import ChipBoard
        return lambda pack: ChipBoard(pack, seed=seed + 1)
    return None


class Scenario:
    def __init__(self, name, text, seconds, build):
        self.name = name
        self.text = text
        self.seconds = seconds
        self.build = build


def _sim(board, seed=1, **kw):
    return Simulation(board_factory=_board_factory(board, seed), seed=seed, **kw)


def _at(t_s, fn):
    """A hook that calls ``fn(sim)`` once, when simulated time reaches ``t_s``."""
    done = [False]

    def hook(sim):
        if not done[0] and sim.t_ms >= t_s * 1000:
            done[0] = True
            fn(sim)
    return hook


def _set_at(sim, t_s, part, **attrs):
    """At ``t_s``, set attributes of ``sim.pack`` or ``sim.board`` (``part``)."""
    def apply(sm):
        obj = getattr(sm, part)
        for k, v in attrs.items():
            setattr(obj, k, v)
    sim.hooks.append(_at(t_s, apply))


# ---- scenarios ------------------------------------------------------------
def normal_charge(board="fake"):
    """CC/CV charge from 90 % with a well-behaved charger: no protection trips."""
    s = _sim(board, soc=0.90, params={"bal_mode": 1})
    s.pack.charger_a = 30.0
    s.pack.charger_cv = 16 * 3.45
    return s


def discharge_empty(board="fake"):
    """50 A load from 6 %: UV1 opens the discharge relay and SOC calibrates to 0."""
    s = _sim(board, soc=0.06)
    s.pack.load_a = 50.0
    return s


def overcharge(board="fake"):
    """A charger that ignores the BMS pushes 50 A into a full pack.

    OV1 opens the charge relay after its delay; the pack rests above the
    recovery voltage, so it stays open; a 30 A load later pulls the cells
    below the recovery voltage and the relay recloses, and the cycle repeats.
    """
    s = _sim(board, soc=0.985)
    s.pack.charger_a = 50.0
    s.pack.charger_cv = None

    _set_at(s, 150, "pack", load_a=30.0)
    return s


def overdischarge(board="fake"):
    """A load drains a nearly empty pack; a charger later brings it back.

    UV1 opens the discharge relay (charging stays allowed); the cells rest
    below the recovery voltage, so it stays open until the charger lifts
    them above it.
    """
    s = _sim(board, soc=0.02)
    s.pack.load_a = 50.0

    _set_at(s, 150, "pack", load_a=0.0)
    _set_at(s, 200, "pack", charger_a=20.0, charger_cv=16 * 3.45)
    return s


def overdischarge_l2(board="fake"):
    """A heavy load on a weak, nearly empty cell: level-2 UV opens everything, latched.

    The cell rests just above uv1 (a cell already below it at boot would keep
    the discharge path open from the start); its high resistance sags it
    below uv2 under the 100 A load."""
    s = _sim(board, soc=0.05, params={"uv_delay": 10000})
    c = s.pack.cells[4]
    c.soc = 0.002
    c.r0 *= 4.0
    c.r1 *= 4.0
    s.pack.load_a = 100.0
    return s


def overcurrent(board="fake"):
    """180 A on a 150 A discharge limit, then the load drops to 20 A."""
    s = _sim(board, soc=0.6)
    s.pack.load_a = 180.0

    _set_at(s, 12, "pack", load_a=20.0)
    return s


def charge_overcurrent(board="fake"):
    """A charger set to 120 A on a 100 A charge limit."""
    s = _sim(board, soc=0.5)
    s.pack.charger_a = 120.0
    s.pack.charger_cv = None  # a constant-current source

    _set_at(s, 10, "pack", charger_a=40.0)
    return s


def peak_current(board="fake"):
    """A 320 A inrush on a 300 A peak limit with its 0.5 s delay."""
    s = _sim(board, soc=0.6)
    s.pack.load_a = 0.0

    _set_at(s, 5, "pack", load_a=320.0)
    _set_at(s, 8, "pack", load_a=10.0)
    return s


def short_circuit(board="fake"):
    """A dead short on the output at t = 5 s: latched until reset."""
    s = _sim(board, soc=0.6)
    s.pack.load_a = 10.0

    def short(sim):
        sim.pack.short = True
        if hasattr(sim.board, "afe_trip") and board != "chip":
            sim.board.afe_trip = 1  # the AFE's hardware comparator would trip too

    s.hooks.append(_at(5, short))
    _set_at(s, 6, "pack", short=False)
    return s


def _temp_profile(points):
    """Piecewise-linear cell temperature (degC) forced by an outside heat source."""
    def hook(sim):
        t = sim.t_ms / 1000.0
        if t < points[0][0] or t > points[-1][0]:
            return
        for (t0, v0), (t1, v1) in zip(points, points[1:]):
            if t0 <= t <= t1:
                v = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
                sim.pack.cell_temp_c = v
                return
    return hook


def overtemp(board="fake"):
    """A hot cabinet: cells heat to 70 degC while charging, then cool down."""
    s = _sim(board, soc=0.5, ambient_c=45.0)
    s.pack.cell_temp_c = 45.0
    s.pack.charger_a = 10.0
    s.pack.charger_cv = 16 * 3.45
    s.hooks.append(_temp_profile([(2, 45.0), (30, 70.0), (60, 70.0), (120, 40.0), (400, 40.0)]))
    return s


def cold_charge(board="fake"):
    """A charger connected at -5 degC: charging waits until the pack is warm."""
    s = _sim(board, soc=0.4, ambient_c=-5.0)
    s.pack.cell_temp_c = -5.0
    s.pack.charger_a = 20.0
    s.pack.charger_cv = 16 * 3.45
    s.hooks.append(_temp_profile([(60, -5.0), (160, 15.0), (400, 15.0)]))
    return s


def ntc_failure(board="fake"):
    """A cell NTC goes open circuit at 10 s and is repaired at 40 s."""
    s = _sim(board, soc=0.5)
    s.pack.load_a = 20.0

    def brk(sim):
        sim.board.ntc_fault[2] = "open"

    def fix(sim):
        sim.board.ntc_fault[2] = None
    s.hooks.append(_at(10, brk))
    s.hooks.append(_at(40, fix))
    return s


def afe_lost(board="fake"):
    """The cell monitor stops answering at 10 s and comes back at 30 s."""
    s = _sim(board, soc=0.5)
    s.pack.load_a = 20.0

    _set_at(s, 10, "board", afe_dead=True)
    _set_at(s, 30, "board", afe_dead=False)
    return s


SCENARIOS = {sc.name: sc for sc in (
    Scenario("normal_charge", normal_charge.__doc__, 1800, normal_charge),
    Scenario("discharge_empty", discharge_empty.__doc__, 900, discharge_empty),
    Scenario("overcharge", overcharge.__doc__, 400, overcharge),
    Scenario("overdischarge", overdischarge.__doc__, 700, overdischarge),
    Scenario("overdischarge_l2", overdischarge_l2.__doc__, 30, overdischarge_l2),
    Scenario("overcurrent", overcurrent.__doc__, 60, overcurrent),
    Scenario("charge_overcurrent", charge_overcurrent.__doc__, 60, charge_overcurrent),
    Scenario("peak_current", peak_current.__doc__, 45, peak_current),
    Scenario("short_circuit", short_circuit.__doc__, 20, short_circuit),
    Scenario("overtemp", overtemp.__doc__, 240, overtemp),
    Scenario("cold_charge", cold_charge.__doc__, 300, cold_charge),
    Scenario("ntc_failure", ntc_failure.__doc__, 60, ntc_failure),
    Scenario("afe_lost", afe_lost.__doc__, 50, afe_lost),
)}


def run_scenario(name, board="fake", seconds=None, sample_ms=1000):
    sc = SCENARIOS[name]
    sim = sc.build(board)
    sim.sample_ms = sample_ms
    sim.run(sc.seconds if seconds is None else seconds)
    return sim
