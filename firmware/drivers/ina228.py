"""TI INA228 85 V, 20-bit shunt monitor over I2C (datasheet SLYS021A).

Registers are big-endian.  VSHUNT/VBUS/CURRENT are 24-bit with the 20-bit
result in bits 23:4 (VSHUNT and CURRENT two's complement); CHARGE is a 40-bit
two's-complement accumulator in CURRENT_LSB coulombs; DIETEMP is 16-bit
signed at 7.8125 m degC.  The chip computes CURRENT from VSHUNT and
SHUNT_CAL = 13107.2e6 * CURRENT_LSB * R_SHUNT (x4 with ADCRANGE=1).

Integer output only: mA, mV, uV, 0.1 degC.  CURRENT_LSB is a whole number of
uA so every hot-path product stays a small int (< 2**30) on the board; the
core applies its own gain/offset calibration (params cur_gain/cur_offset) on
top of the raw mA.

Full scale (docs/safety.md, "Current beyond the shunt's range"): the chip
computes CURRENT = VSHUNT * 4096 / SHUNT_CAL, so with SHUNT_CAL below 4096
CURRENT overflows (DIAG_ALRT MATHOF: "current and power data may be
invalid", the datasheet does not say it clips) before the ADC does.  The
driver therefore scales CURRENT over the whole ADC range of the range
``max_current_ma`` selects (SHUNT_CAL >= 4096, refused below): only VSHUNT
can clip, at its full-scale code.  A reading within 1/128 of full scale
counts as saturated: ``read_current_ma`` returns +-``full_ma`` (the
current at the range's full-scale shunt voltage, the largest it can tell)
and sets ``saturated``, which the core keeps at least that large through
its calibration; a limit above ``full_ma`` is refused by the parameter
set's board rule (bms.params.current_rule).

Every transaction is retried up to ``retry_limit`` times on OSError (NACK,
timeout); then OSError(EIO) propagates so the board reports a sensor fault.
Counters ``retries`` and ``errors`` (transactions that finally failed) only
grow.  Reads use preallocated buffers (readfrom_mem_into): no allocation.
"""
from micropython import const

ADDR = const(0x40)  # A1 = A0 = GND
EIO = const(5)
ENODEV = const(19)

_REG_CONFIG = const(0x00)
_REG_ADC_CONFIG = const(0x01)
_REG_SHUNT_CAL = const(0x02)
_REG_SHUNT_TEMPCO = const(0x03)
_REG_VSHUNT = const(0x04)
_REG_VBUS = const(0x05)
_REG_DIETEMP = const(0x06)
_REG_CURRENT = const(0x07)
_REG_POWER = const(0x08)
_REG_ENERGY = const(0x09)
_REG_CHARGE = const(0x0A)
_REG_DIAG_ALRT = const(0x0B)
_REG_SOVL = const(0x0C)
_REG_SUVL = const(0x0D)
_REG_MANUFACTURER_ID = const(0x3E)
_REG_DEVICE_ID = const(0x3F)
_SOVL_LSB_NV_0 = const(5000)   # SOVL/SUVL: 5 uV/LSB, ADCRANGE=0
_SOVL_LSB_NV_1 = const(1250)   # 1.25 uV/LSB, ADCRANGE=1

_MANUFACTURER_TI = const(0x5449)  # "TI"
_DIE_ID = const(0x228)            # DEVICE_ID bits 15:4

# CONFIG bits
_CFG_RST = const(0x8000)
_CFG_RSTACC = const(0x4000)
_CFG_TEMPCOMP = const(0x0020)
_CFG_ADCRANGE = const(0x0010)

# ADC_CONFIG: MODE 15:12, VBUSCT 11:9, VSHCT 8:6, VTCT 5:3, AVG 2:0
_MODE_CONT_ALL = const(0xF)        # continuous bus, shunt and temperature
CT_US = (50, 84, 150, 280, 540, 1052, 2074, 4120)
AVG_N = (1, 4, 16, 64, 128, 256, 512, 1024)

# DIAG_ALRT bits
_DIAG_ALATCH = const(0x8000)
_DIAG_CNVR = const(0x4000)
_DIAG_SLOWALERT = const(0x2000)
_DIAG_APOL = const(0x1000)
_DIAG_ENERGYOF = const(0x0800)
_DIAG_CHARGEOF = const(0x0400)
_DIAG_MATHOF = const(0x0200)
_DIAG_TMPOL = const(0x0080)
_DIAG_SHNTOL = const(0x0040)
_DIAG_SHNTUL = const(0x0020)
_DIAG_BUSOL = const(0x0010)
_DIAG_BUSUL = const(0x0008)
_DIAG_POL = const(0x0004)
_DIAG_CNVRF = const(0x0002)
_DIAG_MEMSTAT = const(0x0001)

# Full-scale shunt range in nV: +-163.84 mV (ADCRANGE 0), +-40.96 mV (1).
_FS_SHUNT_NV_0 = const(163840000)
_FS_SHUNT_NV_1 = const(40960000)
_RESULT_MAX = const(0x7FFFF)  # 2**19 - 1
_CAL_UNITY = const(4096)      # SHUNT_CAL at which CURRENT == VSHUNT (codes)
# VSHUNT codes at or beyond which a reading counts as clipped: 1/128 of
# full scale below it (an averaged result of partly clipped conversions).
_SAT_CODE = const(0x7FFFF - 0x1000)


def shunt_cal(current_lsb_ua, shunt_uohm, adcrange):
    """SHUNT_CAL = 13107.2e6 * CURRENT_LSB[A] * R[ohm] (x4 if ADCRANGE=1),
    rounded; integer arithmetic: 131072 * lsb_ua * uohm / 1e7."""
    num = 131072 * current_lsb_ua * shunt_uohm * (4 if adcrange else 1)
    return (num + 5000000) // 10000000


def full_scale_nv(adcrange):
    """The ADC's full-scale shunt voltage in nV for ``adcrange``."""
    return _FS_SHUNT_NV_1 if adcrange else _FS_SHUNT_NV_0


def best_lsb_ua(max_current_ma, shunt_uohm, adcrange):
    """Smallest-error whole-uA LSB in [Imax/2**19, 1.25 * that] (configure
    time only; may use big ints).  The driver passes the range's full-scale
    current, so SHUNT_CAL >= 4096 and CURRENT cannot overflow."""
    lo = (max_current_ma * 1000 + 524287) // 524288
    if lo < 1:
        lo = 1
    best = lo
    best_err = None
    k = 4 if adcrange else 1
    for lsb in range(lo, lo + lo // 4 + 1):
        num = 131072 * lsb * shunt_uohm * k
        rem = num % 10000000
        if rem > 5000000:
            rem = 10000000 - rem
        if num < 10000000 // 2 or num // 10000000 > 0x7FFF:
            continue
        # relative error rem/num, compared without division
        if best_err is None or rem * best_err[1] < best_err[0] * num:
            best = lsb
            best_err = (rem, num)
    return best


def adc_config(vbusct=4, vshct=5, vtct=4, avg=2, mode=_MODE_CONT_ALL):
    return (mode << 12) | (vbusct << 9) | (vshct << 6) | (vtct << 3) | avg


def _s20(b0, b1, b2):
    v = (b0 << 12) | (b1 << 4) | (b2 >> 4)
    return v - 0x100000 if v & 0x80000 else v


class INA228:
    retry_limit = 3

    def __init__(self, i2c, addr=ADDR, shunt_uohm=100, max_current_ma=300000,
                 adcrange=None, adc_cfg=None, retry_limit=3, current_lsb_ua=None):
        if shunt_uohm <= 0 or max_current_ma <= 0:
            raise ValueError("shunt and max current must be > 0")
        self.i2c = i2c
        self.addr = addr
        self.shunt_uohm = shunt_uohm
        self.max_current_ma = max_current_ma
        self.retry_limit = retry_limit
        self.retries = 0
        self.errors = 0
        # Finest range that still holds the full-scale shunt voltage (nV).
        v_nv = max_current_ma * shunt_uohm  # mA * uohm = nV
        if adcrange is None:
            adcrange = 1 if v_nv <= _FS_SHUNT_NV_1 else 0
        fs_nv = full_scale_nv(adcrange)
        if v_nv > fs_nv:
            raise ValueError("max current x shunt beyond the ADC range")
        self.adcrange = adcrange
        # The largest current the range tells apart (mA): the reading of a
        # clipped ADC, and the ceiling of every current limit on this board.
        self.full_ma = fs_nv // shunt_uohm
        # CURRENT_LSB >= the range's full-scale current / 2**19, a whole
        # number of uA, picked so that SHUNT_CAL (an integer) carries the
        # least rounding error: the chip then scales by exactly the LSB the
        # driver multiplies with.  Over the whole range, not max_current_ma:
        # CURRENT must not overflow before VSHUNT clips.
        if current_lsb_ua is None:
            current_lsb_ua = best_lsb_ua((fs_nv + shunt_uohm - 1) // shunt_uohm,
                                         shunt_uohm, adcrange)
        self.current_lsb_ua = current_lsb_ua
        self.cal = shunt_cal(current_lsb_ua, shunt_uohm, adcrange)
        if not _CAL_UNITY <= self.cal <= 0x7FFF:
            raise ValueError("SHUNT_CAL %d out of range %d..32767 (CURRENT would overflow "
                             "before the ADC clips)" % (self.cal, _CAL_UNITY))
        # CURRENT code of a clipped VSHUNT, _SAT_CODE * 4096 // SHUNT_CAL
        # (rounded down: at or above it the reading is saturated), in two
        # steps that stay small ints.
        cal = self.cal
        x = _SAT_CODE * (_CAL_UNITY >> 4)
        q = x // cal
        self._sat = q * 16 + (x - q * cal) * 16 // cal
        self.saturated = False
        self.adc_cfg = adc_config() if adc_cfg is None else adc_cfg
        self._b2 = bytearray(2)
        self._b3 = bytearray(3)
        self._b5 = bytearray(5)
        self._w2 = bytearray(2)

    # ---- raw transactions --------------------------------------------------
    def _read(self, reg, buf):
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            try:
                self.i2c.readfrom_mem_into(self.addr, reg, buf)
                return buf
            except OSError:
                pass
        self.errors += 1
        raise OSError(EIO)

    def write_reg(self, reg, value):
        w = self._w2
        w[0] = (value >> 8) & 0xFF
        w[1] = value & 0xFF
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            try:
                self.i2c.writeto_mem(self.addr, reg, w)
                return
            except OSError:
                pass
        self.errors += 1
        raise OSError(EIO)

    def read_reg(self, reg):
        b = self._read(reg, self._b2)
        return (b[0] << 8) | b[1]

    # ---- configuration -----------------------------------------------------
    def configure(self, reset=True):
        """Check the identity, program CONFIG/ADC_CONFIG/SHUNT_CAL and read
        them back; returns the applied values."""
        if self.read_reg(_REG_MANUFACTURER_ID) != _MANUFACTURER_TI or \
                (self.read_reg(_REG_DEVICE_ID) >> 4) != _DIE_ID:
            raise OSError(ENODEV)
        if reset:
            self.write_reg(_REG_CONFIG, _CFG_RST)
        cfg = _CFG_ADCRANGE if self.adcrange else 0
        self.write_reg(_REG_CONFIG, cfg)
        self.write_reg(_REG_ADC_CONFIG, self.adc_cfg)
        self.write_reg(_REG_SHUNT_CAL, self.cal)
        got = (self.read_reg(_REG_CONFIG), self.read_reg(_REG_ADC_CONFIG),
               self.read_reg(_REG_SHUNT_CAL))
        if got != (cfg, self.adc_cfg, self.cal):
            raise OSError(EIO)
        return {"adcrange": self.adcrange, "current_lsb_ua": self.current_lsb_ua,
                "shunt_cal": self.cal, "adc_config": self.adc_cfg,
                "full_scale_ma": self.full_ma}

    def config_held(self):
        """True while the chip still holds CONFIG, ADC_CONFIG and SHUNT_CAL
        as configured: a chip that reset (brown-out) answers with its
        defaults (SHUNT_CAL 0x1000, ADCRANGE 0), and CURRENT is then scaled
        wrongly.  OSError if it does not answer."""
        cfg = _CFG_ADCRANGE if self.adcrange else 0
        return (self.read_reg(_REG_SHUNT_CAL) == self.cal
                and self.read_reg(_REG_ADC_CONFIG) == self.adc_cfg
                and self.read_reg(_REG_CONFIG) & 0x3FF0 == cfg)

    def reset_charge(self):
        self.write_reg(_REG_CONFIG, _CFG_RSTACC | (_CFG_ADCRANGE if self.adcrange else 0))

    # ---- measurements (allocation-free) -------------------------------------
    def read_current_raw(self):
        b = self._read(_REG_CURRENT, self._b3)
        return _s20(b[0], b[1], b[2])

    def read_current_ma(self):
        """Rounded raw * CURRENT_LSB, split so no product reaches 2**30; a
        reading at (within 1/128 of) the ADC's full scale is +-full_ma with
        ``saturated`` set: the current is that large or larger."""
        raw = self.read_current_raw()
        sat = self._sat
        if raw >= sat or raw <= -sat:
            self.saturated = True
            return self.full_ma if raw > 0 else -self.full_ma
        self.saturated = False
        lsb = self.current_lsb_ua
        hi = raw // 1000
        lo = raw - hi * 1000
        return hi * lsb + (lo * lsb + 500) // 1000

    def read_shunt_uv(self):
        """Shunt voltage in uV, rounded: 312.5 nV = 5/16 uV (78.125 = 5/64)."""
        b = self._read(_REG_VSHUNT, self._b3)
        v = _s20(b[0], b[1], b[2]) * 5
        return (v + 32) >> 6 if self.adcrange else (v + 8) >> 4

    def read_bus_mv(self):
        """195.3125 uV/LSB = 25/128 mV; the result is never negative."""
        b = self._read(_REG_VBUS, self._b3)
        v = _s20(b[0], b[1], b[2])
        if v < 0:
            v = 0
        return (v * 25 + 64) >> 7

    def read_die_dc(self):
        """7.8125 m degC/LSB = 5/64 of 0.1 degC."""
        b = self._read(_REG_DIETEMP, self._b2)
        v = (b[0] << 8) | b[1]
        if v & 0x8000:
            v -= 0x10000
        return (v * 5 + 32) >> 6

    def read_charge_raw(self):
        """40-bit signed accumulator (may be a big int on the board: call it
        from slow tasks only)."""
        b = self._read(_REG_CHARGE, self._b5)
        v = (b[0] << 32) | (b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4]
        return v - (1 << 40) if b[0] & 0x80 else v

    def read_charge_mas(self):
        """Accumulated charge in mA*s (1 mAh = 3600 mAs)."""
        raw = self.read_charge_raw()
        return (raw * self.current_lsb_ua + 500) // 1000

    def diag(self):
        return self.read_reg(_REG_DIAG_ALRT)

    def _limit(self, ma):
        """SOVL/SUVL code for a shunt current ``ma``: 5 uV/LSB (1.25 uV with
        ADCRANGE=1) in two's complement; magnitude rounded up and clamped."""
        lsb = _SOVL_LSB_NV_1 if self.adcrange else _SOVL_LSB_NV_0
        a = ma if ma >= 0 else -ma
        if a > 0x3FFFFFFF // self.shunt_uohm:
            code = 0x7FFF                 # beyond full scale (and a small int)
        else:
            code = (a * self.shunt_uohm + lsb - 1) // lsb   # mA * uohm = nV
            if code > 0x7FFF:
                code = 0x7FFF
        if ma >= 0:
            return code
        return (0x10000 - code) & 0xFFFF

    def set_alert_ma(self, over_ma, under_ma):
        """ALERT (active low, transparent: it follows every conversion, not
        the averaged result) while the shunt current is above ``over_ma`` or
        below ``under_ma`` (signed, the driver's raw mA).  Read back; OSError
        if the chip did not take it."""
        hi = self._limit(over_ma)
        lo = self._limit(under_ma)
        self.write_reg(_REG_DIAG_ALRT, 0)   # ALATCH, CNVR, SLOWALERT, APOL off
        self.write_reg(_REG_SOVL, hi)
        self.write_reg(_REG_SUVL, lo)
        if (self.read_reg(_REG_SOVL), self.read_reg(_REG_SUVL)) != (hi, lo):
            raise OSError(EIO)
        return hi, lo
