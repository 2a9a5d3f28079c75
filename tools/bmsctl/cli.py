"""bmsctl: the PC tool for the MicroPython BMS over RS485 Modbus RTU.

Works with a USB-RS485 adapter (``--port /dev/ttyUSB0``) or the simulator's
pty (``make sim`` prints it; ``/tmp/bms-pc`` by default), or over Bluetooth
with ``--ble ADDRESS`` (bleak; the same Modbus PDUs inside the BLE framing of
``comms.ble_link``, so every command works, ``update`` included).  Names, units and
addresses come from the firmware's register map and parameter table.

Exit status: 0 done, 1 refused by the BMS or invalid input (the reason is
printed), 2 no link.
"""
import argparse
import csv
import getpass
import json
import os
import sys
import time

from rich.console import Console, Group
from rich.table import Table

from tools.bmsctl.client import (BmsClient, BmsError, decode_monitor, fault_names, mode_name,
                                 param_display, param_index, param_parse, relay_names)
from bms import faults as F
from bms.params import CHEM_NAMES, TABLE as PARAM_TABLE, check as params_check
from comms import registers as R
from tools.bleclient import LinkError

DEFAULT_PORT = os.environ.get("BMS_PORT", "/tmp/bms-pc")
console = Console()


class UsageError(Exception):
    pass


# ---- rendering -----------------------------------------------------------
def _v(mv):
    return "%.3f" % (mv / 1000.0)


def _t(dc):
    if dc in (-32768, 32767):
        return "-"
    return "%.1f" % (dc / 10.0)


def summary_table(m, info=None):
    t = Table(title="BMS %s" % (info.get("model", "") if info else ""), show_header=False)
    t.add_column("k")
    t.add_column("v")
    t.add_row("Pack voltage", "%s V" % _v(m["pack_voltage"]))
    t.add_row("Current", "%.3f A" % (m["current"] / 1000.0))
    t.add_row("SOC / SOH", "%.1f %% / %.1f %%" % (m["soc"] / 10.0, m["soh"] / 10.0))
    t.add_row("Remaining / full", "%.2f / %.2f Ah" % (m["remaining_capacity"] / 1000.0,
                                                       m["full_capacity"] / 1000.0))
    t.add_row("Cycles", str(m["cycles"]))
    t.add_row("Cell max", "%s V (#%d)" % (_v(m["cell_max"]), m["cell_max_index"]))
    t.add_row("Cell min", "%s V (#%d)" % (_v(m["cell_min"]), m["cell_min_index"]))
    t.add_row("Cell diff / avg", "%d mV / %s V" % (m["cell_diff"], _v(m["cell_avg"])))
    temps = []
    for role in ("power", "balance", "cell", "ambient"):
        hi = m["t_%s_max" % role]
        if hi != -32768:
            temps.append("%s %s..%s" % (role, _t(m["t_%s_min" % role]), _t(hi)))
    t.add_row("Temperatures (degC)", ", ".join(temps) or "-")
    t.add_row("Mode", mode_name(m["mode"]))
    t.add_row("Relays closed", ", ".join(relay_names(m["relays"])) or "none")
    t.add_row("Balancing", "%d cells" % m["balancing_count"])
    prot = fault_names([m["protection_0"], m["protection_1"]])
    alarms = fault_names([m["alarm_0"], m["alarm_1"]])
    t.add_row("Protections", "[red]%s[/red]" % ", ".join(prot) if prot else "[green]none[/green]")
    t.add_row("Alarms", "[yellow]%s[/yellow]" % ", ".join(alarms) if alarms else "none")
    return t


def cells_table(cells, m, cols=None):
    if cols is None:
        cols = max(4, min(16, (console.width - 4) // 13))
    t = Table(title="Cell voltages (V)", show_header=False)
    for _ in range(cols):
        t.add_column()
    bal = 0
    words = [m["balance_%d" % k] for k in range(16)]
    row = []
    for i, mv in enumerate(cells):
        s = "%d:%s" % (i + 1, "invalid" if mv == 0xFFFF else _v(mv))
        if words[i // 16] & (1 << (i % 16)):
            s += " B"
            bal += 1
        if i + 1 == m["cell_max_index"]:
            s = "[red]%s[/red]" % s
        elif i + 1 == m["cell_min_index"]:
            s = "[blue]%s[/blue]" % s
        row.append(s)
        if len(row) == cols:
            t.add_row(*row)
            row = []
    if row:
        t.add_row(*(row + [""] * (cols - len(row))))
    return t


def temps_table(temps):
    t = Table(title="Temperature sensors")
    for c in ("#", "role", "degC", "status"):
        t.add_column(c)
    for s in temps:
        t.add_row(str(s["index"] + 1), s["role"], "%.1f" % s["temp_c"], s["status"])
    return t


# ---- commands ------------------------------------------------------------
def cmd_info(c, a):
    info = c.info()
    t = Table(title="Device identity")
    t.add_column("field")
    t.add_column("value")
    for k, v in info.items():
        t.add_row(k, str(v))
    for k, v in c.names().items():
        if k in ("ble_name", "device_name"):
            t.add_row(k, v or "-")
    st = c.auth_state()
    t.add_row("unlocked role", st["role"])
    console.print(t)


def limits_table(m, lim, bal, lease):
    """Limits (CCL/DCL, status block), per-cell balancing and the lease."""
    t = Table(title="Limits, balancing, lease", show_header=False)
    t.add_column("k")
    t.add_column("v")
    t.add_row("CCL / DCL (current limits)",
              "%.1f A / %.1f A" % (lim["charge_current_limit"] / 10.0,
                                   lim["discharge_current_limit"] / 10.0))
    t.add_row("CVL / DVL (voltage limits)",
              "%.1f V / %.1f V" % (lim["charge_voltage_limit"] / 10.0,
                                   lim["discharge_voltage_limit"] / 10.0))
    bled = ["%d: %d mAh" % (i + 1, v) for i, v in enumerate(bal["cell_mah"]) if v]
    t.add_row("Balancing", "%s, %d mA per cell" % (bal["state"], bal["current_ma"]))
    t.add_row("Bled since boot", ", ".join(bled) if bled else "none")
    if lease["state"] != "not configured":
        t.add_row("Lease", lease_text(lease))
    return t


def _monitor_view(c, info, by_module=False):
    m = c.monitor()
    cells = c.cells(m["cell_count"])
    extra = limits_table(m, c.limits(), c.balance(m["cell_count"]), c.lease())
    ct = cells_table(cells, m)
    if by_module:
        head, mods = c.modules()
        if mods:
            ct = cells_by_module_table(cells, m, head, mods)
        else:
            ct = Group(ct, "(no CAN slave modules on this board: cells not grouped)")
    return Group(summary_table(m, info), extra, ct, temps_table(c.temps()))


def cmd_monitor(c, a):
    info = c.info()
    if a.once:
        console.print(_monitor_view(c, info, a.by_module))
        return
    from rich.live import Live
    with Live(_monitor_view(c, info, a.by_module), console=console, refresh_per_second=4) as live:
        n = 0
        while a.count <= 0 or n < a.count:
            time.sleep(a.interval)
            live.update(_monitor_view(c, info, a.by_module))
            n += 1


def cmd_alarms(c, a):
    m = c.monitor()
    active = fault_names([m["faults_0"], m["faults_1"]])
    t = Table(title="Active faults and alarms (level: %s)"
              % F.LEVEL_NAMES[m["fault_level"]] if m["fault_level"] < 4 else "?")
    for col in ("fault", "level", "reaction", "latched"):
        t.add_column(col)
    for name in active:
        row = F.TABLE[F.index(name)]
        react = [n for bit, n in ((F.R_CHG, "charge"), (F.R_DSG, "discharge"), (F.R_L2, "level-2"),
                                  (F.R_BAL, "balancing"), (F.R_HEAT, "heater"))
                 if row[F.F_REACTION] & bit]
        t.add_row(name, F.LEVEL_NAMES[row[F.F_LEVEL]], ", ".join(react) or "alarm only",
                  "yes" if row[F.F_POLICY] else "no")
    console.print(t if active else "[green]no active faults or alarms[/green]")


def params_tables(rows, width=80):
    """One narrow table per Param page; enum values by name, units shown once."""
    from rich import box
    from tools.bmsctl.paramview import enum_name, grouped
    out = []
    for page, sel in grouped(rows):
        t = Table(title=page, box=box.SIMPLE_HEAD, title_justify="left", width=min(width, 80))
        t.add_column("name", no_wrap=True)
        t.add_column("value", no_wrap=True, justify="right")
        t.add_column("range", no_wrap=True)
        t.add_column("description", ratio=1, overflow="fold")
        for r in sel:
            e = enum_name(r["index"], r["raw"])
            if e is not None:
                val = e
                names = "/".join(enum_name(r["index"], v)
                                 for v in range(r["min"], r["max"] + 1))
                rng = names if len(names) <= 14 else "%d..%d" % (r["min"], r["max"])
            else:
                val = ("%s %s" % (r["value"], r["unit"])).strip()
                lo, _ = param_display(r["index"], r["min"])
                hi, _ = param_display(r["index"], r["max"])
                rng = "%s..%s" % (lo, hi)
            t.add_row(r["name"], val, rng, r["text"])
        out.append(t)
    return Group(*out)


def _parse_changes(items):
    changes = {}
    for item in items:
        if "=" not in item:
            raise UsageError("expected name=value, got %r" % item)
        name, text = item.split("=", 1)
        i = param_index(name.strip())
        if i < 0:
            raise UsageError("unknown parameter %r (see `bmsctl params get`)" % name)
        try:
            changes[i] = param_parse(i, text)
        except ValueError as e:
            raise UsageError(str(e))
    return changes


def cmd_params(c, a):
    if a.action == "get":
        rows = c.params()
        if a.names:
            want = set(a.names)
            unknown = want - {r["name"] for r in rows}
            if unknown:
                raise UsageError("unknown parameter(s): %s" % ", ".join(sorted(unknown)))
            rows = [r for r in rows if r["name"] in want]
        if a.json:
            print(json.dumps(rows, indent=1))
            return
        console.print(params_tables(rows, console.width))
        return
    if a.action in ("save", "load"):
        from tools.bmsctl import paramfile
        if len(a.names) != 1:
            raise UsageError("params %s FILE" % a.action)
        if a.action == "save":
            n = paramfile.save(c, a.names[0])
            console.print("%d parameters -> %s" % (n, a.names[0]))
            return
        paramfile.load(c, a.names[0], console, dry_run=a.dry_run)
        return
    changes = _parse_changes(a.names)
    if not changes:
        raise UsageError("params set name=value ...")
    from bms.params import P_CHEMISTRY, TABLE
    if P_CHEMISTRY in changes and len(changes) > 1:
        # A chemistry change is its own request (it loads that chemistry's
        # defaults): check the whole result first with the firmware's own
        # rules so that nothing is half applied.  Otherwise the BMS decides.
        cur = [r["raw"] for r in c.params()]
        new = list(cur)
        if changes[P_CHEMISTRY] != cur[P_CHEMISTRY]:
            for j, row in enumerate(TABLE):
                if row[5]:
                    new[j] = row[4][changes[P_CHEMISTRY]]
        for i, v in changes.items():
            new[i] = v
        bad = params_check(new, c.info().get("max_cells", 256))
        if bad is not None:
            raise BmsError("refused: %s" % bad[1], 3, bad[0])
        # One FC16 over the whole block (the BMS loads the chemistry's
        # defaults, then these values on top): a refusal there (factory-only
        # rows, step limits, the board's own rules) changes nothing, where a
        # separate chemistry write had already loaded the new defaults.
        c.write(R.A_PARAMS, [v & 0xFFFF for v in new])
    else:
        c.set_params(changes)
    from bms.params import P_MODBUS_ADDR, P_MODBUS_BAUD
    old_link = (c.address, getattr(getattr(c.mb, "comm_params", None), "baudrate", None))
    c.follow(changes)
    after = {r["index"]: r for r in c.params()}
    from tools.bmsctl.client import param_value_text
    for i, want in changes.items():
        r = after[i]
        if r["raw"] != want:
            raise BmsError("%s: the BMS kept %s" % (r["name"], param_value_text(i, r["raw"])), 3)
        console.print("%s = %s" % (r["name"], param_value_text(i, r["raw"])))
    if P_MODBUS_ADDR in changes and c.address != old_link[0]:
        console.print("[yellow]note:[/yellow] the BMS now answers at address %d: "
                      "use --address %d" % (c.address, c.address))
    if P_MODBUS_BAUD in changes and old_link[1] is not None and \
            c.mb.comm_params.baudrate != old_link[1]:
        console.print("[yellow]note:[/yellow] the BMS now talks at %d baud: use --baud %d"
                      % (c.mb.comm_params.baudrate, c.mb.comm_params.baudrate))
    hint = current_rating_hint(after)
    if hint:
        console.print("[yellow]note:[/yellow] " + hint)


# The manual's setup: peak at most 3 x the discharge current the board is rated
# for ("If you order bms 40A ... set the max value of peak current to 120A").
PEAK_PER_DSG = 3


def current_rating_hint(rows):
    """A warning when the peak current setting is far above the discharge
    over-current (a 40 A board left with the 300 A default peak trips late
    on a fault current its parts cannot carry), else None."""
    from bms.params import P_DSG_OC, P_PEAK, P_SC
    dsg = rows[P_DSG_OC]["raw"]
    peak = rows[P_PEAK]["raw"]
    if peak <= PEAK_PER_DSG * dsg:
        return None
    return ("peak = %.1f A is more than %d x dsg_oc (%.1f A); if dsg_oc is your board's rating, "
            "set peak (and short_circuit = %.1f A) to what its relays or MOSFETs can carry, "
            "e.g. peak = %.1f A" % (peak / 10, PEAK_PER_DSG, dsg / 10, rows[P_SC]["raw"] / 10,
                                    PEAK_PER_DSG * dsg / 10))


def _done(res, text):
    console.print(text)
    return res


def cmd_normal(c, a):
    did = False
    if a.chemistry:
        name = a.chemistry.upper()
        if name not in CHEM_NAMES:
            raise UsageError("chemistry is one of %s" % ", ".join(CHEM_NAMES))
        pi = param_index("chemistry")
        cur = c.read(R.A_PARAMS + pi, 1)[0]
        if cur == CHEM_NAMES.index(name):
            # Writing the same value changes nothing (no defaults loaded):
            # say so instead of claiming it.
            raise BmsError("chemistry is already %s: nothing changed (`--defaults %s` reloads "
                           "its defaults)" % (name, name), 3)
        c.set_params({pi: CHEM_NAMES.index(name)})
        if c.read(R.A_PARAMS + pi, 1)[0] != CHEM_NAMES.index(name):
            raise BmsError("chemistry: the BMS kept %s" % CHEM_NAMES[cur], 3)
        console.print("chemistry %s (its protection defaults loaded)" % name)
        did = True
    for flag, pname in (("chg", "chg_switch"), ("dsg", "dsg_switch")):
        v = getattr(a, flag)
        if v is not None:
            c.set_params({param_index(pname): 1 if v == "on" else 0})
            if c.read(R.A_PARAMS + param_index(pname), 1)[0] != (1 if v == "on" else 0):
                raise BmsError("%s: the BMS did not take it" % pname, 3)
            console.print("%s %s" % (pname, v))
            did = True
    if a.defaults is not None:
        name = a.defaults.upper()
        if name not in CHEM_NAMES:
            raise UsageError("defaults for one of %s" % ", ".join(CHEM_NAMES))
        c.command("defaults", CHEM_NAMES.index(name))
        console.print("defaults for %s loaded" % name)
        did = True
    if a.reset_faults:
        c.command("reset_faults", 1)
        m = c.monitor()
        left = fault_names([m["faults_0"], m["faults_1"]])
        console.print("faults reset%s" % ("; still active: " + ", ".join(left) if left else ""))
        did = True
    if a.clear_log:
        c.command("clear_log", 2 if a.flash else 1)
        console.print("event log cleared%s" % (" (RAM and flash)" if a.flash else " (RAM)"))
        did = True
    if a.sleep and a.wake:
        raise UsageError("--sleep or --wake, not both")
    for flag, cmd, text in (("sleep", "sleep", "sleep: relays open until woken"),
                            ("wake", "wake", "awake: relays may close again")):
        if getattr(a, flag):
            c.command(cmd, 1)
            console.print(text)
            did = True
    if a.restart:
        # The BMS restarts right after taking it: no result can be read back.
        c.command("restart", 1, wait=False)
        console.print("restart sent (the BMS restarts now; the link drops for a moment)")
        did = True
    if not did:
        raise UsageError("nothing to do: see `bmsctl normal --help`")


def cmd_calibrate(c, a):
    if a.what == "zero":
        res = c.command("cal_zero", 1)
        console.print("zero-current calibration done: offset now %d mA" % res["value"])
        return
    if a.amps is None:
        raise UsageError("calibrate current needs the measured current in A")
    ma = int(round(abs(a.amps) * 1000))
    res = c.command("cal_current", ma)
    console.print("current calibrated to %.3f A: gain now %.4f" % (ma / 1000.0,
                                                                    res["value"] / 10000.0))


def parse_percent(text):
    t = text.strip().rstrip("%").strip()
    try:
        v = float(t)
    except ValueError:
        raise UsageError("SOC %r: give a percentage, e.g. 50 or 50%%" % text)
    if not 0 <= v <= 100:
        raise UsageError("SOC is 0..100 %")
    return v


def cmd_soc(c, a):
    if a.action == "forget-ocv":
        if a.percent is not None:
            raise UsageError("soc forget-ocv takes no value")
        c.command("ocv_forget", 1)
        console.print("learned OCV table forgotten: the chemistry's table until the next "
                      "rests after a full or empty anchor")
        return
    if a.percent is None:
        raise UsageError("soc set <percent>")
    pct = parse_percent(a.percent)
    res = c.command("soc_set", int(round(pct * 10)))
    console.print("SOC set to %.1f %%" % (res["value"] / 10.0))


_BAT_UNITS = {"bat_nominal": ("V", 100.0), "bat_capacity": ("Ah", 10.0)}


def cmd_battery(c, a):
    """Battery data (read) and, with ``set``, the battery code fields (factory role)."""
    if a.action == "set":
        if not a.fields:
            raise UsageError("battery set type=... nominal=51.2V capacity=280Ah maker=... "
                             "date=YYYY-MM-DD")
        for item in a.fields:
            if "=" not in item:
                raise UsageError("expected field=value, got %r" % item)
            k, v = item.split("=", 1)
            name = "bat_" + k.strip()
            if name in _BAT_UNITS:
                unit, scale = _BAT_UNITS[name]
                try:
                    raw = int(round(float(v.strip().rstrip(unit).strip()) * scale))
                except ValueError:
                    raise UsageError("%s: a number in %s" % (k, unit))
                if not 0 <= raw <= 65535:
                    raise UsageError("%s out of range" % k)
                c.set_name(name, raw)
            elif name in ("bat_type", "bat_maker", "bat_date"):
                c.set_name(name, v.strip())
            else:
                raise UsageError("battery fields: type, nominal, capacity, maker, date")
    b = c.battery()
    n = c.names()
    t = Table(title="Battery", show_header=False)
    t.add_column("k")
    t.add_column("v")
    t.add_row("SOH", "%.1f %%" % (b["soh"] / 10.0))
    t.add_row("Learned / rated capacity", "%s / %.2f Ah" % (
        "%.2f" % (b["learned_capacity"] / 1000.0) if b["learned_capacity"] else "not learned",
        b["rated_capacity"] / 1000.0))
    t.add_row("Capacity of the last calibration run",
              "%.2f Ah" % (b["cal_capacity"] / 1000.0) if b["cal_capacity"] else "none yet")
    t.add_row("Discharged over its life", "%.1f Ah" % (b["discharged_capacity"] / 1000.0))
    t.add_row("Cycles", str(b["cycles"]))
    lo, hi = b["ocv_offset_min"], b["ocv_offset_max"]
    t.add_row("Learned OCV table", "moved %+.1f .. %+.1f mV from the chemistry's (%d rests "
              "since boot)" % (lo / 10.0, hi / 10.0, b["ocv_learned_count"])
              if lo or hi else "not learned: the chemistry's table (%d rests since boot)"
              % b["ocv_learned_count"])
    t.add_row("Type / maker / date", "%s / %s / %s" % (n["bat_type"] or "-",
                                                      n["bat_maker"] or "-",
                                                      n["bat_date"] or "-"))
    t.add_row("Nameplate", "%.2f V, %.1f Ah" % (n["bat_nominal"] / 100.0,
                                               n["bat_capacity"] / 10.0))
    console.print(t)


def cmd_name(c, a):
    field = {"ble": "ble_name", "device": "device_name"}[a.which]
    if a.value is not None:
        c.set_name(field, a.value)
    v = c.names()[field]
    if a.value is not None and v != a.value:
        raise BmsError("%s: the BMS kept %r" % (field, v), 3)
    console.print("%s: %s%s" % (field, v or "(not set)",
                                " (advertised from the next restart)"
                                if a.value is not None and a.which == "ble" else ""))


def cmd_clock(c, a):
    import datetime
    if a.action == "set":
        t = time.time() if a.unix is None else a.unix
        c.set_clock(int(t))
    now = c.clock()
    if not now:
        console.print("BMS clock not set since boot (`bmsctl clock set` sets it from this PC)")
        if a.action == "set":
            raise BmsError("the BMS did not take the time", 3)
        return
    iso = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    console.print("BMS clock %s (PC %+d s)" % (iso, now - int(time.time())))


def _duration(s):
    d, s = divmod(int(s), 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return "%d d %02d h %02d min" % (d, h, m)


def lease_text(ls):
    if ls["state"] == "active":
        return "active, %s of operating time left" % _duration(ls["remaining_s"])
    if ls["state"] == "expired":
        return "EXPIRED: discharge disabled (charging still allowed); enter a renewal code"
    return ls["state"]


def cmd_lease(c, a):
    if a.action == "enter":
        if not a.code:
            raise UsageError("lease enter CODE")
        c.enter_lease(a.code)
        ls = c.lease()
        if ls["days"]:
            console.print("code accepted: %d days added" % ls["days"])
        else:
            console.print("code accepted: lease removed")
    ls = c.lease()
    t = Table(title="Lease", show_header=False)
    t.add_column("k")
    t.add_column("v")
    t.add_row("state", lease_text(ls))
    t.add_row("last code counter", str(ls["counter"]))
    if ls["retry_s"]:
        t.add_row("next code taken in", "%d s" % ls["retry_s"])
    console.print(t)


def cmd_graph(c, a):
    import matplotlib
    if not a.live:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ts, cells, cur = [], [], []
    t0 = time.monotonic()
    bms0 = c.clock()   # the BMS's own time, if set; else time since the start
    info = c.info()
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    fig.suptitle(_graph_title(info, bms0))
    if a.live:
        plt.ion()
        plt.show()
    n = 0
    while True:
        m = c.monitor()
        cv = c.cells(m["cell_count"])
        ts.append(_graph_t(c, bms0, t0))
        cells.append(cv)
        cur.append(m["current"] / 1000.0)
        n += 1
        if a.live:
            _plot(ax1, ax2, ts, cells, cur)
            plt.pause(0.01)
        if (a.samples and n >= a.samples) or (not a.samples and ts[-1] >= a.seconds):
            break
        time.sleep(a.interval)
    _plot(ax1, ax2, ts, cells, cur)
    fig.savefig(a.out, dpi=100)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "current_a"] + ["cell%d_v" % (i + 1) for i in range(len(cells[0]))])
            for t, i, cv in zip(ts, cur, cells):
                w.writerow(["%.3f" % t, "%.3f" % i] + ["%.3f" % (v / 1000.0) for v in cv])
    console.print("%d samples -> %s" % (n, a.out))


def _graph_title(info, bms0):
    import datetime
    start = (datetime.datetime.fromtimestamp(bms0, datetime.timezone.utc)
             .strftime("%Y-%m-%d %H:%M:%SZ") if bms0 else "BMS clock not set")
    return "%s %s: cells and current from %s" % (info.get("model", "BMS"),
                                                 info.get("serial", ""), start)


def _graph_t(c, bms0, t0):
    """Seconds since the first sample on the BMS clock (whole seconds); the
    PC's clock only when the BMS clock is not set."""
    if not bms0:
        return time.monotonic() - t0
    return float(c.clock() - bms0)


def _plot(ax1, ax2, ts, cells, cur):
    ax1.clear()
    ax2.clear()
    for k in range(len(cells[0])):
        ax1.plot(ts, [s[k] / 1000.0 for s in cells], linewidth=0.8, label="cell %d" % (k + 1))
    ax1.set_ylabel("cell voltage (V)")
    ax1.legend(loc="upper left", ncol=max(1, (len(cells[0]) + 7) // 8), fontsize="x-small")
    ax1.grid(True)
    ax2.plot(ts, cur, color="k", label="pack current")
    ax2.legend(loc="upper left", fontsize="x-small")
    ax2.set_ylabel("current (A, + charging)")
    ax2.set_xlabel("time (s, BMS clock)")
    ax2.grid(True)


def cmd_log(c, a):
    if getattr(a, "persistent", False):   # the flash log with snapshots
        from tools.bmsctl import plog_cmd
        plog_cmd.run(c, a, console)
        return
    events = c.log()
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["seq", "time", "kind", "text"],
                               extrasaction="ignore")
            w.writeheader()
            w.writerows(events)
        console.print("%d events -> %s" % (len(events), a.csv))
        return
    t = Table(title="Event log (%d events)" % len(events))
    for col in ("seq", "time (UTC)", "kind", "event"):
        t.add_column(col)
    for e in events:
        t.add_row(str(e["seq"]), e["time"], e["kind"], e["text"])
    console.print(t)


# ---- firmware update ----
def _print_update_status(tr, title):
    st = tr.status()
    st["sha256"] = st["sha256"].hex()
    t = Table(title=title)
    t.add_column("field")
    t.add_column("value")
    for k, v in st.items():
        t.add_row(k, str(v))
    console.print(t)


def cmd_update(c, a):
    from tools.bmsctl import update_cmd
    if a.slave:
        return cmd_update_slave(c, a, update_cmd)
    # Between status polls of the finish: over BLE the transport's own wait
    # (keeps notifications flowing), else a plain sleep.
    tr = update_cmd.ModbusTransport(c, sleep=getattr(getattr(c, "mb", None), "wait", None))
    if a.status:
        return _print_update_status(tr, "Firmware update")
    try:
        msg = update_cmd.main(a.pkg, tr, console=console, verify=not a.no_verify,
                              restart=a.restart)
    except update_cmd.LocalRefusal as e:
        raise UsageError("%s (nothing sent; --no-verify lets the BMS check it)" % e)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise UsageError(str(e))
        raise BmsError("link lost during the update (%s): run the same command again to "
                       "resume" % e)
    console.print(msg)


def cmd_update_slave(c, a, update_cmd):
    """``update --slave N|all PKG``: upload to the master, which forwards it over CAN."""
    tr = update_cmd.SlaveModbusTransport(c)
    if a.status:
        return _print_update_status(tr, "Slave firmware update")
    if a.slave == "all":
        target = 255
    else:
        try:
            target = int(a.slave)
        except ValueError:
            raise UsageError("--slave takes a module address (1..16) or 'all'")
    try:
        msg = update_cmd.main_slave(a.pkg, tr, target, console=console, verify=not a.no_verify)
    except update_cmd.LocalRefusal as e:
        raise UsageError("%s (nothing sent; --no-verify lets the slaves check it)" % e)
    except update_cmd.SlaveUpdateFailed as e:
        raise BmsError(str(e), 3)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise UsageError(str(e))
        raise BmsError("link lost during the slave update (%s): `bmsctl update --slave %s "
                       "--status` shows where it is" % (e, a.slave))
    _print_slave_versions(c, console)
    console.print(msg)


def _print_slave_versions(c, console):
    from tools.bmsctl.client import read_modules
    _head, mods = read_modules(c)
    if mods:
        console.print("versions: " + ", ".join(
            "slave %d %s" % (m["module"], m["version_text"] or "?") for m in mods))


def cmd_dump(c, a):
    rows = c.dump()
    out = open(a.out, "w", newline="") if a.out else sys.stdout
    try:
        if a.format == "json":
            json.dump(rows, out, indent=0)
            out.write("\n")
        else:
            w = csv.DictWriter(out, fieldnames=["block", "address", "name", "raw"])
            w.writeheader()
            w.writerows(rows)
    finally:
        if a.out:
            out.close()
    if a.out:
        console.print("%d registers -> %s" % (len(rows), a.out))


def _ask(prompt):
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: give it on the command line")
    return getpass.getpass(prompt)


def cmd_restore(c, a):
    """The settings of a ``dump`` file (JSON or CSV) back into the BMS: the
    parameter rows only, through the same all-or-nothing load as ``params load``."""
    from tools.bmsctl import paramfile
    paramfile.load(c, a.file, console, dry_run=a.dry_run)


def cmd_unlock(c, a):
    pw = a.pw or _ask("BMS password: ")
    c.unlock(pw)
    console.print("unlocked as %s" % c.auth_state()["role"])


def cmd_lock(c, a):
    c.lock()
    console.print("locked")


def cmd_passwd(c, a):
    new = a.new or _ask("new password: ")
    if not a.new and _ask("again: ") != new:
        raise UsageError("passwords differ")
    c.passwd(new, factory=a.factory)
    console.print("%s password changed" % ("factory" if a.factory else "user"))


# ---- modules (CAN slave modules) -------------------------------------------
_STATE_STYLE = {"ok": "green", "lost": "red", "bad": "yellow", "absent": "dim"}


def _valid(mv):
    return mv not in (0, 0xFFFF)


def module_cell_stats(cells, mod):
    """(min, max, diff) mV over the module's valid cells, or None."""
    first = mod["first_cell"] - 1
    vals = [v for v in cells[first:first + mod["cells"]] if _valid(v)] if first >= 0 else []
    if not vals:
        return None
    return min(vals), max(vals), max(vals) - min(vals)


def _state_text(mod):
    st = mod["state_name"]
    txt = "[%s]%s[/%s]" % (_STATE_STYLE.get(st, "white"), st, _STATE_STYLE.get(st, "white"))
    if mod["why_names"] and st != "ok":
        txt += " (%s)" % ", ".join(mod["why_names"])
    return txt


def _temps_text(mod):
    return " ".join("%.1f" % t if isinstance(t, float) else t for t in mod["temps_c"]) or "-"


def modules_table(head, mods, cells):
    from rich import box
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="Slave modules: %d, %d ok; CAN %s, bus-off %d, rx %d frames, tx fail %d"
              % (head["module_count"], head["modules_ok"], head["can_state_name"],
                 head["can_bus_off_count"], head["can_rx_frames"], head["can_tx_fail"]))
    for col in ("#", "state", "age s", "cells", "min V", "max V", "dV mV", "degC",
                "bal", "faults", "lost", "fw"):
        wrap = col in ("degC", "bal", "faults")
        t.add_column(col, no_wrap=not wrap, min_width=None if wrap else len(col))
    for mod in mods:
        st = module_cell_stats(cells, mod)
        last = mod["first_cell"] + mod["cells"] - 1
        t.add_row(str(mod["module"]), _state_text(mod),
                  "-" if mod["age_s"] is None else ">6553" if mod["age"] == 0xFFFE
                  else "%.1f" % mod["age_s"],
                  "%d-%d" % (mod["first_cell"], last) if mod["cells"] else "-",
                  _v(st[0]) if st else "-", _v(st[1]) if st else "-",
                  str(st[2]) if st else "-", _temps_text(mod),
                  ",".join(str(i) for i in mod["balance_cells"]) or "-",
                  "[red]%s[/red]" % ",".join(mod["fault_names"]) if mod["fault_names"] else "-",
                  str(mod["lost_count"]), mod["version_text"] or "-")
    return t


def cells_by_module_table(cells, m, head, mods):
    """One block of rows per module; column j is the module's cell j + 1 (V, B = bleeding)."""
    from rich import box
    most = max([mod["cells"] for mod in mods] + [1])
    cols = max(4, min(most, (console.width - 16) // 8))
    t = Table(title="Cell voltages by module (V; B balancing)", box=box.SIMPLE_HEAD)
    t.add_column("module", no_wrap=True)
    for j in range(cols):
        t.add_column("+%d" % j if j else "1st", no_wrap=True)
    for mod in mods:
        first = mod["first_cell"]
        vals = []
        for j in range(mod["cells"]):
            i = first + j
            mv = cells[i - 1] if 0 < i <= len(cells) else 0xFFFF
            s = "inval" if mv == 0xFFFF else _v(mv)
            if mod["balance"] & (1 << j):
                s += "B"
            if i == m["cell_max_index"]:
                s = "[red]%s[/red]" % s
            elif i == m["cell_min_index"]:
                s = "[blue]%s[/blue]" % s
            vals.append(s)
        for r in range(0, max(len(vals), 1), cols):
            chunk = vals[r:r + cols]
            if r == 0:
                label = "M%d %s" % (mod["module"], _state_text(mod))
            else:
                label = ""
            t.add_row(("%s #%d" % (label, first + r)) if label else "  #%d" % (first + r),
                      *(chunk + [""] * (cols - len(chunk))))
    return t


def cmd_modules(c, a):
    head, mods = c.modules()
    cells = c.cells(head["module_total_cells"]) if mods and head["module_total_cells"] else []
    if a.json:
        for mod in mods:
            st = module_cell_stats(cells, mod)
            mod["cell_min"], mod["cell_max"], mod["cell_diff"] = st if st else (None,) * 3
        print(json.dumps({"header": head, "modules": mods}, indent=1))
        return
    if not mods:
        console.print("no CAN slave modules on this board (module_count 0)")
        return
    console.print(modules_table(head, mods, cells))


# ---- argument parsing ----------------------------------------------------
def build_parser():
    ap = argparse.ArgumentParser(prog="bmsctl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", default=DEFAULT_PORT, help="serial port or sim pty (%(default)s)")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--address", type=int, default=1, help="Modbus device address")
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--password", help="unlock with this password before the command; "
                    "the port is locked again when the command ends")
    ap.add_argument("--stay-unlocked", action="store_true",
                    help="with --password: leave the port unlocked afterwards")
    ap.add_argument("--ble", metavar="ADDRESS",
                    help="talk over Bluetooth LE to this device (tools.bleclient scan lists them)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="device identity")
    p = sub.add_parser("monitor", help="live table of cells, V, I, SOC, temperatures, states")
    p.add_argument("--once", action="store_true")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--count", type=int, default=0, help="refreshes, 0 = until Ctrl-C")
    p.add_argument("--by-module", action="store_true",
                   help="group the cell voltages by CAN slave module")
    sub.add_parser("alarms", help="active faults and alarms")
    p = sub.add_parser("modules", help="CAN slave modules: state, age, cells, temperatures")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("params", help="read or write parameters")
    p.add_argument("action", choices=("get", "set", "save", "load"))
    p.add_argument("names", nargs="*", help="get: names; set: name=value (units as in "
                   "`params get`, or with a suffix: 3.65V, 100A); save/load: FILE (JSON)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="load: show what would change, write nothing")
    p = sub.add_parser("normal", help="chemistry, switches, defaults, restart")
    p.add_argument("--chemistry", help="|".join(CHEM_NAMES))
    p.add_argument("--chg", choices=("on", "off"), help="charge MOS/relay switch")
    p.add_argument("--dsg", choices=("on", "off"), help="discharge MOS/relay switch")
    p.add_argument("--defaults", metavar="CHEM", help="reset parameters to CHEM's defaults")
    p.add_argument("--reset-faults", action="store_true")
    p.add_argument("--clear-log", action="store_true", help="clear the RAM event log")
    p.add_argument("--flash", action="store_true",
                   help="with --clear-log: the flash log too (factory role)")
    p.add_argument("--sleep", action="store_true", help="sleep now (relays open)")
    p.add_argument("--wake", action="store_true", help="wake from a commanded sleep")
    p.add_argument("--restart", action="store_true")
    p = sub.add_parser("calibrate", help="current calibration")
    p.add_argument("what", choices=("current", "zero"))
    p.add_argument("amps", nargs="?", type=float, help="current measured by your meter, A")
    p = sub.add_parser("soc", help="set the state of charge, or forget the learned OCV table")
    p.add_argument("action", choices=("set", "forget-ocv"))
    p.add_argument("percent", nargs="?", help="0..100, with or without %%")
    p = sub.add_parser("graph", help="record cell voltages and current, plot to PNG")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--samples", type=int, default=0, help="stop after N samples instead")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--out", default="bms_graph.png")
    p.add_argument("--csv", help="also write the samples as CSV")
    p.add_argument("--live", action="store_true", help="show a live plot window")
    p = sub.add_parser("log", help="event log")
    p.add_argument("--csv", help="export to a CSV file")
    p.add_argument("--persistent", action="store_true",
                   help="the log on flash (survives reboots, with trip snapshots)")
    # ---- firmware update ----
    p = sub.add_parser("update", help="send a firmware package (tools/fwpkg.py) to the BMS")
    p.add_argument("pkg", help="package .tar (its .sig next to it gives size, SHA-256, signature)")
    p.add_argument("--restart", action="store_true", help="restart into it when staged")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the local size/SHA-256 check: let the BMS refuse a bad package")
    p.add_argument("--status", action="store_true", help="only show the update state")
    p.add_argument("--slave", metavar="N|all",
                   help="update slave module N (or all, one after another) through the master")
    p = sub.add_parser("dump", help="every register as JSON or CSV")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--out")
    p = sub.add_parser("restore", help="write the settings of a `dump` file back "
                       "(all or nothing)")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("battery", help="SOH, capacities, cycles; set the battery code "
                       "(factory role)")
    p.add_argument("action", nargs="?", choices=("show", "set"), default="show")
    p.add_argument("fields", nargs="*", help="set: type=.. nominal=51.2V capacity=280Ah "
                   "maker=.. date=YYYY-MM-DD")
    p = sub.add_parser("name", help="show or set the Bluetooth or device name (user role)")
    p.add_argument("which", choices=("ble", "device"))
    p.add_argument("value", nargs="?")
    p = sub.add_parser("clock", help="show the BMS clock, or set it from this PC")
    p.add_argument("action", nargs="?", choices=("show", "set"), default="show")
    p.add_argument("--unix", type=int, help="set: this Unix time instead of the PC's")
    p = sub.add_parser("lease", help="lease lock: status, or enter a renewal code")
    p.add_argument("action", nargs="?", choices=("status", "enter"), default="status")
    p.add_argument("code", nargs="?")
    p = sub.add_parser("unlock", help="unlock writes with the password (stays unlocked)")
    p.add_argument("pw", nargs="?")
    sub.add_parser("lock", help="lock writes again")
    p = sub.add_parser("passwd", help="change the password (unlock first)")
    p.add_argument("new", nargs="?")
    p.add_argument("--factory", action="store_true")
    return ap


COMMANDS = {"info": cmd_info, "monitor": cmd_monitor, "alarms": cmd_alarms, "params": cmd_params,
            "normal": cmd_normal, "calibrate": cmd_calibrate, "soc": cmd_soc, "graph": cmd_graph,
            "log": cmd_log, "dump": cmd_dump, "unlock": cmd_unlock, "lock": cmd_lock,
            "passwd": cmd_passwd, "modules": cmd_modules,
            "update": cmd_update, "restore": cmd_restore, "clock": cmd_clock, "lease": cmd_lease,
            "battery": cmd_battery, "name": cmd_name}


def _relock(c, a):
    """Lock the port again after a command that unlocked it for itself (a
    restart already locked it; a dead link cannot be locked)."""
    if a.cmd == "normal" and getattr(a, "restart", False):
        return
    try:
        c.lock()
    except (BmsError, LinkError) as e:
        console.print("[yellow]warning: could not lock the port again: %s[/yellow]" % e)


def ble_client(address, timeout, transport=None):
    """A BmsClient over BLE; ``transport(address, timeout)`` replaces bleak (tests)."""
    from tools.bleclient import BleakTransport, BleModbusClient
    t = (transport or BleakTransport)(address, max(timeout, 5.0))
    return BmsClient(address, client=BleModbusClient(t))


def main(argv=None, client=None, ble_transport=None):
    a = build_parser().parse_args(argv)
    c = client
    try:
        if c is None and a.ble:
            c = ble_client(a.ble, a.timeout, ble_transport).connect()
        elif c is None:
            c = BmsClient(a.port, a.baud, a.address, a.timeout).connect()
        relock = False
        if a.password:
            c.unlock(a.password)
            relock = not a.stay_unlocked and a.cmd not in ("unlock", "lock")
        try:
            COMMANDS[a.cmd](c, a)
        finally:
            if relock:
                _relock(c, a)
        return 0
    except UsageError as e:
        console.print("[red]error:[/red] %s" % e)
        return 1
    except BmsError as e:
        if e.code is None:
            console.print("[red]link error:[/red] %s" % e)
            return 2
        console.print("[red]%s[/red]" % e)
        return 1
    except LinkError as e:   # BLE framing: no or bad answer
        console.print("[red]link error:[/red] %s" % e)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bmsctl dump | head`
        return 0
    finally:
        if c is not None and client is None:
            c.close()


if __name__ == "__main__":
    sys.exit(main())
