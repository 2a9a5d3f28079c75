"""ADI LTC6811 (12 cells) / LTC6813 (18 cells) over SPI, daisy chain of N chips.

Protocol (LTC6811-1 / LTC6813-1 data sheets):
- Every command is 2 bytes + PEC-15 (CRC-15, polynomial 0x4599, seed 16,
  sent shifted left once so bit 0 is 0), MSB first.  Every 6-byte register
  group travels with its own PEC, one group per chip.
- Writes (WRCFGA 0x001, _WRCFGB 0x024): the first group sent is for the chip
  furthest from the MCU (top of the chain).  Reads (RDCVA..F, RDAUXA..D,
  _RDSTATA/B, _RDCFGA/B): the first group received is from the nearest chip.
- Cell voltages are unsigned 16-bit little-endian at 100 uV per LSB, three
  per group: A..D (6811) or A..F (6813).  Registers read 0xFFFF until a
  conversion has written them.
- ADCV = 0x260 | MD<<7 | DCP<<4 | CH, ADOW = 0x228 | MD<<7 | PUP<<6 | DCP<<4
  | CH, ADAX = 0x460 | MD<<7 | CHG; MD=2 is the 7 kHz normal mode (ADCOPT=0).
  PLADC (0x714) clocks out 0x00 while converting and 0xFF when done.
- CFGRA: [0] GPIO5..1 pull-down off (bits 7..3), REFON (2), DTEN (1), ADCOPT
  (0); [1..2] VUV 12 bits, VOV 12 bits; [4] DCC8..1; [5] DCTO (7..4),
  DCC12..9.  Under-/over-voltage comparisons: VUV = mV*10/16 - 1,
  VOV = mV*10/16 (16 x 100 uV steps); flags in STATB.
  CFGRB (6813): [0] DCC16..13 (7..4), GPIO9..6 (3..0); [1] DCC18, DCC17 (1..0).
- The chip's watchdog (about 2 s without a valid command) resets the
  configuration, DCC bits included (DCTO stays 0: balancing fails safe off).
  The core's 250 ms cell task keeps it alive; ``balance`` rewrites the
  configuration every time it is called.
- Wake-up (data sheet "Waking up the serial interface", Linduino
  wakeup_sleep/wakeup_idle): a chip sleeps after ~2 s without a wake-up
  signal (watchdog, t_SLEEP >= 1.8 s) and at power-up; waking it takes CS low
  for t_WAKE (<= 400 us), one chip after the other along the chain.  Every
  public operation starts with ``wakeup()``: the long pulse per chip
  (400 us low, 10 us high) when the chain may be asleep - first use, after
  set_mode(SLEEP), after any failed exchange, more than 1 s since the last
  activity by ``ticks_ms``, or always when no ``ticks_ms`` is given -
  otherwise one short pulse per chip (the isoSPI's IDLE to READY).

Write groups carry PECs the chip checks, but a dropped write is invisible to
the host, so ``configure``/``balance`` read the configuration back and
compare (CFGR0: ADCOPT and REFON only; DTEN is read-only and reads the DTEN
pin, the GPIO bits read the pins).  A read with a bad PEC is repeated up to ``retry_limit`` times,
counted in ``crc_errors``/``retries``, then OSError.  Values of 0xFFFF
(never converted) also count as failures.
"""
from array import array

from micropython import const

from bms.ticks import ticks_diff
from drivers.afe import (FAULT_OPEN_WIRE, FAULT_OT, FAULT_OTHER, FAULT_OV, FAULT_UV,
                         MODE_NORMAL, MODE_SHUTDOWN, MODE_SLEEP, Afe, check_no_adjacent)

EIO = const(5)
ETIMEDOUT = const(110)

WRCFGA = const(0x0001)
_WRCFGB = const(0x0024)
_RDCFGA = const(0x0002)
_RDCFGB = const(0x0026)
RDCV = (0x0004, 0x0006, 0x0008, 0x000A, 0x0009, 0x000B)  # A..F
RDAUX = (0x000C, 0x000E, 0x000D, 0x000F)                # A..D
_RDSTATA = const(0x0010)
_RDSTATB = const(0x0012)
_CLRCELL = const(0x0711)
PLADC = const(0x0714)
_MD_NORMAL = const(2)  # 7 kHz with ADCOPT = 0
_MD_FILTERED = const(3)  # 26 Hz with ADCOPT = 0
ADCV = const(0x0260 | (_MD_NORMAL << 7))            # all cells, DCP = 0
_ADOW = const(0x0228)                               # | MD << 7 | PUP << 6
_PUP = const(0x40)
ADAX = const(0x0460 | (_MD_NORMAL << 7))            # all GPIOs and VREF2
ADSTAT = const(0x0468 | (_MD_NORMAL << 7))          # SC, ITMP, VA, VD
# Conversion times (us) of all cells / all GPIOs by MD 1..3 (27 kHz, 7 kHz,
# 26 Hz): LTC6804/6811 data-sheet table 1.1 / 2.3 / 201 ms; the LTC6813
# converts 6 channels per ADC instead of 4 (x 1.5, an estimate).  ADSTAT
# (SC, ITMP, VA, VD): 0.75 / 1.6 / 134 ms.  PLADC is polled after the wait.
_T_CV_6811 = (0, 1100, 2300, 201000)
_T_CV_6813 = (0, 1650, 3450, 301500)
_T_STAT = (0, 748, 1600, 134000)
_T_WAKE_US = const(400)   # t_WAKE maximum: CS low per sleeping chip
_T_READY_US = const(10)   # CS high between wake pulses (Linduino)
_AWAKE_MS = const(1000)   # well below the watchdog's 1.8 s minimum
_IDLE_US = const(4000)    # isoSPI goes IDLE after 4.3 ms without activity
_OPEN_WIRE_DELTA = const(-4000)  # -400 mV in 100 uV units
_NOT_CONVERTED = const(0xFFFF)


def _make_table():
    t = array("H", [0] * 256)
    for i in range(256):
        rem = i << 7
        for _ in range(8):
            if rem & 0x4000:
                rem = ((rem << 1) ^ 0x4599) & 0x7FFF
            else:
                rem = (rem << 1) & 0x7FFF
        t[i] = rem
    return t


_PEC_T = _make_table()


def pec15(data, start, n):
    rem = 16
    t = _PEC_T
    for i in range(start, start + n):
        rem = ((rem << 8) ^ t[((rem >> 7) ^ data[i]) & 0xFF]) & 0x7FFF
    return (rem << 1) & 0xFFFF


class LTC681x(Afe):
    """chips: devices in the chain; model 6811 (12 cells) or 6813 (18);
    wait_us: the board's time.sleep_us, for the wake-up pulses and the ADC's
    conversion time before PLADC is polled (None: no waits, host fakes only);
    ticks_ms: the board's time.ticks_ms, so a chain that was active less than
    a second ago gets the short wake-up; poll_limit bounds the PLADC poll.
    """
    balance_no_adjacent = False  # the chip allows any DCC pattern

    def __init__(self, spi, cs, chips=1, model=6811, retry_limit=3, wait_us=None,
                 poll_limit=2000, no_adjacent=False, ticks_ms=None):
        Afe.__init__(self)
        if model not in (6811, 6813):
            raise ValueError("model 6811 or 6813")
        if chips < 1:
            raise ValueError("chips >= 1")
        self.spi = spi
        self.cs = cs
        self.chips = chips
        self.model = model
        self.per_chip = 12 if model == 6811 else 18
        self.groups = self.per_chip // 3
        self.retry_limit = retry_limit
        self.wait_us = wait_us
        self.ticks_ms = ticks_ms
        self._t_cv = _T_CV_6811 if model == 6811 else _T_CV_6813
        self._awake = False     # chain known to be awake (see wakeup)
        # A long wake-up was needed: the chain may have slept, and the
        # watchdog resets the configuration (VUV/VOV, DCC): read_cells
        # writes it again before it converts.
        self._cfg_unsure = False
        self._last_ms = 0
        self.long_wakes = 0
        self.poll_limit = poll_limit
        self.balance_no_adjacent = no_adjacent
        self.max_cells = chips * self.per_chip
        n = 4 + 8 * chips
        self._tx = bytearray(n)
        self._rx = bytearray(n)
        self._one = bytearray(1)
        self._ff = bytearray(b"\xff")
        self._raw = array("H", [0] * (chips * self.per_chip))  # 100 uV per channel
        self.cfga = bytearray(6 * chips)  # per chip, chain order (0 = nearest)
        self.cfgb = bytearray(6 * chips)
        self.used = bytearray(self.per_chip)  # channel of the k-th used input
        self.n_used = self.per_chip
        for k in range(self.per_chip):
            self.used[k] = k
        self.cells = self.max_cells
        self.open_wires = 0  # bit per wire: chip * (per_chip + 1) + wire
        self.status_b = bytearray(6 * chips)
        for c in range(chips):
            self.cfga[6 * c] = 0xFC  # GPIO pull-downs off, REFON
        self.pladc_polls = 0
        self._cmdv = memoryview(self._tx)[:4]
        self._cmp_uv = False  # comparator thresholds configured?
        self._cmp_ov = False

    # ---- frames ----------------------------------------------------------------
    def _cmd(self, code):
        t = self._tx
        t[0] = code >> 8
        t[1] = code & 0xFF
        p = pec15(t, 0, 2)
        t[2] = p >> 8
        t[3] = p & 0xFF

    def _wait(self, us):
        w = self.wait_us
        if w is not None:
            w(us)

    def wakeup(self):
        """Wake the chain before a command (see the module docstring)."""
        t = self.ticks_ms
        deep = not self._awake or t is None
        if not deep and ticks_diff(t(), self._last_ms) >= _AWAKE_MS:
            deep = True
        cs = self.cs
        if deep:
            self._cfg_unsure = True
        if deep and self.wait_us is not None:
            # A sleeping chip wakes from CS held low for t_WAKE and then passes
            # the wake-up on: one long pulse per chip.
            self.long_wakes += 1
            w = self.wait_us
            for _ in range(self.chips):
                cs.value(0)
                w(_T_WAKE_US)
                cs.value(1)
                w(_T_READY_US)
        else:
            self._idle_wake()
        self._awake = True
        if t is not None:
            self._last_ms = t()

    def _idle_wake(self):
        # isoSPI IDLE -> READY: one short pulse per chip.
        for _ in range(self.chips):
            self.cs.value(0)
            self.spi.write(self._ff)
            self.cs.value(1)

    def command(self, code):
        """Command without data (ADCV, _CLRCELL, ...)."""
        self._cmd(code)
        self.cs.value(0)
        try:
            self.spi.write(self._cmdv)
        finally:
            self.cs.value(1)

    def _write_groups(self, code, regs):
        """regs: 6 bytes per chip in chain order; sent top chip first."""
        self._cmd(code)
        t = self._tx
        n = self.chips
        for k in range(n):
            c = n - 1 - k
            o = 4 + 8 * k
            for j in range(6):
                t[o + j] = regs[6 * c + j]
            p = pec15(t, o, 6)
            t[o + 6] = p >> 8
            t[o + 7] = p & 0xFF
        self.cs.value(0)
        try:
            self.spi.write(t)
        finally:
            self.cs.value(1)

    def _read_groups(self, code):
        """Read one register group from every chip into self._rx[4:],
        PEC-checked, with bounded retries; returns nothing (data in _rx)."""
        n = self.chips
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
                if not self._awake:
                    self.wakeup()   # a chip may have slept: the long wake-up
            self._cmd(code)
            t = self._tx
            for i in range(4, 4 + 8 * n):
                t[i] = 0xFF
            self.cs.value(0)
            try:
                self.spi.write_readinto(t, self._rx)
            except OSError:
                continue
            finally:
                self.cs.value(1)
            r = self._rx
            ok = True
            for c in range(n):
                o = 4 + 8 * c
                if pec15(r, o, 6) != (r[o + 6] << 8) | r[o + 7]:
                    ok = False
                    break
            if ok:
                return
            self.crc_errors += 1
            self._awake = False
        raise OSError(EIO)

    def _convert(self, code, us):
        """Start a conversion, wait its data-sheet time, then poll PLADC."""
        self.command(code)
        if self.wait_us is not None:
            self.wait_us(us)
            if us >= _IDLE_US:
                self._idle_wake()   # the isoSPI went IDLE during the wait
        # PLADC: SDO is held low until the conversion is done.
        self._cmd(PLADC)
        self.cs.value(0)
        try:
            self.spi.write(self._cmdv)
            for i in range(self.poll_limit):
                self.spi.write_readinto(self._ff, self._one)
                if self._one[0]:
                    self.pladc_polls = i + 1
                    return
        finally:
            self.cs.value(1)
        self._awake = False
        raise OSError(ETIMEDOUT)

    # ---- configuration ---------------------------------------------------------
    def _set_used(self, per_chip, mask):
        if mask is None:
            mask = (1 << per_chip) - 1
        k = 0
        for ch in range(self.per_chip):
            if mask & (1 << ch):
                if k < self.per_chip:
                    self.used[k] = ch
                k += 1
        if k != per_chip:
            raise ValueError("channel mask has %d channels for %d cells" % (k, per_chip))
        self.n_used = per_chip
        self.cells = per_chip * self.chips

    def configure(self, conf):
        """conf: cells (total, a multiple of chips), channel_mask (per chip),
        cov_mv / cuv_mv for the chip's comparators.  Returns the applied
        values decoded from the configuration read back from every chip."""
        cells = conf.get("cells", self.max_cells)
        if cells % self.chips or not 1 <= cells // self.chips <= self.per_chip:
            raise ValueError("cells must be chips x 1..%d" % self.per_chip)
        self._set_used(cells // self.chips, conf.get("channel_mask"))
        vuv = 0
        vov = 0xFFF
        self._cmp_uv = "cuv_mv" in conf
        self._cmp_ov = "cov_mv" in conf
        if "cuv_mv" in conf:
            vuv = max(0, min(0xFFF, conf["cuv_mv"] * 10 // 16 - 1))
        if "cov_mv" in conf:
            vov = max(0, min(0xFFF, -((-conf["cov_mv"] * 10) // 16)))
        for c in range(self.chips):
            a = self.cfga
            o = 6 * c
            a[o] = 0xFC
            a[o + 1] = vuv & 0xFF
            a[o + 2] = ((vov & 0x0F) << 4) | (vuv >> 8)
            a[o + 3] = vov >> 4
            a[o + 4] = 0
            a[o + 5] = 0
            self.cfgb[o] = 0x0F  # GPIO6..9 pull-downs off
            self.cfgb[o + 1] = 0
        self.wakeup()
        self._write_cfg()
        r = self._rx
        avuv = r[5] | ((r[6] & 0x0F) << 8)
        avov = (r[6] >> 4) | (r[7] << 4)
        out = {"cells": self.cells, "chips": self.chips, "model": self.model}
        if self._cmp_uv:
            out["cuv_mv"] = (avuv + 1) * 16 // 10
        if self._cmp_ov:
            out["cov_mv"] = avov * 16 // 10
        return out

    def _write_cfg(self):
        """Write CFGRA (and CFGRB) and verify by reading them back."""
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
                self._awake = False   # a chip that dropped the write may sleep
                self.wakeup()
            self._write_groups(WRCFGA, self.cfga)
            if self.model == 6813:
                self._write_groups(_WRCFGB, self.cfgb)
                self._read_groups(_RDCFGB)
                if not self._same(self.cfgb, 0xF0, 2):
                    continue
            self._read_groups(_RDCFGA)
            # CFGR0: compare ADCOPT (bit 0) and REFON (bit 2) only; DTEN (bit
            # 1) is read-only (the DTEN pin), bits 7..3 read the GPIO pins.
            if self._same(self.cfga, 0x05, 6):
                self._cfg_unsure = False
                return
        raise OSError(EIO)

    def _same(self, regs, mask0, nbytes):
        # Byte 0 mixes written bits with read-only pin states: compare the
        # written bits only.
        r = self._rx
        for c in range(self.chips):
            o = 4 + 8 * c
            if (r[o] ^ regs[6 * c]) & mask0:
                return False
            for j in range(1, nbytes):
                if r[o + j] != regs[6 * c + j]:
                    return False
        return True

    # ---- measurements ----------------------------------------------------------
    def _read_cv(self):
        """Read every cell-voltage group into self._raw (chain order)."""
        pc = self.per_chip
        for g in range(self.groups):
            self._read_groups(RDCV[g])
            r = self._rx
            raw = self._raw
            for c in range(self.chips):
                o = 4 + 8 * c
                for k in range(3):
                    raw[c * pc + 3 * g + k] = r[o + 2 * k] | (r[o + 2 * k + 1] << 8)

    def read_cells(self, cell_mv, n):
        """Wake, clear (CLRCELL), convert (ADCV, PLADC poll), read every
        group, map to cells.
        A failed SPI call or never-converted registers repeat the whole
        cycle, bounded like every other retry."""
        if n > self.cells:
            raise ValueError("only %d cells configured" % self.cells)
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            try:
                self.wakeup()
                if self._cfg_unsure:
                    self._write_cfg()   # the chain may have slept: VUV/VOV lost
                # Registers to 0xFFFF first: an ADCV the chips ignored (bad
                # PEC on the wire) then reads as not converted, not as the
                # previous sweep's cells.
                self.command(_CLRCELL)
                self._convert(ADCV, self._t_cv[_MD_NORMAL])
                self._read_cv()
            except OSError:
                continue
            if self._cfg_unsure:
                # A long wake-up during this cycle (a retry): if a chip slept
                # unnoticed its configuration is reset, it missed the ADCV
                # and its registers are older: convert again.
                try:
                    self._read_groups(_RDCFGA)
                except OSError:
                    continue
                if not self._same(self.cfga, 0x05, 6):
                    continue
                self._cfg_unsure = False
            if self._map(cell_mv, n):
                return n
            self.crc_errors += 1  # registers not written by the conversion
        raise OSError(EIO)

    def _map(self, cell_mv, n):
        raw = self._raw
        pc = self.per_chip
        u = self.n_used
        for i in range(n):
            c = i // u
            v = raw[c * pc + self.used[i - c * u]]
            if v == _NOT_CONVERTED:
                return False
            cell_mv[i] = (v + 5) // 10  # 100 uV -> mV, rounded
        return True

    def read_gpio_mv(self, out):
        """GPIO voltages (thermistor dividers) per chip: 6811 G1..G5, VREF2
        (6 values per chip); 6813 G1..G9, VREF2 (10).  Returns count."""
        self.wakeup()
        self._convert(ADAX, self._t_cv[_MD_NORMAL])
        k = 0
        ng = 2 if self.model == 6811 else 4
        per = 6 if self.model == 6811 else 10
        for g in range(ng):
            self._read_groups(RDAUX[g])
            r = self._rx
            for c in range(self.chips):
                o = 4 + 8 * c
                for j in range(3):
                    idx = 3 * g + j  # AUX A: G1 G2 G3, B: G4 G5 REF, C: G6 G7 G8, D: G9 ...
                    if self.model == 6811:
                        slot = idx
                    elif idx < 5:
                        slot = idx
                    elif idx == 5:
                        slot = 9           # VREF2 last
                    elif idx < 10:
                        slot = idx - 1     # G6..G9
                    else:
                        continue
                    out[c * per + slot] = ((r[o + 2 * j] | (r[o + 2 * j + 1] << 8)) + 5) // 10
                    k += 1
        return k

    def read_temps(self, temp_dc):
        """Die temperature of every chip (STATA ITMP: 100 uV / 7.6 mV per degC
        - 276 degC) in 0.1 degC; returns chips."""
        self.wakeup()
        self._convert(ADSTAT, _T_STAT[_MD_NORMAL])
        self._read_groups(_RDSTATA)
        r = self._rx
        for c in range(self.chips):
            o = 4 + 8 * c
            itmp = r[o + 2] | (r[o + 3] << 8)
            temp_dc[c] = itmp * 10 // 76 - 2760  # itmp*0.1 mV / 7.6 mV -> degC*10
        return self.chips

    def open_wire_check(self, repeats=2, filtered=True):
        """The data sheet's open-wire algorithm.  Cell registers are cleared
        first (CLRCELL) before each run, so a conversion that did not happen
        reads 0xFFFF and raises OSError instead of passing stale values as a
        result.  ADOW with the pull-up ``repeats`` times, read, then with the
        pull-down, read; wire C(n) is open if V_PU(n+1) - V_PD(n+1) < -400 mV,
        C0 if V_PU(1) = 0, the top wire if V_PD(top) = 0.  Filtered mode
        (26 Hz) by default: the data sheet's table needs 2 conversions per
        direction for up to 1 uF on the C pins, where 7 kHz needs
        1 + C / 10 nF (2 only up to 10 nF).  Blocks for about
        4 x 201 ms (LTC6811) in filtered mode: not for the control loop.
        Returns a bit field (chip * (per_chip+1) + wire)."""
        md = _MD_FILTERED if filtered else _MD_NORMAL
        t = self._t_cv[md]
        pc = self.per_chip
        self.wakeup()
        self.command(_CLRCELL)
        for _ in range(repeats):
            self._convert(_ADOW | (md << 7) | _PUP, t)
        self._read_cv()
        self._check_converted()
        pu = array("H", self._raw)
        self.command(_CLRCELL)
        for _ in range(repeats):
            self._convert(_ADOW | (md << 7), t)
        self._read_cv()
        self._check_converted()
        pd = self._raw
        found = 0
        top = self.used[self.n_used - 1] + 1  # highest wire index used
        for c in range(self.chips):
            b = c * pc
            base = c * (pc + 1)
            if pu[b] == 0:
                found |= 1 << base
            for ch in range(1, top):
                if pu[b + ch] - pd[b + ch] < _OPEN_WIRE_DELTA:
                    found |= 1 << (base + ch)
            if pd[b + top - 1] == 0:
                found |= 1 << (base + top)
        self.open_wires = found
        return found

    def _check_converted(self):
        raw = self._raw
        pc = self.per_chip
        for c in range(self.chips):
            for k in range(self.n_used):
                if raw[c * pc + self.used[k]] == _NOT_CONVERTED:
                    self._awake = False
                    raise OSError(EIO)

    # ---- outputs ---------------------------------------------------------------
    def balance(self, flags):
        n = min(self.cells, len(flags))
        if self.balance_no_adjacent:
            check_no_adjacent(flags, n)
        u = self.n_used
        for c in range(self.chips):
            o = 6 * c
            self.cfga[o + 4] = 0
            self.cfga[o + 5] &= 0xF0
            self.cfgb[o] &= 0x0F
            self.cfgb[o + 1] &= 0xFC
        for i in range(n):
            if not flags[i]:
                continue
            c = i // u
            ch = self.used[i - c * u]  # 0-based: DCC(ch+1)
            o = 6 * c
            if ch < 8:
                self.cfga[o + 4] |= 1 << ch
            elif ch < 12:
                self.cfga[o + 5] |= 1 << (ch - 8)
            elif ch < 16:
                self.cfgb[o] |= 1 << (ch - 8)
            else:
                self.cfgb[o + 1] |= 1 << (ch - 16)
        self.wakeup()
        self._write_cfg()

    def set_switches(self, chg, dsg):
        raise NotImplementedError  # no FET drivers on the LTC681x

    def read_current(self):
        raise NotImplementedError  # no coulomb counter

    def set_mode(self, mode):
        if mode == MODE_NORMAL:
            self.wakeup()
        elif mode in (MODE_SLEEP, MODE_SHUTDOWN):
            # The chip sleeps by itself after its watchdog; stop balancing now.
            for c in range(self.chips):
                self.cfga[6 * c + 4] = 0
                self.cfga[6 * c + 5] &= 0xF0
                self.cfgb[6 * c] &= 0x0F
                self.cfgb[6 * c + 1] &= 0xFC
            self.wakeup()
            self._write_cfg()
            self._awake = False   # next time: the long wake-up
        else:
            raise ValueError("mode")

    # ---- faults ----------------------------------------------------------------
    def fault(self):
        """Comparator flags from the last ADCV (STATB C1..C12 UV/OV), thermal
        shutdown and mux failure, plus the last open-wire result."""
        self.wakeup()
        self._read_groups(_RDSTATB)
        r = self._rx
        f = FAULT_OPEN_WIRE if self.open_wires else 0
        for c in range(self.chips):
            o = 4 + 8 * c
            for j in range(6):
                self.status_b[6 * c + j] = r[o + j]
            for k in range(self.n_used):
                ch = self.used[k]
                if ch >= 12:
                    break  # cells 13..18 of the 6813 report in AUXD: not used
                b = r[o + 2 + (ch >> 2)] >> (2 * (ch & 3))
                if b & 1 and self._cmp_uv:
                    f |= FAULT_UV
                if b & 2 and self._cmp_ov:
                    f |= FAULT_OV
            if r[o + 5] & 0x01:
                f |= FAULT_OT
            if r[o + 5] & 0x02:
                f |= FAULT_OTHER
        return f

    def clear_fault(self):
        self.open_wires = 0
