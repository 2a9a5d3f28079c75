"""Byte-level TI INA228 emulator behind a machine.I2C-like object.

Register file per datasheet SLYS021A (big-endian, 16/24/40-bit registers),
results computed from a measurement source on every read the way the chip
does: VSHUNT = I * R quantised to 312.5 nV (78.125 nV with ADCRANGE=1) in
bits 23:4, CURRENT = VSHUNT * 4096 / SHUNT_CAL (the inverse of the
datasheet's SHUNT_CAL = 13107.2e6 * CURRENT_LSB * R), VBUS at 195.3125 uV,
DIETEMP at 7.8125 m degC, CHARGE integrating CURRENT over source time, and
DIAG_ALRT flags (MATHOF, CHARGEOF, MEMSTAT, CNVRF, SHNTOL, SHNTUL) and the
ALERT pin from SOVL / SUVL (``alert_level``).

The source is any object with ``current_ma()`` and ``bus_mv()`` and
optionally ``die_dc()`` and ``time_s()`` (for the charge accumulator);
``StaticSource`` is a settable one.

Fault injection:
  nack      next k transactions raise OSError(EIO)
  dead      every transaction raises OSError(ENODEV)
  stuck     dict {reg: bytes} returned instead of the live value
  gain      multiplies the true current (shunt tolerance)
``log`` (a list, or None) records ("r"|"w", reg, bytes) of every transaction.
"""

ADDR = 0x40
_SIZES = {0x00: 2, 0x01: 2, 0x02: 2, 0x03: 2, 0x04: 3, 0x05: 3, 0x06: 2, 0x07: 3,
          0x08: 3, 0x09: 5, 0x0A: 5, 0x0B: 2, 0x0C: 2, 0x0D: 2, 0x0E: 2, 0x0F: 2,
          0x10: 2, 0x11: 2, 0x3E: 2, 0x3F: 2}
_DEFAULTS = {0x00: 0x0000, 0x01: 0xFB68, 0x02: 0x1000, 0x03: 0x0000, 0x0B: 0x0001,
             0x0C: 0x7FFF, 0x0D: 0x8000, 0x0E: 0x7FFF, 0x0F: 0x0000, 0x10: 0x7FFF,
             0x11: 0xFFFF, 0x3E: 0x5449, 0x3F: 0x2281}
_WRITABLE = (0x00, 0x01, 0x02, 0x03, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11)


class StaticSource:
    def __init__(self, current_ma=0, bus_mv=0, die_dc=250):
        self.current = current_ma
        self.bus = bus_mv
        self.die = die_dc
        self.t = 0.0

    def current_ma(self):
        return self.current

    def bus_mv(self):
        return self.bus

    def die_dc(self):
        return self.die

    def time_s(self):
        return self.t


class PackShuntSource:
    """tools/sim/pack.Pack seen by a shunt: pack current and bus voltage."""

    def __init__(self, pack, bus="pack"):
        self.pack = pack
        self.bus = bus

    def current_ma(self):
        return self.pack.current_a * 1000.0

    def bus_mv(self):
        p = self.pack
        return (p.pack_voltage() if self.bus == "pack" else p.load_v) * 1000.0

    def die_dc(self):
        return self.pack.power_temp_c * 10.0

    def time_s(self):
        return self.pack.time_s


def _clamp20(v):
    if v > 0x7FFFF:
        return 0x7FFFF, True
    if v < -0x80000:
        return -0x80000, True
    return v, False


class EmuINA228:
    def __init__(self, source, addr=ADDR, shunt_uohm=100):
        self.source = source
        self.addr = addr
        self.shunt_uohm = shunt_uohm
        self.regs = dict(_DEFAULTS)
        self.charge = 0.0          # in CURRENT_LSB * s
        self._t_last = None
        self.nack = 0
        self.dead = False
        self.stuck = {}
        self.gain = 1.0
        self.log = None
        self.transactions = 0

    # ---- chip behaviour ----------------------------------------------------
    def reset(self):
        self.regs = dict(_DEFAULTS)
        self.charge = 0.0

    def _adcrange(self):
        return 1 if self.regs[0x00] & 0x0010 else 0

    def vshunt_raw(self):
        i_a = self.source.current_ma() * self.gain / 1000.0
        v = i_a * self.shunt_uohm * 1e-6
        lsb = 78.125e-9 if self._adcrange() else 312.5e-9
        return _clamp20(int(round(v / lsb)))

    def current_raw(self):
        vs, _ = self.vshunt_raw()
        cal = self.regs[0x02] & 0x7FFF
        if cal == 0:
            return 0, False
        return _clamp20(int(round(vs * 4096.0 / cal)))

    def alert_active(self):
        """SOVL / SUVL against the shunt voltage (5 uV/LSB, 1.25 uV with
        ADCRANGE=1: 16 VSHUNT LSBs): over-limit and under-limit flags, as
        the chip compares every conversion (SLOWALERT=0; with SLOWALERT=1
        it would compare the averaged result, not modelled: the same here)."""
        v, _ = self.vshunt_raw()
        hi = self.regs[0x0C]
        lo = self.regs[0x0D]
        hi = hi - 0x10000 if hi & 0x8000 else hi
        lo = lo - 0x10000 if lo & 0x8000 else lo
        return v > hi * 16, v < lo * 16

    def alert_level(self):
        """The ALERT pin (open drain): 0 while a limit is crossed, unless
        APOL (DIAG_ALRT bit 12) inverts it."""
        over, under = self.alert_active()
        on = over or under
        apol = bool(self.regs[0x0B] & 0x1000)
        return (1 if on else 0) if apol else (0 if on else 1)

    def _integrate(self):
        t = self.source.time_s() if hasattr(self.source, "time_s") else None
        if t is None:
            return
        if self._t_last is not None and t > self._t_last:
            cur, _ = self.current_raw()
            self.charge += cur * (t - self._t_last)
        self._t_last = t

    def _value(self, reg):
        r = self.regs
        if reg == 0x04:
            v, of = self.vshunt_raw()
            return (v & 0xFFFFF) << 4
        if reg == 0x05:
            v = int(round(self.source.bus_mv() / 0.1953125))
            v = max(0, min(v, 0x7FFFF))
            return v << 4
        if reg == 0x06:
            d = self.source.die_dc() if hasattr(self.source, "die_dc") else 250
            return int(round(d / 10.0 / 7.8125e-3)) & 0xFFFF
        if reg == 0x07:
            v, of = self.current_raw()
            if of:
                r[0x0B] |= 0x0200  # MATHOF
            return (v & 0xFFFFF) << 4
        if reg == 0x08:
            i, _ = self.current_raw()
            vb = self._value(0x05) >> 4
            return min(0xFFFFFF, int(abs(i) * vb * 0.1953125e-3 / 3.2))
        if reg == 0x09:
            return 0
        if reg == 0x0A:
            q = int(round(self.charge))
            if not -(1 << 39) <= q < (1 << 39):
                r[0x0B] |= 0x0400  # CHARGEOF
            return q & 0xFFFFFFFFFF
        if reg == 0x0B:
            v = r[0x0B] | 0x0002  # conversion complete
            over, under = self.alert_active()
            if over:
                v |= 0x0040       # SHNTOL
            if under:
                v |= 0x0020       # SHNTUL
            return v
        return r.get(reg, 0)

    # ---- machine.I2C surface -------------------------------------------------
    def _begin(self, addr):
        self.transactions += 1
        if self.dead:
            raise OSError(19)
        if addr != self.addr:
            raise OSError(19)  # nobody ACKs the address
        if self.nack > 0:
            self.nack -= 1
            raise OSError(5)

    def readfrom_mem_into(self, addr, reg, buf):
        self._begin(addr)
        self._integrate()
        n = _SIZES.get(reg, 2)
        if reg in self.stuck:
            data = bytes(self.stuck[reg])
        else:
            v = self._value(reg)
            data = v.to_bytes(n, "big")
            if reg == 0x0B:
                # Reading DIAG_ALRT clears the latched flags (ALATCH mode aside).
                self.regs[0x0B] &= ~0x0602 & 0xFFFF
        for i in range(len(buf)):
            buf[i] = data[i] if i < len(data) else 0xFF
        if self.log is not None:
            self.log.append(("r", reg, bytes(buf)))

    def readfrom_mem(self, addr, reg, n):
        b = bytearray(n)
        self.readfrom_mem_into(addr, reg, b)
        return bytes(b)

    def writeto_mem(self, addr, reg, buf):
        self._begin(addr)
        data = bytes(buf)
        if self.log is not None:
            self.log.append(("w", reg, data))
        if reg not in _WRITABLE or len(data) < 2:
            return  # the chip ACKs and ignores read-only registers
        v = (data[0] << 8) | data[1]
        if reg == 0x00:
            if v & 0x8000:
                self.reset()
                return
            if v & 0x4000:
                self.charge = 0.0
            v &= 0x3FF0
        elif reg == 0x02:
            v &= 0x7FFF
        elif reg == 0x0B:
            v = (v & 0xF000) | (self.regs[0x0B] & 0x0FFF)   # bits 11:0 are flags (read-only)
        self.regs[reg] = v
