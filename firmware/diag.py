"""REPL diagnostics for mpremote: ``mpremote exec "import diag; diag.snap()"``
or, after Ctrl-C on the running board, ``import diag`` at the prompt.

    diag.snap()      pack, cells, temperatures, current, relays, mode
    diag.faults()    active faults with level, plus bus/driver counters
    diag.log(n=20)   last n events of the event log
    diag.params()    every parameter with its value and unit
Everything prints; nothing changes state.
"""
import sys


def app():
    for name in ("app", "__main__", "main"):
        m = sys.modules.get(name)
        a = getattr(m, "APP", None) if m else None
        if a is not None:
            return a
    raise RuntimeError("no running APP (main.py not started)")


def snap(a=None):
    from bms.contactors import RELAY_NAMES
    from bms.core import MODE_NAMES
    from bms.measurements import ROLE_NAMES
    a = a or app()
    b = a.bms
    m = b.meas
    print("mode %s  soc %d.%d %%  current %d mA  pack %d mV  load %d mV" % (
        MODE_NAMES[b.mode], b.soc.soc_pm // 10, b.soc.soc_pm % 10, m.current_ma,
        m.pack_mv, m.load_mv))
    print("cells %d: max %d (#%d) min %d (#%d) diff %d sum %d" % (
        m.n_cells, m.max_mv, m.max_idx + 1, m.min_mv, m.min_idx + 1, m.diff_mv, m.sum_mv))
    for i in range(0, m.n_cells, 8):
        print("  " + " ".join("%4d%s" % (m.cell_mv[j], "" if m.cell_ok[j] else "?")
                              for j in range(i, min(i + 8, m.n_cells))))
    for i in range(m.n_temps):
        print("  T%d %-8s %5.1f C  status %d" % (i, ROLE_NAMES[m.temp_role[i]],
                                                 m.temp_dc[i] / 10.0, m.temp_status[i]))
    st = b.contactors.state
    print("relays " + " ".join("%s=%d" % (RELAY_NAMES[i], st[i]) for i in range(len(st))))


def faults(a=None):
    from bms import faults as F
    a = a or app()
    b = a.bms
    act = [F.TABLE[i][F.F_NAME] for i in range(F.N_FAULTS) if b.prot.active(i)]
    print("level %d  active: %s" % (b.prot.level, ", ".join(act) or "none"))
    print("bus_errors %d  exceptions %d  last %r" % (b.bus_errors, b.exceptions, b.last_exception))
    hw = a.hw
    for key in ("afe", "shunt"):
        d = hw.get(key)
        if d is not None:
            print("%s: retries %d  crc_errors %d  errors %d" % (
                key, getattr(d, "retries", 0), getattr(d, "crc_errors", 0), getattr(d, "errors", 0)))
    bd = hw.get("board")
    if bd is not None:
        print("afe_fault 0x%04x  init_errors %d  output_errors %d" % (
            bd.afe_fault(), bd.init_errors, bd.output_errors))
        slack = getattr(bd, "backstop_slack", None)
        for k, want, have in (slack() if slack is not None else ()):
            # The chip's threshold steps (docs/safety.md): looser or tighter.
            print("backstop %s asked %d mA, applied %d mA (%d %%)" % (
                k, want, have, have * 100 // want))
    can = hw.get("can")
    if can is not None:
        print("can tec %d rec %d rx_overflow %d bus_off %d" % (
            can.tec, can.rec, can.rx_overflow, can.bus_off_count))


def log(n=20, a=None):
    from bms.eventlog import KIND_NAMES
    a = a or app()
    lg = a.bms.log
    k = len(lg)
    for i in range(max(0, k - n), k):
        seq, ts, kind, x, y = lg.get(i)
        print("%5d %10d %-12s %d %d" % (seq, ts, KIND_NAMES[kind], x, y))


def params(a=None):
    from bms import params as P
    a = a or app()
    p = a.bms.params
    for i in range(P.N_PARAMS):
        print("%3d %-20s %8d %s" % (i, P.TABLE[i][0], p[i], P.TABLE[i][1]))
