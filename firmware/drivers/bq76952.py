"""TI BQ76952 (3S-16S monitor and protector) over I2C: the master's default AFE.

Protocol (TI BQ76952 TRM SLUUBY2B, software guide SLUAA11B):
- 7-bit address 0x08 (0x10 write / 0x11 read on the wire).
- Direct commands are little-endian registers: cell n voltage at
  0x14 + 2(n-1) (I2, mV), stack 0x34 / PACK 0x36 / LD 0x38 (I2, user-volts,
  10 mV by default), CC2 current 0x3A (I2, user-amps), safety alert/status
  A/B/C at 0x02..0x07, battery status 0x12, temperatures 0x68 (die), 0x70/0x72
  /0x74 (TS1-3) in 0.1 K, FET status 0x7F.
- Subcommands: the 16-bit code goes to 0x3E/0x3F; response data appears in the
  32-byte buffer 0x40..0x5F; 0x60 holds the checksum (one's complement of the
  byte sum of code and data) and 0x61 the length (data + 4).  Subcommands that
  carry data, and data-memory writes, write the data to 0x40.. and then the
  checksum and length to 0x60/0x61; only then does the chip act.
- Data memory (0x9180..0x93FF) is written in CONFIG_UPDATE mode, entered with
  SET_CFGUPDATE 0x0090 and left with EXIT_CFGUPDATE 0x0092 (Battery Status
  bit 0 shows the mode).
- Optional CRC-8 (x^8+x^2+x+1, init 0) in Comm Type 0x11/0x12: every data byte
  is followed by its CRC; the first byte's CRC also covers the address and
  register bytes (read: addr W, reg, addr R, data), later ones only the byte.
  Without CRC a corrupted read is undetectable; boards should enable it.

Every transaction is retried up to ``retry_limit`` times on OSError (NACK)
or CRC/checksum mismatch; then OSError(EIO) propagates.  The hot paths
(read_cells, read_current, fault) use preallocated buffers only.

Waits (through ``wait_us``, the injected ``time.sleep_us``; never in the
direct-command reads of the hot path):
- 2 ms after SET_CFGUPDATE and 1 ms after EXIT_CFGUPDATE before the Battery
  Status flag is polled (500 us between polls), the times LibreSolar takes
  from TI's data-sheet command table;
- 200 us after every subcommand or data-memory write before the next access
  to the subcommand window (LibreSolar: without it the next command fails);
- 100 us before each poll of 0x3E for a subcommand's response (bounded).
``configure`` reads back every value it wrote (gains, thresholds, delays,
Enabled Protections, cell and balancing settings); a value the chip does
not hold is written again, and after ``retry_limit`` rounds configure raises
OSError: the board then treats the AFE as failed (relays stay open) instead
of running on a default it never meant to set.
"""
import struct

from micropython import const

from drivers.afe import (FAULT_OCC, FAULT_OCD, FAULT_OT, FAULT_OTHER, FAULT_OV, FAULT_SCD,
                         FAULT_UT, FAULT_UV, MODE_NORMAL, MODE_SHUTDOWN, MODE_SLEEP, Afe,
                         check_no_adjacent)

ADDR = const(0x08)
EIO = const(5)

# Direct commands
_CMD_SAFETY_ALERT_A = const(0x02)  # 0x02..0x07: alert A, status A, alert B, ...
_CMD_BATTERY_STATUS = const(0x12)
_CMD_CELL1 = const(0x14)
_CMD_STACK = const(0x34)
_CMD_PACK = const(0x36)
_CMD_LD = const(0x38)
_CMD_CC2 = const(0x3A)
_CMD_SUBCMD = const(0x3E)
_CMD_BUFFER = const(0x40)
_CMD_CHECKSUM = const(0x60)
_CMD_TEMP_INT = const(0x68)
_CMD_TEMP_TS1 = const(0x70)
_CMD_FET_STATUS = const(0x7F)

# Subcommands
_SUB_DEVICE_NUMBER = const(0x0001)
_SUB_SHUTDOWN = const(0x0010)
_SUB_FET_ENABLE = const(0x0022)
_SUB_MFG_STATUS = const(0x0057)
_SUB_CB_ACTIVE_CELLS = const(0x0083)
_SUB_SET_CFGUPDATE = const(0x0090)
_SUB_EXIT_CFGUPDATE = const(0x0092)
_SUB_ALL_FETS_ON = const(0x0096)
_SUB_FET_CONTROL = const(0x0097)
_SUB_SLEEP_ENABLE = const(0x0099)
_SUB_SLEEP_DISABLE = const(0x009A)
_SUB_OCDL_RECOVER = const(0x009B)
_SUB_SCDL_RECOVER = const(0x009C)

# Data memory (RAM) addresses
_DM_CC_GAIN = const(0x91A8)         # F4
_DM_CAP_GAIN = const(0x91AC)        # F4
_DM_DA_CONFIG = const(0x9303)       # H1: USER_AMPS[1:0], USER_VOLTS_CV bit 2
_DM_VCELL_MODE = const(0x9304)      # H2: one bit per VC channel in use
_DM_FET_OPTIONS = const(0x9308)
_DM_OW_CHECK_TIME = const(0x9314)   # U1, s: Settings:Cell Open-Wire:Check Time (0 = off)
_DM_CB_MAX_CELLS = const(0x933A)    # U1: Cell Balance Max Cells (default 1)
_DM_MFG_STATUS_INIT = const(0x9343)  # H2: PF_EN bit 6, FET_EN bit 4
_DM_ENABLED_PROT_A = const(0x9261)
_DM_CUV_THRESHOLD = const(0x9275)   # I1, 50.6 mV
_DM_CUV_DELAY = const(0x9276)       # U2, 3.3 ms (+6.6 ms)
_DM_COV_THRESHOLD = const(0x9278)
_DM_COV_DELAY = const(0x9279)
_DM_OCC_THRESHOLD = const(0x9280)   # I1, 2 mV across the shunt
_DM_OCC_DELAY = const(0x9281)       # U1, 3.3 ms (+6.6 ms)
_DM_OCD1_THRESHOLD = const(0x9282)
_DM_OCD1_DELAY = const(0x9283)
_DM_SCD_THRESHOLD = const(0x9286)   # enum, SCD_MV
_DM_SCD_DELAY = const(0x9287)       # U1, (n-1) * 15 us

# Safety status A bits
_SA_SCD = const(0x80)
_SA_OCD2 = const(0x40)
_SA_OCD1 = const(0x20)
_SA_OCC = const(0x10)
_SA_COV = const(0x08)
_SA_CUV = const(0x04)

SCD_MV = (10, 20, 40, 60, 80, 100, 125, 150, 175, 200, 250, 300, 350, 400, 450, 500)
# Cell open-wire check interval (s): without it a VC pin whose sense wire
# came off keeps the voltage of its filter capacitors and the two cells
# beside it read a plausible pair (SLUUBY2B, Cell Open Wire).  1 s: 55 uA
# for 3 ms per second, about 165 nA average per pin.
OPEN_WIRE_S = const(1)
_MFG_FET_EN = const(0x10)
_MFG_PF_EN = const(0x40)
# Waits in microseconds (see the module docstring).
_T_ENTER_US = const(2000)
_T_EXIT_US = const(1000)
_T_STATUS_POLL_US = const(500)
_T_WRITE_US = const(200)
_T_POLL_US = const(100)
_SUB_POLLS = const(40)          # 4 ms for a subcommand response
_CFG_POLLS = const(5)
_BS_CFGUPDATE = const(0x0001)
_BS_POR = const(0x0008)         # set at reset, cleared by EXIT_CFGUPDATE
_BS_SLEEP = const(0x8000)
_K_OFFSET_DK = const(2731)  # 0.1 K -> 0.1 degC (273.15 K, rounded)


def crc8(data, n, crc=0):
    """CRC-8 poly 0x07, MSB first, continuing from ``crc``."""
    for i in range(n):
        crc ^= data[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


# CRC-8, polynomial 0x07, one entry per byte value: a table lookup instead
# of eight shift steps per byte (a bytes literal stays in flash when frozen).
_CRC8 = (
    b"\x00\x07\x0e\x09\x1c\x1b\x12\x15\x38\x3f\x36\x31\x24\x23\x2a\x2d"
    b"\x70\x77\x7e\x79\x6c\x6b\x62\x65\x48\x4f\x46\x41\x54\x53\x5a\x5d"
    b"\xe0\xe7\xee\xe9\xfc\xfb\xf2\xf5\xd8\xdf\xd6\xd1\xc4\xc3\xca\xcd"
    b"\x90\x97\x9e\x99\x8c\x8b\x82\x85\xa8\xaf\xa6\xa1\xb4\xb3\xba\xbd"
    b"\xc7\xc0\xc9\xce\xdb\xdc\xd5\xd2\xff\xf8\xf1\xf6\xe3\xe4\xed\xea"
    b"\xb7\xb0\xb9\xbe\xab\xac\xa5\xa2\x8f\x88\x81\x86\x93\x94\x9d\x9a"
    b"\x27\x20\x29\x2e\x3b\x3c\x35\x32\x1f\x18\x11\x16\x03\x04\x0d\x0a"
    b"\x57\x50\x59\x5e\x4b\x4c\x45\x42\x6f\x68\x61\x66\x73\x74\x7d\x7a"
    b"\x89\x8e\x87\x80\x95\x92\x9b\x9c\xb1\xb6\xbf\xb8\xad\xaa\xa3\xa4"
    b"\xf9\xfe\xf7\xf0\xe5\xe2\xeb\xec\xc1\xc6\xcf\xc8\xdd\xda\xd3\xd4"
    b"\x69\x6e\x67\x60\x75\x72\x7b\x7c\x51\x56\x5f\x58\x4d\x4a\x43\x44"
    b"\x19\x1e\x17\x10\x05\x02\x0b\x0c\x21\x26\x2f\x28\x3d\x3a\x33\x34"
    b"\x4e\x49\x40\x47\x52\x55\x5c\x5b\x76\x71\x78\x7f\x6a\x6d\x64\x63"
    b"\x3e\x39\x30\x37\x22\x25\x2c\x2b\x06\x01\x08\x0f\x1a\x1d\x14\x13"
    b"\xae\xa9\xa0\xa7\xb2\xb5\xbc\xbb\x96\x91\x98\x9f\x8a\x8d\x84\x83"
    b"\xde\xd9\xd0\xd7\xc2\xc5\xcc\xcb\xe6\xe1\xe8\xef\xfa\xfd\xf4\xf3")


def _crc_byte(crc, b):
    return _CRC8[crc ^ b]


def checksum(code, data, n):
    """Subcommand/data-memory checksum: ~(lo + hi + data bytes) & 0xFF."""
    s = (code & 0xFF) + (code >> 8)
    for i in range(n):
        s += data[i]
    return (~s) & 0xFF


def _ceil_div(a, b):
    return -((-a) // b)


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def _in_blocks(blocks, addr, n):
    """Bytes addr..addr+n-1 from dm_snapshot blocks, or None."""
    for base, b in blocks:
        if base <= addr and addr + n <= base + 32:
            return b[addr - base:addr - base + n]
    return None


def default_vcell_mask(cells):
    """TI's wiring for fewer than 16 cells: the bottom cells on VC1.. and the
    top cell always on VC16 (unused inputs shorted to the cell below)."""
    if cells >= 16:
        return 0xFFFF
    return ((1 << (cells - 1)) - 1) | 0x8000


class BQ76952(Afe):
    max_cells = 16
    balance_no_adjacent = True  # our policy for the internal bleed FETs

    def __init__(self, i2c, addr=ADDR, crc=False, cells=16, vcell_mask=None, retry_limit=3,
                 wait_us=None):
        Afe.__init__(self)
        self.i2c = i2c
        self.wait_us = wait_us   # time.sleep_us on a board; None: no waits
        self.verify_errors = 0   # configure read-backs that differed
        self.bal_max = 16
        self.addr = addr
        self.crc = crc
        self.retry_limit = retry_limit
        self.user_amps_ma = 1
        self.user_volts_mv = 10
        self.status = bytearray(6)  # last safety alert/status A..C
        self._rx = bytearray(72)
        self._rxv = memoryview(self._rx)
        self._raw = bytearray(144)
        self._rawv = memoryview(self._raw)
        self._tx = bytearray(72)
        self._txv = memoryview(self._tx)
        self._wire = bytearray(144)
        self._wirev = memoryview(self._wire)
        self._chan = bytearray(16)
        self._arg = bytearray(2)    # a subcommand's data (bleed mask, FET bits)
        self._views = {}
        self.cells = 0
        # Battery Status POR seen by fault(): the chip reset and runs on its
        # data-memory defaults until configure() runs again.
        self.config_lost = False
        self._set_cells(cells, vcell_mask)

    def _set_cells(self, cells, mask):
        if not 1 <= cells <= 16:
            raise ValueError("BQ76952 cells 1..16")
        if mask is None:
            mask = default_vcell_mask(cells)
        k = 0
        for ch in range(16):
            if mask & (1 << ch):
                if k < cells:
                    self._chan[k] = ch
                k += 1
        if k != cells:
            raise ValueError("vcell mask has %d channels for %d cells" % (k, cells))
        self.cells = cells
        self.vcell_mask = mask

    # ---- raw transactions ---------------------------------------------------
    def _view(self, mv, n):
        # Slicing a memoryview allocates on MicroPython: cache one per buffer
        # and length.
        key = n << 2
        if mv is self._rawv:
            key |= 1
        elif mv is self._txv:
            key |= 2
        elif mv is self._wirev:
            key |= 3
        v = self._views.get(key)
        if v is None:
            v = mv[:n]
            self._views[key] = v
        return v

    def _read(self, reg, n):
        """Read n bytes from register reg into self._rx[0:n]."""
        a = self.addr
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            try:
                if not self.crc:
                    self.i2c.readfrom_mem_into(a, reg, self._view(self._rxv, n))
                    return
                raw = self._view(self._rawv, 2 * n)
                self.i2c.readfrom_mem_into(a, reg, raw)
                tab = _CRC8
                crc = tab[tab[tab[a << 1] ^ reg] ^ ((a << 1) | 1)]
                ok = True
                rx = self._rx
                for i in range(n):
                    d = raw[2 * i]
                    if tab[crc ^ d] != raw[2 * i + 1]:
                        ok = False
                        break
                    rx[i] = d
                    crc = 0
                if ok:
                    return
                self.crc_errors += 1
            except OSError:
                pass
        raise OSError(EIO)

    def _write(self, reg, data, n):
        a = self.addr
        if self.crc:
            w = self._wire
            crc = _crc_byte(_crc_byte(0, a << 1), reg)
            for i in range(n):
                d = data[i]
                w[2 * i] = d
                w[2 * i + 1] = _crc_byte(crc, d)
                crc = 0
            buf = self._view(self._wirev, 2 * n)
        elif data is self._tx:
            # Every write of a subcommand or a bleed mask (a slave's loop
            # while its master balances) comes from _tx.
            buf = self._view(self._txv, n)
        else:
            buf = memoryview(data)[:n]
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            try:
                self.i2c.writeto_mem(a, reg, buf)
                return
            except OSError:
                pass
        raise OSError(EIO)

    def read_u16(self, cmd):
        self._read(cmd, 2)
        return self._rx[0] | (self._rx[1] << 8)

    def read_i16(self, cmd):
        v = self.read_u16(cmd)
        return v - 0x10000 if v & 0x8000 else v

    # ---- subcommands and data memory ---------------------------------------
    def _wait(self, us):
        w = self.wait_us
        if w is not None:
            w(us)

    def _send_code(self, code):
        t = self._tx
        t[0] = code & 0xFF
        t[1] = code >> 8
        self._write(_CMD_SUBCMD, t, 2)

    def subcommand(self, code):
        """Command-only subcommand; waits until the chip takes the next one."""
        self._send_code(code)
        self._wait(_T_WRITE_US)

    def subcommand_read(self, code, n):
        """Run a subcommand (or data-memory read) and return a memoryview of
        its first n response bytes, checksum-verified."""
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            self._send_code(code)
            # The chip echoes the code at 0x3E/0x3F once the buffer is ready
            # (0xFF while busy); bounded polling with a wait before each poll.
            ready = False
            for _ in range(_SUB_POLLS):
                self._wait(_T_POLL_US)
                if self.read_u16(_CMD_SUBCMD) == code:
                    ready = True
                    break
            if not ready:
                continue
            self._read(_CMD_CHECKSUM, 2)
            cks = self._rx[0]
            ln = self._rx[1] - 4
            if ln < n or ln > 32:
                self.crc_errors += 1
                continue
            self._read(_CMD_BUFFER, ln)
            if checksum(code, self._rx, ln) != cks:
                self.crc_errors += 1
                continue
            return self._rxv[:n]
        raise OSError(EIO)

    def subcommand_write(self, code, data, n):
        """Subcommand with data, or a data-memory write: code and data in one
        block from 0x3E, then checksum and length to 0x60/0x61; then the
        chip's processing time."""
        t = self._tx
        t[0] = code & 0xFF
        t[1] = code >> 8
        for i in range(n):
            t[2 + i] = data[i]
        self._write(_CMD_SUBCMD, t, 2 + n)
        t[0] = checksum(code, data, n)
        t[1] = n + 4
        self._write(_CMD_CHECKSUM, t, 2)
        self._wait(_T_WRITE_US)

    def dm_write(self, addr, fmt, value):
        """Write one data-memory value (struct format '<B', '<b', '<H', '<f')."""
        b = struct.pack(fmt, value)
        self.subcommand_write(addr, b, len(b))

    def dm_read(self, addr, fmt):
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, bytes(self.subcommand_read(addr, n)))[0]

    def dm_snapshot(self, spans):
        """The data memory under spans ((address, length) pairs) as a list of
        (base, 32 bytes) blocks, read as few blocks as possible (TRM: a
        data-memory read returns the 32 bytes from the address)."""
        blocks = []
        for addr, n in sorted(spans):
            if _in_blocks(blocks, addr, n) is None:
                blocks.append((addr, bytes(self.subcommand_read(addr, 32))))
        return blocks

    def battery_status(self):
        return self.read_u16(_CMD_BATTERY_STATUS)

    def _cfgupdate(self, enter):
        self._send_code(_SUB_SET_CFGUPDATE if enter else _SUB_EXIT_CFGUPDATE)
        self._wait(_T_ENTER_US if enter else _T_EXIT_US)
        for i in range(_CFG_POLLS):
            if i:
                self._wait(_T_STATUS_POLL_US)
            on = bool(self.battery_status() & _BS_CFGUPDATE)
            if on == enter:
                return
        raise OSError(EIO)

    # ---- configuration -----------------------------------------------------
    def configure(self, conf):
        """Apply cells, current scale and the hardware protections; returns the
        applied values decoded from the chip's data memory (read back)."""
        cells = conf.get("cells", self.cells)
        self._set_cells(cells, conf.get("vcell_mask"))
        uohm = conf.get("shunt_uohm", 1000)
        if uohm <= 0:
            raise ValueError("shunt_uohm must be > 0")
        scd_ma = conf.get("scd_ma", 0)
        # CC2 is an I2 in user-amps: pick the unit so the largest current fits.
        amps = 1  # 1 mA
        if scd_ma > 32000:
            amps = 2  # 10 mA
        if scd_ma > 320000:
            amps = 3  # 100 mA
        # SLUUBY2B 4.12: CC Gain = 1e6 x VREF2 / (5 x 32768 x R[mOhm]), nominal
        # 7.5684 / R[mOhm] with VREF2 = 1.24 V; Capacity Gain = CC Gain x
        # 298261.6178.  Both IEEE-754 single, little-endian like all DM values.
        cc_gain = 7.5684 * 1000.0 / uohm
        w = []
        w.append((_DM_VCELL_MODE, "<H", self.vcell_mask))
        w.append((_DM_DA_CONFIG, "<B", 0x04 | amps))  # USER_VOLTS_CV, USER_AMPS
        w.append((_DM_CC_GAIN, "<f", cc_gain))
        w.append((_DM_CAP_GAIN, "<f", cc_gain * 298261.6178))
        # Cell Balance Max Cells: the chip refuses a CB_ACTIVE_CELLS mask with
        # more cells (default 1); allow as many as our own policy can ask for.
        n = self.cells
        bal_max = _clamp(conf.get("bal_max_cells", (n + 1) // 2 if self.balance_no_adjacent else n),
                         1, 16)
        w.append((_DM_CB_MAX_CELLS, "<B", bal_max))
        # Mfg Status Init as in TI's BQ769x2 example (PF_EN | FET_EN).  The chip
        # copies it to Manufacturing Status only at reset, so it matters if
        # this RAM image is ever programmed into OTP; at run time FET_EN is
        # checked below and set with FET_ENABLE.
        w.append((_DM_MFG_STATUS_INIT, "<H", _MFG_PF_EN | _MFG_FET_EN))
        # Cell open-wire check: its current drains a floating VC pin, so the
        # cell below a broken sense wire reads low (then 0: invalid) and the
        # one above high, instead of a plausible pair that blinds OV.
        w.append((_DM_OW_CHECK_TIME, "<B", _clamp(conf.get("open_wire_s", OPEN_WIRE_S), 0, 255)))
        if "cov_mv" in conf:
            w.append((_DM_COV_THRESHOLD, "<b", _clamp(_ceil_div(conf["cov_mv"] * 10, 506), 20, 110)))
            w.append((_DM_COV_DELAY, "<H", self._delay_code(conf.get("cov_delay_ms", 250), 2047)))
        if "cuv_mv" in conf:
            w.append((_DM_CUV_THRESHOLD, "<b", _clamp(conf["cuv_mv"] * 10 // 506, 20, 90)))
            w.append((_DM_CUV_DELAY, "<H", self._delay_code(conf.get("cuv_delay_ms", 250), 2047)))
        if "occ_ma" in conf:
            w.append((_DM_OCC_THRESHOLD, "<b", _clamp(_ceil_div(conf["occ_ma"] * uohm, 2000000), 2, 62)))
            w.append((_DM_OCC_DELAY, "<B", self._delay_code(conf.get("occ_delay_ms", 20), 127)))
        if "ocd1_ma" in conf:
            w.append((_DM_OCD1_THRESHOLD, "<b", _clamp(_ceil_div(conf["ocd1_ma"] * uohm, 2000000), 2, 100)))
            w.append((_DM_OCD1_DELAY, "<B", self._delay_code(conf.get("ocd1_delay_ms", 20), 127)))
        if scd_ma:
            code = len(SCD_MV) - 1
            for i in range(len(SCD_MV)):
                if SCD_MV[i] * 1000000 >= scd_ma * uohm:
                    code = i
                    break
            w.append((_DM_SCD_THRESHOLD, "<B", code))
            us = conf.get("scd_delay_us", 200)
            w.append((_DM_SCD_DELAY, "<B", _clamp(_ceil_div(us, 15) + 1, 1, 31)))
        # Enable only what we configured: the chip's defaults (e.g. OCC at
        # 4 mV) would trip a large pack in normal use.
        prot = 0
        for key, bit in (("cov_mv", _SA_COV), ("cuv_mv", _SA_CUV), ("occ_ma", _SA_OCC),
                         ("ocd1_ma", _SA_OCD1), ("scd_ma", _SA_SCD)):
            if conf.get(key):
                prot |= bit
        w.append((_DM_ENABLED_PROT_A, "<B", prot))
        for i in range(len(w)):
            addr, fmt, val = w[i]
            w[i] = (addr, struct.pack(fmt, val))
        for attempt in range(self.retry_limit + 1):
            if attempt:
                self.retries += 1
            self._cfgupdate(True)
            try:
                for addr, b in w:
                    self.subcommand_write(addr, b, len(b))
            finally:
                self._cfgupdate(False)
            # Read back everything protection depends on: a write the chip
            # dropped must not leave a default (e.g. OCC at 4 mV) in force.
            snap = self.dm_snapshot([(addr, len(b)) for addr, b in w])
            ok = True
            for addr, b in w:
                if _in_blocks(snap, addr, len(b)) != b:
                    ok = False
                    break
            if ok:
                break
            self.verify_errors += 1
        else:
            raise OSError(EIO)
        self.bal_max = bal_max
        self.config_lost = False   # EXIT_CFGUPDATE cleared POR
        mfg = self.subcommand_read(_SUB_MFG_STATUS, 2)
        if not mfg[0] & _MFG_FET_EN:
            self.subcommand(_SUB_FET_ENABLE)  # toggles FET_EN: firmware FET control
        return self._applied(uohm, snap)

    @staticmethod
    def _delay_code(ms, hi):
        return _clamp(_ceil_div(ms * 10, 33) - 2, 1, hi)

    def _applied(self, uohm, snap):
        def r(addr, fmt):
            return struct.unpack(fmt, _in_blocks(snap, addr, struct.calcsize(fmt)))[0]
        da = r(_DM_DA_CONFIG, "<B")
        self.user_amps_ma = (0, 1, 10, 100)[da & 3] or 1
        self.user_volts_mv = 10 if da & 0x04 else 1
        mask = r(_DM_VCELL_MODE, "<H")
        n = 0
        for ch in range(16):
            if mask & (1 << ch):
                n += 1
        prot = r(_DM_ENABLED_PROT_A, "<B")
        out = {"cells": n, "vcell_mask": mask, "user_amps_ma": self.user_amps_ma,
               "prot_a": prot, "shunt_uohm": uohm, "bal_max_cells": r(_DM_CB_MAX_CELLS, "<B"),
               "cc_gain": r(_DM_CC_GAIN, "<f"), "open_wire_s": r(_DM_OW_CHECK_TIME, "<B")}
        if prot & _SA_COV:
            out["cov_mv"] = r(_DM_COV_THRESHOLD, "<b") * 506 // 10
            out["cov_delay_ms"] = (r(_DM_COV_DELAY, "<H") + 2) * 33 // 10
        if prot & _SA_CUV:
            out["cuv_mv"] = r(_DM_CUV_THRESHOLD, "<b") * 506 // 10
            out["cuv_delay_ms"] = (r(_DM_CUV_DELAY, "<H") + 2) * 33 // 10
        if prot & _SA_OCC:
            out["occ_ma"] = r(_DM_OCC_THRESHOLD, "<b") * 2000000 // uohm
            out["occ_delay_ms"] = (r(_DM_OCC_DELAY, "<B") + 2) * 33 // 10
        if prot & _SA_OCD1:
            out["ocd1_ma"] = r(_DM_OCD1_THRESHOLD, "<b") * 2000000 // uohm
            out["ocd1_delay_ms"] = (r(_DM_OCD1_DELAY, "<B") + 2) * 33 // 10
        if prot & _SA_SCD:
            out["scd_ma"] = SCD_MV[r(_DM_SCD_THRESHOLD, "<B") & 15] * 1000000 // uohm
            out["scd_delay_us"] = (r(_DM_SCD_DELAY, "<B") - 1) * 15
        return out

    def device_number(self):
        v = self.subcommand_read(_SUB_DEVICE_NUMBER, 2)
        return v[0] | (v[1] << 8)

    # ---- measurements --------------------------------------------------------
    def read_cells(self, cell_mv, n):
        if n > self.cells:
            raise ValueError("only %d cells configured" % self.cells)
        self._read(_CMD_CELL1, 32)  # one block: 16 x I2 from 0x14
        rx = self._rx
        for i in range(n):
            o = 2 * self._chan[i]
            v = rx[o] | (rx[o + 1] << 8)
            cell_mv[i] = 0 if v & 0x8000 else v
        return n

    def read_temps(self, temp_dc):
        """[0] die, [1..3] TS1..TS3 (only meaningful where a thermistor is
        configured on that pin) in 0.1 degC; returns 4."""
        temp_dc[0] = self.read_u16(_CMD_TEMP_INT) - _K_OFFSET_DK
        self._read(_CMD_TEMP_TS1, 6)
        rx = self._rx
        for k in range(3):
            temp_dc[1 + k] = (rx[2 * k] | (rx[2 * k + 1] << 8)) - _K_OFFSET_DK
        return 4

    def read_current(self):
        return self.read_i16(_CMD_CC2) * self.user_amps_ma

    def read_stack_mv(self):
        return self.read_i16(_CMD_STACK) * self.user_volts_mv

    def read_pack_mv(self):
        return self.read_i16(_CMD_PACK) * self.user_volts_mv

    def read_ld_mv(self):
        return self.read_i16(_CMD_LD) * self.user_volts_mv

    def fet_status(self):
        self._read(_CMD_FET_STATUS, 1)
        return self._rx[0]

    # ---- outputs -------------------------------------------------------------
    def balance(self, flags):
        n = self.cells
        if self.balance_no_adjacent:
            check_no_adjacent(flags, min(n, len(flags)))
        mask = 0
        k = 0
        for i in range(min(n, len(flags))):
            if flags[i]:
                mask |= 1 << self._chan[i]
                k += 1
        if k > self.bal_max:
            # The chip would refuse the whole mask (Cell Balance Max Cells).
            raise ValueError("more cells than Cell Balance Max Cells")
        a = self._arg
        a[0] = mask & 0xFF
        a[1] = mask >> 8
        self.subcommand_write(_SUB_CB_ACTIVE_CELLS, a, 2)

    def set_switches(self, chg, dsg):
        """Host FET control via FET_CONTROL (one atomic write: bit0 DSG_OFF,
        bit1 PDSG_OFF, bit2 CHG_OFF, bit3 PCHG_OFF), also for "both off": we
        never send ALL_FETS_OFF, whose latch FET_CONTROL does not lift.  When
        both paths are wanted on, ALL_FETS_ON follows: it lifts such a latch
        left by anyone else (a host tool, an earlier firmware) and cannot turn
        on a FET we want off.  The chip's own protections still override."""
        a = self._arg
        a[0] = (0 if dsg else 0x03) | (0 if chg else 0x0C)
        self.subcommand_write(_SUB_FET_CONTROL, a, 1)
        if chg and dsg:
            self.subcommand(_SUB_ALL_FETS_ON)

    def set_mode(self, mode):
        if mode == MODE_NORMAL:
            self.subcommand(_SUB_SLEEP_DISABLE)
        elif mode == MODE_SLEEP:
            self.subcommand(_SUB_SLEEP_ENABLE)
        elif mode == MODE_SHUTDOWN:
            # SLUUBY2B command table: twice within 4 s only when SEALED; we
            # run the chip unsealed (we write its data memory), so once starts
            # the shutdown sequence (twice would skip its delays).
            self.subcommand(_SUB_SHUTDOWN)
        else:
            raise ValueError("mode")

    # ---- faults --------------------------------------------------------------
    def fault(self):
        # Battery Status POR: the chip reset (brown-out) and lost what
        # configure wrote (protections, gains, balancing limit): config_lost
        # tells the board to configure it again.
        self._read(_CMD_BATTERY_STATUS, 2)
        if self._rx[0] & _BS_POR:
            self.config_lost = True
        self._read(_CMD_SAFETY_ALERT_A, 6)
        s = self.status
        for i in range(6):
            s[i] = self._rx[i]
        a = s[1]
        b = s[3]
        c = s[5]
        f = 0
        if a & _SA_SCD or c & 0x40:           # SCD, SCDL
            f |= FAULT_SCD
        if a & (_SA_OCD1 | _SA_OCD2) or c & 0xA0:  # OCD1/2, OCD3, OCDL
            f |= FAULT_OCD
        if a & _SA_OCC:
            f |= FAULT_OCC
        if a & _SA_COV or c & 0x10:           # COV, COVL
            f |= FAULT_OV
        if a & _SA_CUV:
            f |= FAULT_UV
        if b & 0xF0:                          # OTF, OTINT, OTD, OTC
            f |= FAULT_OT
        if b & 0x07:                          # UTINT, UTD, UTC
            f |= FAULT_UT
        if c & 0x06:                          # PTO, HWDF
            f |= FAULT_OTHER
        return f

    def clear_fault(self):
        self.subcommand(_SUB_OCDL_RECOVER)
        self.subcommand(_SUB_SCDL_RECOVER)
