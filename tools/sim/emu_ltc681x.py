"""Byte-level LTC6811/LTC6813 daisy-chain emulator behind machine.SPI + CS pin.

``emu.spi`` offers write / write_readinto / readinto and ``emu.cs`` offers
value(); the driver gets exactly these.  While CS is low the emulator
decodes the 4-byte command (PEC-15 checked: a bad PEC makes every chip ignore
it and SDO stays high), clocks out register groups for reads (nearest chip
first, each with its PEC), collects groups for writes (top chip first) and
applies each one only if its PEC is right, and answers PLADC with 0x00 while
a conversion is "running" (``conv_polls`` bytes) then 0xFF.

Per chip it keeps CFGRA/CFGRB, the cell/aux/status registers (0xFFFF after
reset until a conversion writes them), runs ADCV/ADOW/ADAX/ADSTAT from the
source, sets the UV/OV comparator flags in STATB and drives the DCC bits into
``source.set_balance`` if the source has it.

Source: ``cell_mv(i)`` for the global cell index (chip * cells_per_chip + k
for the k-th used input), optional ``gpio_mv(chip, g)`` (g 1..9) and
``temp_dc(0)`` for the die temperature.

Timing and the chip's own behaviour (``clock``: the injected microsecond
clock the driver's waits advance, tools/sim/vclock.UsClock by default):
  sleep         every chip starts in SLEEP (power-up) and falls back to it
                when no wake-up signal came for T_SLEEP_US = 1.8 s (watchdog,
                t_SLEEP minimum); its configuration resets (DCC off).  A
                sleeping chip wakes only from CS held low >= T_WAKE_US =
                400 us (t_WAKE maximum), one chip per such pulse along the
                chain; a short pulse does nothing.  A sleeping chip answers
                nothing and passes nothing on: it and the chips beyond it
                read 0xFF, ignore writes and commands.
  conversions   PLADC reads busy until the data sheet's conversion time has
                passed (LTC6804/6811 table: all cells or all GPIOs 1.1 / 2.3 /
                201 ms at 27 kHz / 7 kHz / 26 Hz, ADSTAT 0.75 / 1.6 / 134 ms;
                LTC6813: cells and GPIOs x 1.5, an estimate for 6 instead of 4
                channels per ADC), then ``conv_polls`` bytes more
  DTEN          CFGRA byte 0 bit 1 is read-only and reads the DTEN pin
                (``dten_pin``, default 1 = tied high); GPIO bits read the pin
                level where the pull-down is off (``gpio_level``)
  open wire     with ``input_nf`` of filter capacitance on the C pins, an
                ADOW run pulls an open pin to its rail only after the number
                of same-direction conversions the data sheet's table asks for:
                1 + ceil(C / 10 nF) at 7 kHz, 1 + ceil(C / 1 uF) at 26 Hz
                (2 up to 1 uF); before that the pin just floats.
                CLRCELL sets the cell registers to 0xFFFF.

Fault injection:
  corrupt       next k read commands: one bit flipped in the nearest chip's data
  drop          {command: k} the next k frames carrying that command arrive
                with a bad PEC (the chips ignore them)
  dead          set of chip indices that no longer answer (they and every chip
                beyond them in the chain read 0xFF)
  spi_error     next k SPI calls raise OSError (controller/DMA failure)
  stuck         {(chip, channel): raw 100 uV value} for conversions
  open_wire     set of (chip, wire) with wire 0..12/18 disconnected
  sleep()       watchdog timeout now: every chip asleep, configuration reset
``log`` (a list) receives (command, bytes in, bytes out) per CS frame.
"""

try:  # flat path (driver tests, also under MicroPython) or the simulator package
    from emu_spi import CsPin, SpiPort
    from vclock import UsClock
except ImportError:
    from tools.sim.emu_spi import CsPin, SpiPort
    from tools.sim.vclock import UsClock


PER_CHIP = {6811: 12, 6813: 18}
T_WAKE_US = 400
T_SLEEP_US = 1800000
# Conversion times in us by MD (1 = 27 kHz, 2 = 7 kHz, 3 = 26 Hz, ADCOPT = 0).
T_CELLS = {6811: (0, 1100, 2300, 201000), 6813: (0, 1650, 3450, 301500)}
T_STAT = (0, 748, 1600, 134000)
# Filter capacitance one ADOW conversion pulls through, by MD (nF).
OW_NF = (0, 5, 10, 1000)


def pec15(data):
    rem = 16
    for b in data:
        for bit in range(7, -1, -1):
            in0 = ((b >> bit) & 1) ^ ((rem >> 14) & 1)
            rem = (rem << 1) & 0x7FFF
            if in0:
                rem ^= 0x4599
    return (rem << 1) & 0xFFFF


class Chip:
    def __init__(self, model):
        self.n = PER_CHIP[model]
        self.asleep = True  # power-up: SLEEP until woken
        self.reset()

    def reset(self):
        self.cfga = bytearray(b"\xf8\x00\x00\x00\x00\x00")
        self.cfgb = bytearray(b"\x0f\x00\x00\x00\x00\x00")
        self.cv = [0xFFFF] * self.n
        self.aux = [0xFFFF] * 12
        self.stata = bytearray(b"\xff" * 6)
        self.statb = bytearray(6)
        self.statb[5] = 0x10  # revision

    def dcc(self):
        a = self.cfga
        b = self.cfgb
        bits = a[4] | ((a[5] & 0x0F) << 8) | ((b[0] >> 4) << 12) | ((b[1] & 0x03) << 16)
        return [(bits >> k) & 1 for k in range(self.n)]


class EmuLTC681x:
    def __init__(self, source, chips=1, model=6811, cells_per_chip=None, clock=None,
                 dten_pin=1, input_nf=10):
        self.source = source
        self.clock = clock if clock is not None else UsClock()
        self.dten_pin = dten_pin
        self.gpio_level = 0x1FF      # GPIO1..9 pin levels (1 = high)
        self.input_nf = input_nf
        self.drop = {}
        self._cs_low_at = 0
        self._last_signal = self.clock()
        self._conv_end = 0
        self._ow = (None, 0, 0)      # (pull-up?, MD, run length) of the last ADOW run
        self.wakes = 0
        self.model = model
        self.per_chip = PER_CHIP[model]
        self.used = cells_per_chip or self.per_chip  # bottom inputs in use
        self.chips = [Chip(model) for _ in range(chips)]
        self.spi = SpiPort(self, 0xFF)
        self.cs = CsPin(self)
        self.conv_polls = 1
        self._busy = 0
        self.corrupt = 0
        self.dead = set()
        self.spi_error = 0
        self.stuck = {}
        self.open_wire = set()
        self.bad_pec_cmds = 0
        self.bad_pec_writes = 0
        self.frames = 0
        self.log = None
        self._active = False

    # ---- framing -------------------------------------------------------------------
    def _check_spi(self):
        if self.spi_error > 0:
            self.spi_error -= 1
            raise OSError(5)

    @property
    def asleep(self):
        return any(c.asleep for c in self.chips)

    def _reach(self):
        """Chips the host can talk to: up to the first dead or sleeping one."""
        for i, c in enumerate(self.chips):
            if c.asleep or i in self.dead:
                return i
        return len(self.chips)

    def sleep(self):
        """Watchdog timeout / sleep: configuration back to reset values."""
        for c in self.chips:
            c.asleep = True
            c.cfga[:] = b"\xf8\x00\x00\x00\x00\x00"
            c.cfgb[:] = b"\x0f\x00\x00\x00\x00\x00"
        self._apply_balance()

    def _begin(self):
        now = self.clock()
        if now - self._last_signal >= T_SLEEP_US and not all(c.asleep for c in self.chips):
            self.sleep()   # no wake-up signal for t_SLEEP: watchdog
        self._last_signal = now
        self._cs_low_at = now
        self.frames += 1
        self._in = bytearray()
        self._out = bytearray()
        self._cmd = None
        self._stream = None
        self._n_reach = self._reach()
        self._active = True

    def _end(self):
        if not self._active:
            return
        self._active = False
        now = self.clock()
        self._last_signal = now
        if now - self._cs_low_at >= T_WAKE_US:
            for i, c in enumerate(self.chips):
                if c.asleep and i not in self.dead:
                    c.asleep = False   # one chip per long pulse, nearest first
                    self.wakes += 1
                    break
        if self._cmd is not None and self._cmd[1] == "w":
            self._finish_write(self._cmd[0], bytes(self._in[4:]))
        if self.log is not None:
            self.log.append((self._cmd[0] if self._cmd else None, bytes(self._in), bytes(self._out)))

    def _byte(self, b):
        if not self._active:
            return 0xFF
        if self._n_reach == 0:   # the nearest chip sleeps (or is dead): nothing answers
            self._in.append(b)
            self._out.append(0xFF)
            return 0xFF
        self._in.append(b)
        n = len(self._in)
        out = 0xFF
        if n == 4:
            self._decode()
        elif n > 4 and self._cmd is not None:
            code, kind = self._cmd
            k = n - 5
            if kind == "r":
                out = self._stream[k] if k < len(self._stream) else 0xFF
            elif kind == "poll":
                if self.clock() < self._conv_end:
                    out = 0x00
                elif self._busy > 0:
                    self._busy -= 1
                    out = 0x00
                else:
                    out = 0xFF
        self._out.append(out)
        return out

    def _decode(self):
        d = self._in
        code = (d[0] << 8) | d[1]
        k = self.drop.get(code, 0)
        if k > 0:
            self.drop[code] = k - 1
            d[3] ^= 0x02   # disturbed on the wire: the PEC no longer matches
        if pec15(d[:2]) != (d[2] << 8) | d[3]:
            self.bad_pec_cmds += 1
            self._cmd = None
            return
        kind = self._kind(code)
        self._cmd = (code, kind)
        if kind == "r":
            self._stream = self._read_stream(code)
        elif kind == "x":
            self._execute(code)

    def _kind(self, code):
        if code in (0x0001, 0x0024):
            return "w"
        if code == 0x0714:
            return "poll"
        if code in (0x0002, 0x0026, 0x0004, 0x0006, 0x0008, 0x000A, 0x0009, 0x000B,
                    0x000C, 0x000E, 0x000D, 0x000F, 0x0010, 0x0012):
            return "r"
        return "x"

    # ---- register groups --------------------------------------------------------------
    def _group(self, chip, code):
        c = chip
        if code == 0x0002:
            g = bytearray(c.cfga)
            # GPIO1..5 (bits 7..3) read the pin: 0 where the pull-down is on,
            # else the pin level; DTEN (bit 1) is read-only, the DTEN pin.
            pins = (self.gpio_level & 0x1F) << 3
            g[0] = (g[0] & 0x05) | (g[0] & pins & 0xF8) | (0x02 if self.dten_pin else 0)
            return g
        if code == 0x0026:
            g = bytearray(c.cfgb)
            pins = (self.gpio_level >> 5) & 0x0F   # GPIO6..9 (bits 3..0)
            g[0] = (g[0] & 0xF0) | (g[0] & pins)
            return g
        cv = {0x0004: 0, 0x0006: 1, 0x0008: 2, 0x000A: 3, 0x0009: 4, 0x000B: 5}
        if code in cv:
            g = cv[code]
            vals = [c.cv[3 * g + k] if 3 * g + k < c.n else 0xFFFF for k in range(3)]
        elif code in (0x000C, 0x000E, 0x000D, 0x000F):
            g = {0x000C: 0, 0x000E: 1, 0x000D: 2, 0x000F: 3}[code]
            vals = c.aux[3 * g:3 * g + 3]
        elif code == 0x0010:
            return bytearray(c.stata)
        elif code == 0x0012:
            return bytearray(c.statb)
        else:
            vals = [0xFFFF] * 3
        out = bytearray()
        for v in vals:
            out.append(v & 0xFF)
            out.append((v >> 8) & 0xFF)
        return out

    def _read_stream(self, code):
        s = bytearray()
        for i, c in enumerate(self.chips):
            if i >= self._n_reach:
                s.extend(b"\xff" * 8)
                continue
            g = self._group(c, code)
            p = pec15(g)
            g.append(p >> 8)
            g.append(p & 0xFF)
            s.extend(g)
        if self.corrupt > 0 and len(s):
            self.corrupt -= 1
            s[0] ^= 0x10
        return s

    def _finish_write(self, code, data):
        n = len(self.chips)
        for k in range(n):
            grp = data[8 * k:8 * k + 8]
            i = n - 1 - k  # first group goes to the top chip
            if len(grp) < 8 or i >= self._n_reach:
                continue
            if pec15(grp[:6]) != (grp[6] << 8) | grp[7]:
                self.bad_pec_writes += 1
                continue
            c = self.chips[i]
            if code == 0x0001:
                c.cfga[:] = grp[:6]
            else:
                c.cfgb[:] = grp[:6]
        self._apply_balance()

    def _apply_balance(self):
        if not hasattr(self.source, "set_balance"):
            return
        flags = []
        for c in self.chips:
            flags.extend(c.dcc()[:self.used])
        self.source.set_balance(flags)

    # ---- conversions -------------------------------------------------------------------
    def _cell_true(self, ci, k):
        """True input voltage of channel k of chip ci in 100 uV."""
        if k >= self.used:
            return 0  # unused input shorted
        return self.source.cell_mv(ci * self.used + k) * 10

    def _convert_cells(self, pull=None):
        for ci, c in enumerate(self.chips):
            if ci >= self._n_reach:
                continue
            v = [self._cell_true(ci, k) for k in range(c.n)]
            meas = list(v)
            for (oc, w) in self.open_wire:
                if oc != ci:
                    continue
                lo = w - 1   # cell below the wire (index), cell above is w
                if pull is None:
                    # Floating pin drifts: both neighbours read their mean.
                    if 0 <= lo < c.n and w < c.n:
                        m = (v[lo] + v[w]) // 2
                        meas[lo] = meas[w] = m
                    elif 0 <= lo < c.n:
                        meas[lo] = 0
                    elif w < c.n:
                        meas[w] = 0
                elif pull == "up":
                    # Pin pulled up towards the wire above.
                    if w < c.n:
                        if 0 <= lo:
                            meas[lo] = v[lo] + v[w]
                        meas[w] = 0
                else:
                    if 0 <= lo < c.n:
                        meas[lo] = 0
                        if w < c.n:
                            meas[w] = v[lo] + v[w]
            for k in range(c.n):
                c.cv[k] = self.stuck.get((ci, k), max(0, min(0xFFFE, meas[k])))
            self._compare(c)

    def _compare(self, c):
        a = c.cfga
        vuv = a[1] | ((a[2] & 0x0F) << 8)
        vov = (a[2] >> 4) | (a[3] << 4)
        flags = 0
        for k in range(min(12, c.n)):
            v = c.cv[k]
            if v <= (vuv + 1) * 16:
                flags |= 1 << (2 * k)
            if v > vov * 16:
                flags |= 2 << (2 * k)
        c.statb[2] = flags & 0xFF
        c.statb[3] = (flags >> 8) & 0xFF
        c.statb[4] = (flags >> 16) & 0xFF

    def _start(self, us):
        self._conv_end = self.clock() + us
        self._busy = self.conv_polls

    def _execute(self, code):
        # Fixed bits per command; MD (8:7), PUP (6), DCP (4), CH (2:0) vary.
        md = (code >> 7) & 3
        if (code & 0x0668) == 0x0260:      # ADCV
            self._ow = (None, 0, 0)
            self._convert_cells()
            self._start(T_CELLS[self.model][md])
        elif (code & 0x0628) == 0x0228:    # ADOW
            up = bool(code & 0x40)
            last_up, last_md, run = self._ow
            run = run + 1 if (last_up == up and last_md == md) else 1
            self._ow = (up, md, run)
            # Data sheet table: conversions needed to pull the open pin
            # through the filter capacitance.
            need = 1 + -(-self.input_nf // OW_NF[md]) if md else 99
            self._convert_cells(("up" if up else "down") if run >= need else None)
            self._start(T_CELLS[self.model][md])
        elif (code & 0x0678) == 0x0460:    # ADAX
            for ci, c in enumerate(self.chips):
                if ci >= self._n_reach:
                    continue
                for g in range(1, 10):
                    mv = self.source.gpio_mv(ci, g) if hasattr(self.source, "gpio_mv") else 1500
                    idx = g - 1 if g <= 5 else g  # AUXB slot 5 is VREF2
                    if idx < 12:
                        c.aux[idx] = mv * 10
                c.aux[5] = 30000  # VREF2 = 3.0 V
            self._start(T_CELLS[self.model][md])
        elif (code & 0x0678) == 0x0468:    # ADSTAT
            t = self.source.temp_dc(0) if hasattr(self.source, "temp_dc") else 250
            itmp = (t + 2760) * 76 // 10
            for ci, c in enumerate(self.chips):
                if ci >= self._n_reach:
                    continue
                sc = sum(x for x in c.cv if x != 0xFFFF) // 20
                c.stata[0] = sc & 0xFF
                c.stata[1] = (sc >> 8) & 0xFF
                c.stata[2] = itmp & 0xFF
                c.stata[3] = (itmp >> 8) & 0xFF
                c.stata[4] = 0x50
                c.stata[5] = 0xC3  # VA about 5.0 V
            self._start(T_STAT[md])
        elif code == 0x0711:
            self._ow = (None, 0, 0)
            for ci, c in enumerate(self.chips):
                if ci < self._n_reach:
                    c.cv = [0xFFFF] * c.n
        elif code == 0x0712:
            for c in self.chips:
                c.aux = [0xFFFF] * 12
