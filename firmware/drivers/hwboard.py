"""The core's board interface (see bms/core.py) built from driver objects.

Board files (boards/*.py) construct the machine objects and the drivers and
hand them to ``HwBoard``; nothing here touches ``machine``.

    HwBoard(afe, shunt=None, ntcs=[(Ntc, role), ...], relays=[Relay x5],
            buzzer=None, key=None, led=None, afe_conf=None,
            pack_source="afe", load_source="afe", afe_fets=False)

- current: the shunt monitor (INA228) if present, else the AFE's coulomb
  counter; pack voltage from the AFE stack (or the shunt's bus input);
  load voltage for precharge from the AFE's LD pin or the shunt's bus input.
  With both a shunt monitor and an AFE on the same shunt (``current_check``,
  default on once ``attach_backstop`` has scaled the AFE's current unit), the
  AFE's coulomb counter is the second reading ``current2_ma`` for the core's
  plausibility check; a failed or saturated AFE read just leaves it out.
- cells: ``afe.read_cells``; a 0 mV reading (open input) or one above
  ``measurements.CELL_MV_MAX`` marks the cell invalid.  A cell-count change
  from the parameters reconfigures the AFE.
- temperatures: one slot per NTC channel (status T_OPEN / T_SHORT from the
  driver), then the AFE's own sensors listed in ``afe_temps``.
- relays indexed by bms.contactors.RELAY_*; opens are applied before closes;
  ``afe_fets`` also drives the AFE's CHG/DSG FETs.
- output errors: a failed balance write or FET close is counted and
  repeated next cycle; a failed FET *open* raises (the core then latches
  its internal fault and keeps everything open).  The balance mask the
  core last asked for is written again at every cell read until a write
  goes through (the core writes "all off" once), and from start-up the
  chip's mask is unknown: an AFE keeps bleeding through an MCU restart,
  so the first cell read writes it (all off until the core asks).  While
  the AFE counts as failed, every balance write sends "all off" instead.
- afe_fault(): the AFE fault bits read with the cells (no bus traffic of its
  own, so it never raises), plus FAULT_RELAY for a relay whose readback
  disagrees with its command; ``relay_faults()`` names those relays (bit
  1 << RELAY_*), which the core escalates to level 2.  With it the shunt
  monitor's configuration is checked (``config_held``): a chip that reset
  is configured again, ALERT limits included.
- ``charger``: an optional charge-port sense input (a divider on the charge
  port to a GPIO, pin ``charger_sense`` in the board's PINS): the core's
  "heat during charging" needs to know a charger is there while charging is
  still blocked by the cold.
- temperatures outside measurements.TEMP_DC_MIN..MAX are sensors without
  data (checked before they are stored: never truncated).
- hardware backstop: ``attach_backstop(src)`` makes the AFE's own
  protections (short circuit in microseconds, over-current, cell OV/UV
  beyond the firmware's level 2) follow ``src.conf()``, plain thresholds
  (``bms.backstop.Backstop``: the policy lives there), at start-up and
  whenever ``src.version`` moves.  Without it the AFE runs with none
  enabled (``configure`` enables only what it is given).  What the chip
  took is kept (``afe_applied``); ``backstop_slack()`` lists the current
  thresholds its steps moved (diag.faults() prints them).

Chips that fail to configure at start-up are retried before each read; until
then their reads raise OSError, which the core turns into stale-data faults
and its safe state.  A cell count the AFE cannot measure (ValueError from
configure, e.g. fewer than 6 cells on a two-chip stack) is handled the same
way: counted in ``init_errors``, reads raise OSError(EINVAL) until the cell
count parameter is one the AFE can measure.
"""
from array import array

from micropython import const

from bms.contactors import RELAY_CHG, RELAY_DSG
from bms.measurements import CELL_MV_MAX, T_OK

FAULT_RELAY = const(0x8000)  # beyond drivers.afe FAULT_* bits
_MODE_NORMAL = const(0)      # drivers.afe.MODE_NORMAL
_EINVAL = const(22)


class HwBoard:
    def __init__(self, afe, shunt=None, ntcs=(), relays=(), buzzer=None, key=None,
                 led=None, afe_conf=None, afe_temps=(), pack_source="afe",
                 load_source="afe", afe_fets=False, max_cells=None, current_check=True,
                 charger=None, alert=None, sleep_key=None):
        self.afe = afe
        self.shunt = shunt
        # Called between two bus transactions of one read (the core sets it:
        # its service, so a port is read while the sweep runs).
        self.between = None
        # The shunt monitor's ALERT input (gpio.Alert), if wired: the core
        # programs its limits (set_current_alert) and reads on / at.
        self.alert_in = alert if shunt is not None else None
        # The largest current the shunt monitor tells apart (its full
        # scale; 0: unknown): the parameters' current limits stay within it.
        self.current_max_ma = getattr(shunt, "full_ma", 0) if shunt is not None else 0
        self._alert_lim = None
        self.ntcs = [n for n, _r in ntcs]
        self.afe_temps = [k for k, _r in afe_temps]
        self.temp_roles = tuple([r for _n, r in ntcs] + [r for _k, r in afe_temps])
        self.relays = list(relays)
        self.buzzer = buzzer
        self.key_in = key
        self.led = led
        self.afe_conf = dict(afe_conf or {})
        self.pack_source = pack_source
        self.load_source = load_source
        self.afe_fets = afe_fets
        self.max_cells = max_cells or afe.max_cells
        self.min_cells = getattr(afe, "min_cells", 0)
        self.balance_no_adjacent = getattr(afe, "balance_no_adjacent", True)
        # 'i', not 'h': a raw AFE temperature that does not fit 16 bits must
        # reach the range check, not wrap into a plausible value.
        self._afe_t = array("i", [0] * 8)
        self.current_check = current_check
        self.charger_in = charger   # charge-port sense input (value() True: charger there)
        # The sleep button (bms.sleep: held 3 s, one-key sleep; pressed, a
        # wake), if wired: its debounced value(), else None (the optional
        # ``sleep_key()`` of the core's board interface).
        self.sleep_key = sleep_key.value if sleep_key is not None else None
        self._afe_cells = 0
        # Balance mask: the core's flags (kept by reference), all off before
        # it asks; unsure until a write went through (at start-up too); live
        # while the chip may be bleeding (unknown at start-up, a write that
        # asked for it or failed): host balancing runs until told to stop.
        self._bal = None
        self._bal_off = bytearray(self.max_cells)
        self._bal_unsure = True
        self._bal_live = True
        self._fault = 0
        self._relay_f = 0
        self.afe_ok = False
        self.shunt_ok = shunt is None
        self.init_errors = 0
        self.output_errors = 0
        self.backstop = None
        # What the AFE applied at its last configure (drivers.afe configure's
        # read-back), None before: its steps can make a backstop threshold
        # looser than asked (backstop_slack).
        self.afe_applied = None
        self._pver = -1
        self.backstop_updates = 0
        self.rtc = None      # drivers.rtc.Rtc, built on first use from rtc_of
        self.rtc_of = None   # machine.RTC, set by the board build when it has one

    # ---- clock ---------------------------------------------------------------------
    def set_rtc(self, s2020):
        """The core set its wall clock (seconds since 2020): the RTC follows.
        The clock is not read back at boot: an RP2040 RTC has no backup
        supply, and the driver's heap is spent only by a board whose clock
        someone sets."""
        if self.rtc is None and self.rtc_of is not None:
            from drivers.rtc import Rtc
            self.rtc = Rtc(self.rtc_of())
        if self.rtc is not None:
            self.rtc.set(s2020)

    # ---- start-up --------------------------------------------------------------
    def init(self, cells=None):
        """Configure the chips; failures are counted, not raised (the reads
        retry and report stale data meanwhile).  Returns True if all is up."""
        if cells is not None:
            self.afe_conf["cells"] = cells
        self._ensure()
        return self.afe_ok and self.shunt_ok

    def _ensure(self):
        if not self.afe_ok:
            try:
                self._configure_afe()
                try:
                    # No autonomous SLEEP: a BQ76952 left to its default
                    # sleeps at low current and then measures cells only
                    # every few seconds.
                    self.afe.set_mode(_MODE_NORMAL)
                except NotImplementedError:
                    pass
                self._afe_cells = self.afe_conf.get("cells", self.max_cells)
                self.afe_ok = True
            except (OSError, ValueError):
                self.init_errors += 1
        if not self.shunt_ok:
            try:
                self.shunt.configure()
                self.shunt_ok = True
            except OSError:
                self.init_errors += 1
            if self.shunt_ok and self._alert_lim is not None:
                # configure() reset the chip: its limits are gone (the
                # alert stays quiet until they are back, which is safe).
                try:
                    self.shunt.set_alert_ma(self._alert_lim[0], self._alert_lim[1])
                except OSError:
                    self.init_errors += 1

    def _configure_afe(self):
        self.afe_applied = self.afe.configure(self.afe_conf)

    def backstop_slack(self):
        """The AFE's current protections whose applied threshold differs from
        the one asked for: ``[(key, asked_ma, applied_ma), ...]``.  The
        BQ76952 sets OCC / OCD1 in 2 mV steps across the shunt from 4 mV
        (rounded up; OCC tops out at 124 mV, OCD1 at 200 mV) and SCD from a
        table (10..500 mV): on a 100 uOhm shunt the OCC floor is 40 A, so a
        small chg_oc gets a hardware backstop well above 125 % of it
        (docs/safety.md).  For diagnostics (allocates)."""
        out = []
        got = self.afe_applied or {}
        for k in ("occ_ma", "ocd1_ma", "scd_ma"):
            want = self.afe_conf.get(k)
            have = got.get(k)
            if want and have is not None and have != want:
                out.append((k, want, have))
        return out

    def set_current_alert(self, over_ma, under_ma):
        """Program the shunt monitor's ALERT limits (raw mA, signed); False if
        the board has no ALERT input.  OSError if the chip did not take them
        (the caller tries again)."""
        if self.alert_in is None:
            return False
        self._alert_lim = (over_ma, under_ma)
        if self.shunt_ok:
            self.shunt.set_alert_ma(over_ma, under_ma)
        return True

    def attach_backstop(self, src):
        """Keep the AFE's hardware backstop following ``src`` (``version``,
        ``conf()`` -> {configure key: number}): applied at ``init`` and again
        whenever ``src.version`` moves."""
        self.backstop = src
        self._pver = -1
        self._backstop()

    def _backstop(self):
        src = self.backstop
        if src is None or src.version == self._pver:
            return
        self._pver = src.version
        # A parameter changed (rare): this allocates, and reconfigures the
        # chip only if a backstop value really changed.
        conf = src.conf()
        changed = False
        for k in conf:
            if self.afe_conf.get(k) != conf[k]:
                self.afe_conf[k] = conf[k]
                changed = True
        if changed and self.afe_ok:
            self.backstop_updates += 1
            try:
                self._configure_afe()
            except (OSError, ValueError):
                self.afe_ok = False    # reads raise until _ensure succeeds
                self.init_errors += 1

    # ---- measurements ----------------------------------------------------------
    def read_current(self, m, now):
        bs = self.backstop
        if bs is not None and bs.version != self._pver:
            self._backstop()
        if not self.shunt_ok:
            self._ensure()
            if not self.shunt_ok:
                raise OSError(5)
        if self.shunt is not None:
            sh = self.shunt
            m.current_ma = sh.read_current_ma()
            # At the ADC's full scale: the current is that large or larger.
            m.current_sat = sh.saturated
            m.current2_ok = False
            if self.current_check and self.afe_ok and self.backstop is not None:
                try:
                    i2 = self.afe.read_current()
                    lim = 32000 * getattr(self.afe, "user_amps_ma", 1)
                    if -lim < i2 < lim:   # a saturated I2 is no reading
                        m.current2_ma = i2
                        m.current2_ok = True
                except (OSError, AttributeError, NotImplementedError):
                    pass
        else:
            if not self.afe_ok:
                raise OSError(5)
            m.current_ma = self.afe.read_current()
            m.current_sat = False

    def read_volts(self, m, now):
        """Pack and load-side voltages: every cell sweep, and every fast tick
        while precharging (the core decides; two bus reads saved per tick)."""
        m.pack_mv = self._volts(self.pack_source, True)
        lv = self._volts(self.load_source, False)
        m.load_ok = lv >= 0
        m.load_mv = lv if lv >= 0 else 0

    def _volts(self, src, pack):
        if src == "shunt" and self.shunt is not None:
            return self.shunt.read_bus_mv()
        if src == "afe" and self.afe_ok:
            try:
                return self.afe.read_stack_mv() if pack else self.afe.read_ld_mv()
            except (AttributeError, NotImplementedError):
                pass
        return 0 if pack else -1

    def read_cells(self, m, now):
        n = m.n_cells
        if not self.afe_ok:
            self.afe_conf["cells"] = n
            self._ensure()
            if not self.afe_ok:
                raise OSError(5)
        if n != self._afe_cells:
            self.afe_conf["cells"] = n
            try:
                self._configure_afe()
            except ValueError:
                # not a cell count this AFE can measure: stale cells, safe state
                self.init_errors += 1
                raise OSError(_EINVAL)
            self._afe_cells = n
        self.afe.read_cells(m.cell_mv, n)
        g = self.between
        if g is not None:
            g()
        mv = m.cell_mv
        ok = m.cell_ok
        ts = m.cell_ts
        for i in range(n):
            ok[i] = 1 if 0 < mv[i] <= CELL_MV_MAX else 0
            ts[i] = now
        self._read_faults()
        if self._bal_unsure:
            self._write_balance()   # the AFE answers: the mask it holds is ours again

    def read_faults(self):
        """The AFE's hardware trip bits and the relays' readback, for
        ``afe_fault()``.  ``read_cells`` does this with every cell read; a
        master whose cells come over CAN calls it on its own, or its AFE's
        short-circuit trip and a welded relay would go unseen.  OSError if
        the AFE does not answer (the caller's read then counts as failed)."""
        if not self.afe_ok:
            self._ensure()
            if not self.afe_ok:
                raise OSError(5)
        self._read_faults()

    def _read_faults(self):
        f = self.afe.fault()
        if getattr(self.afe, "config_lost", False):
            # The chip reset and runs on its defaults (no backstop, other
            # units): configured again before its next read (_ensure).
            self.afe_ok = False
            self.init_errors += 1
        rf = 0
        k = 0
        for r in self.relays:
            if r is not None and not r.check():
                f |= FAULT_RELAY
                rf |= 1 << k
            k += 1
        self._fault = f
        self._relay_f = rf
        sh = self.shunt
        if sh is not None and self.shunt_ok:
            # A shunt monitor that reset answers as before, on its defaults
            # (other scaling, no ALERT limits): configured again (limits too)
            # by the next current read.  Its own read reports a dead chip.
            try:
                if not sh.config_held():
                    self.shunt_ok = False
                    self.init_errors += 1
            except (OSError, AttributeError):
                pass

    def relay_faults(self):
        """Relays whose readback disagrees with their command (bit 1 << RELAY_*)."""
        return self._relay_f

    def read_temps(self, m, now):
        st = m.temp_status
        k = 0
        for ch in self.ntcs:
            s = ch.read()
            if s == T_OK:
                m.put_temp(k, ch.temp_dc)
            else:
                st[k] = s
            k += 1
        if self.afe_temps:
            if not self.afe_ok:
                raise OSError(5)
            g = self.between
            if g is not None and k:
                g()
            self.afe.read_temps(self._afe_t)
            for idx in self.afe_temps:
                m.put_temp(k, self._afe_t[idx])
                k += 1

    # ---- outputs -----------------------------------------------------------------
    def set_relays(self, states):
        rel = self.relays
        n = len(rel)
        if len(states) < n:
            n = len(states)
        for i in range(n):  # opens first, then closes
            if rel[i] is not None and not states[i]:
                rel[i].value(False)
        for i in range(n):
            if rel[i] is not None and states[i]:
                rel[i].value(True)
        if self.afe_fets and self.afe_ok:
            chg = bool(states[RELAY_CHG])
            dsg = bool(states[RELAY_DSG])
            try:
                self.afe.set_switches(chg, dsg)
            except OSError:
                self.output_errors += 1
                if not (chg and dsg):
                    raise  # a FET we must open may still be on: fail safe
                # a failed close only delays closing: retried next cycle

    def set_balance(self, flags):
        """A failed balancing write is counted, not raised (the cell reads on
        the same bus go stale and the core blocks balancing), and repeated at
        every cell read until one goes through.  While the AFE counts as
        failed (a reconfigure it did not take), "all off" goes to the chip
        instead: CB_ACTIVE_CELLS bleeds until it is written 0 (SLUAA81A), and
        nobody measures those cells now."""
        self._bal = flags
        self._write_balance()

    def _write_balance(self):
        f = self._bal
        if f is None:
            f = self._bal_off
        self._bal_unsure = True
        if not self.afe_ok:
            self.output_errors += 1
            if self._bal_live:
                try:
                    self.afe.balance(self._bal_off)
                    self._bal_live = False
                except (OSError, ValueError, NotImplementedError):
                    pass
            return
        on = False
        for i in range(len(f)):
            if f[i]:
                on = True
                break
        self._bal_live = True       # unknown until the write succeeds
        try:
            self.afe.balance(f)
            self._bal_unsure = False
            self._bal_live = on
        except NotImplementedError:
            self._bal_unsure = False    # an AFE without bleeders: nothing to stop
            self._bal_live = False
        except OSError:
            self.output_errors += 1

    def set_buzzer(self, on):
        if self.buzzer is not None:
            self.buzzer.value(on)

    def key(self):
        return True if self.key_in is None else self.key_in.value()

    def afe_fault(self):
        return self._fault

    def charger_present(self):
        """Charge-port sense, if wired (``charger`` input); False otherwise."""
        c = self.charger_in
        return bool(c is not None and c.value())

    def clear_afe_fault(self):
        for r in self.relays:
            if r is not None:
                r.clear_fault()
        self._fault &= ~FAULT_RELAY
        self._relay_f = 0
        if self.afe_ok:
            self.afe.clear_fault()
            self._fault = self.afe.fault()
