"""Runs the unchanged firmware core against the pack model in virtual time.

The loop asks the firmware scheduler how long until its next task, moves
the physics by exactly that much, advances the virtual clock and steps the
BMS: simulated time is limited only by CPU, and a run with the same seed is
identical every time.
"""
import json

from bms import faults as F
from bms.contactors import RELAY_NAMES
from bms.core import Bms, MODE_NAMES
from bms.eventlog import EventLog, KIND_NAMES
from bms.params import CHEM_NAMES, ParamSet, index as param_index
from bms.ticks import VirtualClock, ticks_diff

from tools.sim.fakeboard import FakeBoard
from tools.sim.pack import Pack

MAX_PHYS_DT_MS = 50


class Simulation:
    def __init__(self, chem="LFP", cells=16, capacity_ah=100.0, soc=0.5, seed=1,
                 bms_soc_pm=None, params=None, ambient_c=25.0, clock_start=0,
                 board_factory=None, flash_dir=None, update_key=None, **pack_kw):
        self.pack = Pack(chem, cells, capacity_ah, soc, seed, ambient_c=ambient_c, **pack_kw)
        self.clock_start = clock_start
        self.clock = VirtualClock(clock_start)
        self.board = board_factory(self.pack) if board_factory else FakeBoard(self.pack, seed + 1)
        self.params = ParamSet(CHEM_NAMES.index(chem), max_cells=self.board.max_cells)
        over = {"cell_count": cells, "capacity": int(round(capacity_ah * 10))}
        over.update(params or {})
        self.params.set_many([(param_index(k), v) for k, v in over.items()])
        self.log = EventLog(512)
        if bms_soc_pm is None:
            bms_soc_pm = int(round(soc * 1000))
        self.bms = Bms(self.board, self.params, self.clock, self.log, soc_pm=bms_soc_pm)
        self.t_ms = 0
        self.timeline = []
        self.sample_ms = 1000
        self._next_sample = 0
        self.hooks = []  # fn(sim) called after every step (scenario profiles)
        self.pollers = []  # fn(sim) called after every step (comms links)
        # A link with traffic keeps the steps at 1 ms until then, as the
        # board's loop stays in 1 ms sleeps after input (app.IDLE_BUSY_MS).
        self.busy_until_ms = 0
        self.fs = self.plog = self.updater = self.services = None
        if flash_dir is not None:
            self.attach_flash(flash_dir, update_key)

    def attach_flash(self, flash_dir=True, update_key=None):
        """Persistent log and firmware updater on a host directory (True: a temp dir)."""
        from bms.persistlog import PersistLog
        from bms.update import Updater
        from tools.sim.flashdir import FlashDir
        self.fs = FlashDir(None if flash_dir is True else flash_dir)
        self.plog = PersistLog(self.fs)
        self.plog.attach(self.bms.meas, self.bms.soc)
        self.log.sink = self.plog.sink
        self.updater = Updater(self.fs, key=update_key)
        # A board flushes from its services poller between cycles; here after each step.
        self.pollers.append(lambda sim: sim.plog.flush() if sim.plog.pending else 0)
        # The incremental finish of an update: one bounded step per cycle, as on a board.
        self.pollers.append(lambda sim: sim.updater.poll())

    def attach_settings(self, keep=("chemistry", "cell_count")):
        """Settings on the flash (``attach_flash`` first): stored values load now,
        every parameter change is saved after the step that made it.  ``keep``:
        the values of this run that describe the simulated pack itself win over
        stored ones (the model has the cells it was built with)."""
        from bms.params import index
        from bms.store import SettingsStore
        self.store = SettingsStore(self.fs)
        mine = [(index(k), self.params[index(k)]) for k in keep]
        self.settings_report = self.store.load_params(self.params)
        if any(self.params[i] != v for i, v in mine):
            self.params.set_many(mine)
        self.store.save_params(self.params)
        self._params_saved = self.params.version

        def save(sim):
            if sim.params.version != sim._params_saved:
                sim._params_saved = sim.params.version
                sim.store.save_params(sim.params)
        self.pollers.append(save)

    def attach_services(self, lease_secret=None, serial="SIM00001", flash_dir=True):
        """The board's services poller (settings, state, flash log, lease) on a
        host directory, as bms.services runs it on a board; call before PcLink."""
        from bms import lease as LS
        from bms.services import Services
        from bms.store import SettingsStore, State
        if self.fs is None:
            self.attach_flash(flash_dir)
        store = SettingsStore(self.fs)
        state = store.load_state() or State()
        lease = LS.Lease(lease_secret, serial, state) if lease_secret else None
        self.services = Services(self.bms, store, state, self.plog, lease)
        self.pollers.append(lambda sim: sim.services.poll())
        return self.services

    # ---- running -----------------------------------------------------------
    def step(self):
        wait = self.bms.sched.ms_to_next()
        if wait <= 0:
            wait = 1
        if wait > MAX_PHYS_DT_MS:
            wait = MAX_PHYS_DT_MS
        if self.busy_until_ms > self.t_ms:
            wait = 1
        self.pack.step(wait / 1000.0)
        self.clock.advance(wait)
        self.t_ms += wait
        self.bms.step()
        self._after_step()

    def _after_step(self):
        """Scenario hooks, comms pollers and the timeline sample after each step."""
        for h in self.hooks:
            h(self)
        for p in self.pollers:
            p(self)
        if self.t_ms >= self._next_sample:
            self._next_sample += self.sample_ms
            self.timeline.append(self.sample())

    def run(self, seconds):
        end = self.t_ms + int(seconds * 1000)
        while self.t_ms < end:
            self.step()

    def run_until(self, pred, max_seconds):
        end = self.t_ms + int(max_seconds * 1000)
        while self.t_ms < end:
            if pred(self):
                return True
            self.step()
        return pred(self)

    # ---- observing ---------------------------------------------------------
    def active_faults(self):
        p = self.bms.prot
        return [F.TABLE[i][F.F_NAME] for i in range(F.N_FAULTS) if p.active(i)]

    def sample(self):
        m = self.bms.meas
        c = self.bms.contactors.state
        return {
            "t_s": round(self.t_ms / 1000.0, 3),
            "cell_max_mv": m.max_mv, "cell_max_idx": m.max_idx + 1,
            "cell_min_mv": m.min_mv, "cell_min_idx": m.min_idx + 1,
            "pack_mv": m.pack_mv, "current_ma": m.current_ma,
            "true_current_ma": int(self.pack.current_a * 1000),
            "soc_pm": self.bms.soc.soc_pm, "true_soc_pm": int(self.pack.true_soc() * 1000),
            "t_cell_dc": m.tmax[2], "t_power_dc": m.tmax[0], "t_balance_dc": m.tmax[1],
            "relays": {RELAY_NAMES[i]: c[i] for i in range(len(RELAY_NAMES))},
            "mode": MODE_NAMES[self.bms.mode],
            "faults": self.active_faults(),
            "balancing": self.bms.balancer.count,
        }

    def events(self):
        out = []
        for i in range(len(self.log)):
            seq, ts, kind, a, b = self.log.get(i)
            t_s = ticks_diff(ts, self.clock_start) / 1000.0
            e = {"seq": seq, "t_s": t_s, "kind": KIND_NAMES[kind], "a": a, "b": b}
            if kind in (1, 2):
                e["fault"] = F.TABLE[a][F.F_NAME]
            elif kind == 3:
                e["relay"] = RELAY_NAMES[a]
            out.append(e)
        return out

    def write_json(self, path, scenario=None):
        with open(path, "w") as f:
            json.dump({"scenario": scenario, "timeline": self.timeline,
                       "events": self.events()}, f, indent=1)

    def write_csv(self, path):
        import csv
        keys = ["t_s", "cell_max_mv", "cell_max_idx", "cell_min_mv", "cell_min_idx", "pack_mv",
                "current_ma", "true_current_ma", "soc_pm", "true_soc_pm", "t_cell_dc",
                "t_power_dc", "t_balance_dc", "mode", "balancing"]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys + list(RELAY_NAMES) + ["faults"])
            for s in self.timeline:
                w.writerow([s[k] for k in keys] + [s["relays"][r] for r in RELAY_NAMES]
                           + [" ".join(s["faults"])])
