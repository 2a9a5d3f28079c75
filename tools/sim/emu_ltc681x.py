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

Fault injection:
  corrupt       next k read commands: one bit flipped in the nearest chip's data
  dead          set of chip indices that no longer answer (they and every chip
                beyond them in the chain read 0xFF)
  spi_error     next k SPI calls raise OSError (controller/DMA failure)
  stuck         {(chip, channel): raw 100 uV value} for conversions
  open_wire     set of (chip, wire) with wire 0..12/18 disconnected
  sleep()       watchdog timeout: configuration reset (DCC off), next CS
                pulse only wakes the chip
``log`` (a list) receives (command, bytes in, bytes out) per CS frame.
"""

try:  # flat path (driver tests, also under MicroPython) or the simulator package
    from emu_spi import CsPin, SpiPort
except ImportError:
    from tools.sim.emu_spi import CsPin, SpiPort


PER_CHIP = {6811: 12, 6813: 18}


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
    def __init__(self, source, chips=1, model=6811, cells_per_chip=None):
        self.source = source
        self.model = model
        self.per_chip = PER_CHIP[model]
        self.used = cells_per_chip or self.per_chip  # bottom inputs in use
        self.chips = [Chip(model) for _ in range(chips)]
        self.spi = SpiPort(self, 0xFF)
        self.cs = CsPin(self)
        self.conv_polls = 1
        self._busy = 0
        self.asleep = False
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

    def sleep(self):
        """Watchdog timeout / sleep: configuration back to reset values."""
        self.asleep = True
        for c in self.chips:
            c.cfga[:] = b"\xf8\x00\x00\x00\x00\x00"
            c.cfgb[:] = b"\x0f\x00\x00\x00\x00\x00"
        self._apply_balance()

    def _begin(self):
        self.frames += 1
        self._in = bytearray()
        self._out = bytearray()
        self._cmd = None
        self._stream = None
        self._waking = self.asleep
        self._active = True

    def _end(self):
        if not self._active:
            return
        self._active = False
        if self._waking:
            self.asleep = False
            return
        if self._cmd is not None and self._cmd[1] == "w":
            self._finish_write(self._cmd[0], bytes(self._in[4:]))
        if self.log is not None:
            self.log.append((self._cmd[0] if self._cmd else None, bytes(self._in), bytes(self._out)))

    def _byte(self, b):
        if not self._active or self._waking:
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
                if self._busy > 0:
                    self._busy -= 1
                    out = 0x00
                else:
                    out = 0xFF
        self._out.append(out)
        return out

    def _decode(self):
        d = self._in
        code = (d[0] << 8) | d[1]
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
            # GPIO bits read the pin: pulled-down pins read 0, others 1.
            return g
        if code == 0x0026:
            return bytearray(c.cfgb)
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
        broken = False
        for i, c in enumerate(self.chips):
            if i in self.dead:
                broken = True
            if broken:
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
            if len(grp) < 8 or i in self.dead:
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
            if ci in self.dead:
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

    def _execute(self, code):
        # Fixed bits per command; MD (8:7), PUP (6), DCP (4), CH (2:0) vary.
        if (code & 0x0668) == 0x0260:      # ADCV
            self._convert_cells()
            self._busy = self.conv_polls
        elif (code & 0x0628) == 0x0228:    # ADOW
            self._convert_cells("up" if code & 0x40 else "down")
            self._busy = self.conv_polls
        elif (code & 0x0678) == 0x0460:    # ADAX
            for ci, c in enumerate(self.chips):
                for g in range(1, 10):
                    mv = self.source.gpio_mv(ci, g) if hasattr(self.source, "gpio_mv") else 1500
                    idx = g - 1 if g <= 5 else g  # AUXB slot 5 is VREF2
                    if idx < 12:
                        c.aux[idx] = mv * 10
                c.aux[5] = 30000  # VREF2 = 3.0 V
            self._busy = self.conv_polls
        elif (code & 0x0678) == 0x0468:    # ADSTAT
            t = self.source.temp_dc(0) if hasattr(self.source, "temp_dc") else 250
            itmp = (t + 2760) * 76 // 10
            for c in self.chips:
                sc = sum(x for x in c.cv if x != 0xFFFF) // 20
                c.stata[0] = sc & 0xFF
                c.stata[1] = (sc >> 8) & 0xFF
                c.stata[2] = itmp & 0xFF
                c.stata[3] = (itmp >> 8) & 0xFF
                c.stata[4] = 0x50
                c.stata[5] = 0xC3  # VA about 5.0 V
            self._busy = self.conv_polls
        elif code == 0x0711:
            for c in self.chips:
                c.cv = [0xFFFF] * c.n
        elif code == 0x0712:
            for c in self.chips:
                c.aux = [0xFFFF] * 12
