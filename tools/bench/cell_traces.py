"""Traces of a cell model the project did not write: PyBaMM's DFN (porous electrode) model.

Generates, once, the small compressed traces in ``tools/bench/data/`` that
``bench_soc`` feeds to the SOC estimator (the traces are committed; PyBaMM is
needed only to regenerate them and is not a project dependency):

    python -m venv /tmp/pb && /tmp/pb/bin/pip install pybamm
    /tmp/pb/bin/python tools/bench/cell_traces.py

Cells: PyBaMM's published parameter sets "Prada2013" (A123 LFP 26650, 2.3 Ah)
and "Chen2020" (LG M50 NMC811/graphite-SiOx, 5 Ah), DFN model, 25 degC.
Their OCV curves are their own (half-cell OCP fits), not our table: the
bench prints how far they are from it.

Per cell and day profile one gzip CSV, one row per 10 s:
``t_s, i_ma (interval mean, + = charge), v_uv (terminal, end of interval),
soc_ppm (true, end of interval)``.  True SOC is the charge between the
model's own 0 % and 100 % points (its voltage limits at a C/50 rate), so a
CV charge to 3.45 V / 4.10 V ends below 100 %, as on real cells.  One more
file per cell holds the C/50 quasi-OCV curve (``soc_ppm, ocv_uv``).

Days (the shape of ``soc_profile.Day``, rates in C of the nominal capacity):
  full:   rest 1 h, mixed discharge 2 h (0.08-0.4 C, 5 min steps), rest,
          CC 0.4 C to the charge voltage then CV until C/20 (a charger's
          end), rest, house load 4 h, rest, solar-like charge 3 h (no CV
          reached), evening load 4 h, rest to 24 h;
  nofull: the same day with the CC/CV charge replaced by a 2 h partial
          charge at 0.35 C that stops short of the charge voltage.
"""
import csv
import gzip
import os
import random
import sys

import pybamm

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
CELLS = {
    # name: (parameter set, charge voltage, nominal Ah, upper / lower voltage for 100 % / 0 %)
    "lfp": ("Prada2013", 3.45, 2.3),
    "nmc": ("Chen2020", 4.10, 5.0),
}
PERIOD_S = 10


def _steps(kind, cv, cap, seed=3):
    r = random.Random(seed)
    s = ["Rest for 1 hour"]
    for _ in range(24):
        s.append("Discharge at %.4f A for 5 minutes" % (r.uniform(0.08, 0.4) * cap))
    s.append("Rest for 30 minutes")
    if kind == "full":
        s.append("Charge at %.4f A until %.3f V" % (0.4 * cap, cv))
        s.append("Hold at %.3f V until %.4f A" % (cv, 0.05 * cap))
        s.append("Rest for 1 hour")
    else:
        s.append("Charge at %.4f A for 2 hours or until %.3f V" % (0.35 * cap, cv))
        s.append("Rest for 90 minutes")
    for _ in range(24):
        s.append("Discharge at %.4f A for 10 minutes" % (r.uniform(0.05, 0.2) * cap))
    s.append("Rest for 1 hour")
    for k in range(12):   # solar: half sine in 15 min steps, up to 0.35 C
        import math
        a = 0.35 * cap * math.sin(math.pi * (k + 0.5) / 12)
        s.append("Charge at %.4f A for 15 minutes or until %.3f V" % (a, cv))
    for _ in range(36):
        s.append("Discharge at %.4f A for 400 seconds" % (r.uniform(0.05, 0.25) * cap))
    s.append("Rest for 4 hours")
    return s


def _model_capacity(model, pv):
    """Ah between the model's upper and lower voltage limits at C/50, and its quasi-OCV."""
    cap = pv["Nominal cell capacity [A.h]"]
    exp = pybamm.Experiment(["Discharge at %.5f A for 80 hours or until %.3f V" % (cap / 50.0,
                             pv["Lower voltage cut-off [V]"])], period="2 minutes")
    sim = pybamm.Simulation(model, parameter_values=pv, experiment=exp)
    sol = sim.solve(initial_soc=1.0)
    q = sol["Discharge capacity [A.h]"].entries
    v = sol["Voltage [V]"].entries
    i = sol["Current [A]"].entries
    return float(q[-1]), q, v, i


def generate(name):
    pset, cv, cap_nom = CELLS[name]
    pv = pybamm.ParameterValues(pset)
    model = pybamm.lithium_ion.DFN()
    qtot, q, v, i = _model_capacity(model, pv)
    # Quasi-OCV with the C/50 IR drop removed by the model's own resistance is not
    # available cheaply; at C/50 the overpotential is a few mV, kept as is.
    with gzip.open(os.path.join(DATA, "%s_ocv.csv.gz" % name), "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["soc_ppm", "ocv_uv"])
        for qq, vv in zip(q, v):
            w.writerow([int(round((1.0 - qq / qtot) * 1e6)), int(round(vv * 1e6))])
    for kind in ("full", "nofull"):
        exp = pybamm.Experiment(_steps(kind, cv, cap_nom), period="%d seconds" % PERIOD_S)
        sim = pybamm.Simulation(model, parameter_values=pv, experiment=exp)
        sol = sim.solve(initial_soc=0.6)
        t = sol["Time [s]"].entries
        dq = sol["Discharge capacity [A.h]"].entries
        vv = sol["Voltage [V]"].entries
        s0 = 0.6
        rows = []
        nxt = 0.0
        k = 0
        n = len(t)
        prev_t = 0.0
        prev_q = 0.0
        while nxt <= t[-1] and k < n:
            while k < n - 1 and t[k] < nxt:
                k += 1
            if t[k] + 1e-6 < nxt:
                break
            # interpolate to nxt
            if k > 0 and t[k] > nxt:
                a = (nxt - t[k - 1]) / (t[k] - t[k - 1])
                qn = dq[k - 1] + a * (dq[k] - dq[k - 1])
                vn = vv[k - 1] + a * (vv[k] - vv[k - 1])
            else:
                qn = dq[k]
                vn = vv[k]
            if nxt > 0:
                i_ma = -(qn - prev_q) * 3600.0 / (nxt - prev_t) * 1000.0
            else:
                i_ma = 0.0
            soc = s0 - qn / qtot
            rows.append((int(round(nxt)), int(round(i_ma)), int(round(vn * 1e6)),
                         int(round(soc * 1e6))))
            prev_t = nxt
            prev_q = qn
            nxt += PERIOD_S
        with gzip.open(os.path.join(DATA, "%s_%s.csv.gz" % (name, kind)), "wt", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "i_ma", "v_uv", "soc_ppm"])
            w.writerows(rows)
        print(name, kind, len(rows), "rows, %.2f h, capacity %.3f Ah (nominal %.2f)"
              % (rows[-1][0] / 3600.0, qtot, cap_nom), flush=True)


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    for nm in (sys.argv[1:] or list(CELLS)):
        generate(nm)
