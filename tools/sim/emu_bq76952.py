"""Byte-level BQ76952 emulator behind a machine.I2C-like object.

It answers the same transactions the real chip does (see
firmware/drivers/bq76952.py for the protocol notes): a 128-byte direct-command
register file rebuilt from the measurement source on every read, the
0x3E/0x3F subcommand window with its 32-byte buffer and 0x60/0x61
checksum/length, data memory writable only in CONFIG_UPDATE mode, optional
CRC-8 on every byte (a bad CRC from the host is NACKed, i.e. OSError), FET
drivers under host and protection control, CB_ACTIVE_CELLS, and the hardware
protections COV/CUV/OCC/OCD1/SCD evaluated on every transaction from the
configured thresholds.

Timing (the chip takes its time; ``clock`` is the injected microsecond clock
the driver's waits advance, tools/sim/vclock.UsClock by default):
  SET_CFGUPDATE   CONFIG_UPDATE (Battery Status bit 0, data-memory writes)
                  starts T_ENTER_US = 2 ms after the command (the time
                  LibreSolar takes from TI's data-sheet command table; the
                  TRM tells the host to wait for the flag)
  EXIT_CFGUPDATE  the new settings apply and the flag clears T_EXIT_US = 1 ms
                  later
  writes          a data-memory write, a subcommand with data or a
                  command-only subcommand keeps the subcommand interface busy
                  for T_WRITE_US = 200 us (LibreSolar's measured wait)
  reads           a subcommand / data-memory read fills the buffer
                  T_READ_US = 250 us after the command (model value: TI gives
                  per-command times; 0x3E/0x3F read 0xFF until then)
While busy, writes to 0x3E..0x61 are dropped (counted in ``dropped``): the
worst case of what LibreSolar observed without the waits.

Chip behaviour the references describe and a driver must cope with:
  ALL_FETS_OFF    latches every FET off until ALL_FETS_ON (0x0096);
                  FET_CONTROL alone does not lift it (``all_off``)
  Cell Balance Max Cells (0x933A, default 1)  a CB_ACTIVE_CELLS mask with
                  more cells is refused: balancing stays off and reads 0
                  (``cb_rejected``)
  Mfg Status Init (0x9343)  copied to Manufacturing Status only at reset
                  (``reset()``), from OTP (``program_otp()``) if programmed;
                  a RAM write changes nothing at run time

The measurement source is any object with ``cell_mv(i)``, ``current_ma()``,
``temp_dc(k)`` (k 0 die, 1..3 TS1..TS3) and optionally ``set_balance(list)``;
``StaticSource`` is a settable one for tests, ``PackSource`` adapts
tools/sim/pack.Pack.

Fault injection (all counters decrement per transaction):
  nack          next k transactions raise OSError(EIO) (NACK)
  dead          every transaction raises OSError(ENODEV) (chip gone)
  corrupt       next k read transactions return a flipped bit (after the CRC
                was computed, so CRC mode detects it; without CRC it is silent)
  garbage       next k read transactions return 0xFF filler
  stuck         dict {register: int16} overriding direct-command words
  busy          next k register reads see 0x3E/0x3F = 0xFF (subcommand
                still being processed)
  drop_dm       {address: k} the next k data-memory writes to that address
                are lost (a write the chip never applied)
  trip_scd()    latch a hardware short-circuit trip now
  open_tap(t)   the sense wire of cell tap t (0 = below cell 1, n = above
                cell n) comes off: its VC pin (with the pins shorted to it
                for fewer cells) keeps the voltage its filter capacitors held
                (SLUUBY2B, Cell Open Wire: "the voltage at the cell input pin
                ... may persist for some time on the board-level capacitor,
                leading to incorrect voltage readings"), so the two cells
                beside it read a plausible pair whatever the cells do.  Only
                the chip's cell open-wire check (Settings:Cell Open-Wire:Check
                Time 0x9314, s; 0 = off, our model's default) drains it: once
                per Check Time, 55 uA for a 3 ms measurement from each pin to
                VSS, ``ow_step_mv`` (825 mV on 200 nF of pin capacitance) per
                check, down to 500 mV below the tap beneath (the body diode
                of the bleed FET between the pins).  The cell below then reads
                low, then negative; the cell above high (COV / CUV trip like
                any cell).  The stack voltage (0x34) stays the true one.
                ``close_tap(t)`` puts the wire back.
Everything on the wire is appended to ``log`` as (op, reg, bytes) when
``log`` is a list.
"""
import struct

try:  # flat path (driver tests, also under MicroPython) or the simulator package
    from vclock import UsClock
except ImportError:
    from tools.sim.vclock import UsClock

ADDR = 0x08
T_ENTER_US = 2000
T_EXIT_US = 1000
T_WRITE_US = 200
T_READ_US = 250

_DM_DEFAULTS = (
    # addr, format, value (TRM defaults for what the driver touches)
    (0x9180, "<h", 12410),        # cell 1 gain (example in the TRM)
    (0x91A8, "<f", 7.4768),       # CC Gain default (not verified; the TRM formula gives 7.5684 at 1 mOhm)
    (0x91AC, "<f", 2230042.0),    # Capacity Gain
    (0x9239, "<B", 0x00),         # Comm Type
    (0x9261, "<B", 0x88),         # Enabled Protections A default: SCD + COV (TI E2E 1004250)
    (0x9275, "<b", 50),           # CUV threshold
    (0x9276, "<H", 74),
    (0x9278, "<b", 86),           # COV threshold
    (0x9279, "<H", 74),
    (0x9280, "<b", 2),            # OCC
    (0x9281, "<B", 4),
    (0x9282, "<b", 4),            # OCD1
    (0x9283, "<B", 1),
    (0x9286, "<B", 0),            # SCD 10 mV
    (0x9287, "<B", 2),
    (0x9294, "<B", 5),            # SCD recovery time (s)
    (0x9303, "<B", 0x05),         # DA Configuration
    (0x9304, "<H", 0x0000),       # Vcell Mode (0 = all 16)
    (0x9308, "<B", 0x0D),         # FET Options
    (0x9314, "<B", 0),            # Cell Open-Wire Check Time (s; 0 = off; default not confirmed)
    (0x933A, "<B", 1),            # Cell Balance Max Cells (default 1)
    (0x9343, "<H", 0x0000),       # Mfg Status Init
)
SCD_MV = (10, 20, 40, 60, 80, 100, 125, 150, 175, 200, 250, 300, 350, 400, 450, 500)


def crc8(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class StaticSource:
    def __init__(self, cells_mv, current_ma=0, temps_dc=(250, 250, 250, 250)):
        self.cells = list(cells_mv)
        self.current = current_ma
        self.temps = list(temps_dc)
        self.balance = []

    def cell_mv(self, i):
        return self.cells[i] if i < len(self.cells) else 0  # shorted input

    def current_ma(self):
        return self.current

    def temp_dc(self, k):
        return self.temps[k] if k < len(self.temps) else 250

    def set_balance(self, flags):
        self.balance = list(flags)


class PackSource:
    """Cells first..first+n of a tools/sim/pack.Pack."""

    def __init__(self, pack, first=0, n=None):
        self.pack = pack
        self.first = first
        self.n = pack.n - first if n is None else n

    def cell_mv(self, i):
        if i >= self.n:
            return 0
        c = self.pack.cells[self.first + i]
        if getattr(c, "open_wire", False):
            return 0
        return int(round(c.voltage(self.pack.current_a) * 1000.0))

    def current_ma(self):
        return int(round(self.pack.current_a * 1000.0))

    def temp_dc(self, k):
        t = self.pack.balance_temp_c if k == 0 else self.pack.cell_temp_c
        return int(round(t * 10.0))

    def set_balance(self, flags):
        cells = self.pack.cells
        for i in range(self.n):
            on = i < len(flags) and flags[i]
            cells[self.first + i].bleed_a = self.pack.balance_ma / 1000.0 if on else 0.0


class EmuBQ76952:
    def __init__(self, source, addr=ADDR, crc=False, shunt_uohm=1000, clock=None):
        self.source = source
        self.addr = addr
        self.shunt_uohm = shunt_uohm  # the board's real shunt, for SCD/OCD
        self.clock = clock if clock is not None else UsClock()
        self.otp = {}               # data memory programmed into OTP
        self.crc = crc
        self.dm = {}
        self.reset()
        self.bad_checksums = 0
        self.nack = 0
        self.dead = False
        self.corrupt = 0
        self.garbage = 0
        self.stuck = {}
        self.drop_dm = {}
        self.dropped = 0            # writes lost because the chip was busy
        self.cb_rejected = 0
        self.log = None
        self.transactions = 0
        self.scd_ms = 0
        self.busy = 0
        # Physical wiring (channel mask the cells are on, e.g. TI's wiring for
        # fewer than 16 cells: VC1.. and the top cell on VC16).  None: the
        # cells sit where the chip's VCell Mode says (a correctly set-up pack).
        self.wiring = None
        # Open sense wires: {tap: voltage its floating pin holds (mV)}.
        self.open_taps = {}
        self.ow_step_mv = 825       # 55 uA x 3 ms / 200 nF per open-wire check
        self._ow_ms = 0

    def reset(self):
        """Power-on / RESET: data memory from the defaults and OTP,
        Manufacturing Status from Mfg Status Init, host FET state cleared."""
        self.dm = {}
        for a, fmt, v in _DM_DEFAULTS:
            self._dm_put(a, struct.pack(fmt, v))
        if self.crc:
            self._dm_put(0x9239, b"\x11")
        for a in self.otp:
            self.dm[a] = self.otp[a]
        mfg = self.dm_get(0x9343, "<H")
        self.fet_en = bool(mfg & 0x10)
        self.pf_en = bool(mfg & 0x40)
        self.cfgupdate = False
        # Battery Status POR (bit 3): set at power-on / reset, cleared by
        # EXIT_CFGUPDATE (SLUAA11B command table).
        self.por = True
        self.sleep_enabled = True
        self.shutdown = False
        self.host_off = 0          # FET_CONTROL bits: DSG, PDSG, CHG, PCHG
        self.all_off = False       # ALL_FETS_OFF latch
        self.cb_mask = 0
        self.safety = bytearray(6)  # alert A, status A, alert B, status B, ...
        self.subcode = 0
        self.buf = bytearray(32)
        self.buf_len = 0
        self.buf_cks = 0
        self.pending = bytearray(34)  # bytes written from 0x3E on
        self.pending_n = 0
        self.busy_until = 0
        self._due = []             # [(time_us, action)] the chip finishes later

    def program_otp(self):
        """OTP programming from RAM (done on a production line)."""
        self.otp = dict(self.dm)

    @property
    def mfg_status(self):
        return (0x10 if self.fet_en else 0) | (0x40 if self.pf_en else 0)

    # ---- time ----------------------------------------------------------------
    def _tick(self):
        """Finish what the chip has been processing (in time order)."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            self._due.pop(0)[1]()

    def _later(self, us, action):
        t = self.clock() + us
        self._due.append((t, action))
        self._due.sort(key=lambda d: d[0])
        if t > self.busy_until:
            self.busy_until = t

    def _busy_for(self, us):
        t = self.clock() + us
        if t > self.busy_until:
            self.busy_until = t

    @property
    def is_busy(self):
        return self.clock() < self.busy_until

    # ---- data memory -----------------------------------------------------------
    def _dm_put(self, addr, data):
        for i in range(len(data)):
            self.dm[addr + i] = data[i]

    def dm_get(self, addr, fmt):
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, bytes(self.dm.get(addr + i, 0) for i in range(n)))[0]

    # ---- state ----------------------------------------------------------------
    def vcell_channels(self):
        m = self.dm_get(0x9304, "<H") or 0xFFFF
        return [ch for ch in range(16) if m & (1 << ch)]

    def user_amps_ma(self):
        return (0.1, 1, 10, 100)[self.dm_get(0x9303, "<B") & 3]

    def wired_channels(self):
        if self.wiring is None:
            return self.vcell_channels()
        return [ch for ch in range(16) if self.wiring & (1 << ch)]

    def _true_channel_mv(self):
        """Each input pair's voltage with every sense wire on: a cell where
        one is wired, 0 V on inputs tied together."""
        v = [0] * 16
        for k, ch in enumerate(self.wired_channels()):
            v[ch] = self.source.cell_mv(k)
        return v

    def _tap_pins(self, t):
        """VC pins (0..16) on cell tap t: the pin above cell t and those
        tied to it up to the pin below cell t + 1."""
        w = self.wired_channels()
        lo = w[t - 1] + 1 if t > 0 else 0
        hi = w[t] if t < len(w) else 16
        return range(lo, hi + 1)

    @staticmethod
    def _nodes(chan):
        node = [0] * 17
        for j in range(16):
            node[j + 1] = node[j] + chan[j]
        return node

    def _channel_mv(self):
        """What the chip measures on each input pair: the true voltages, but
        a floating pin (an open tap) at the voltage it holds."""
        v = self._true_channel_mv()
        if not self.open_taps:
            return v
        node = self._nodes(v)
        for t, held in self.open_taps.items():
            for pin in self._tap_pins(t):
                node[pin] = held
        return [node[j + 1] - node[j] for j in range(16)]

    def open_tap(self, t, held_mv=None):
        """The sense wire of tap t comes off; its pin holds ``held_mv`` (by
        default the tap's voltage at that moment)."""
        if held_mv is None:
            held_mv = self._nodes(self._true_channel_mv())[self._tap_pins(t)[0]]
        self.open_taps[t] = held_mv

    def close_tap(self, t):
        self.open_taps.pop(t, None)

    def _open_wire_check(self, ms):
        """The chip's cell open-wire current: every Check Time it drains each
        floating pin by ow_step_mv (not in CONFIG_UPDATE)."""
        ct = self.dm_get(0x9314, "<B")
        if not self.open_taps or ct == 0 or self.cfgupdate:
            self._ow_ms = 0
            return
        self._ow_ms += ms
        node = self._nodes(self._true_channel_mv())
        while self._ow_ms >= ct * 1000:
            self._ow_ms -= ct * 1000
            for t in self.open_taps:
                floor = (node[self._tap_pins(t - 1)[-1]] if t > 0 else 0) - 500
                self.open_taps[t] = max(floor, self.open_taps[t] - self.ow_step_mv)

    def _fets_allowed(self):
        return self.fet_en and not self.shutdown and not self.cfgupdate and not self.all_off

    @property
    def chg_fet(self):
        return (self._fets_allowed() and not (self.host_off & 0x04)
                and not (self.safety[1] & 0x98))

    @property
    def dsg_fet(self):
        return (self._fets_allowed() and not (self.host_off & 0x01)
                and not (self.safety[1] & 0xE4))

    def trip_scd(self):
        self.safety[0] |= 0x80
        self.safety[1] |= 0x80

    def _protect(self):
        """Hardware protections, evaluated on every bus transaction (the real
        chip runs them continuously; our host only sees them at bus speed).
        Simplified: no trip delays; COV/CUV recover with the TRM's default
        2-step hysteresis, OCC/OCD1 when the current is back below the
        threshold, SCD only after the recovery time (``advance``) or the
        host's recover subcommand.  Paused in CONFIG_UPDATE (TRM: the
        device stops measurements and protection monitoring)."""
        if self.cfgupdate:
            return
        en = self.dm_get(0x9261, "<B")
        st = self.safety
        chan = self._channel_mv()
        mv = [chan[ch] for ch in self.vcell_channels()]
        i_ma = self.source.current_ma()
        v_shunt_uv = i_ma * self.shunt_uohm // 1000  # uV across the shunt
        cov = self.dm_get(0x9278, "<b") * 506 // 10
        cuv = self.dm_get(0x9275, "<b") * 506 // 10
        hyst = 2 * 506 // 10
        a = st[1]
        if en & 0x08 and mv and max(mv) >= cov:
            a |= 0x08
        elif not (en & 0x08) or (mv and max(mv) < cov - hyst):
            a &= ~0x08
        if en & 0x04 and mv and min(mv) <= cuv:
            a |= 0x04
        elif not (en & 0x04) or (mv and min(mv) > cuv + hyst):
            a &= ~0x04
        if en & 0x10 and v_shunt_uv >= self.dm_get(0x9280, "<b") * 2000:
            a |= 0x10
        else:
            a &= ~0x10
        if en & 0x20 and -v_shunt_uv >= self.dm_get(0x9282, "<b") * 2000:
            a |= 0x20
        else:
            a &= ~0x20
        if en & 0x80 and -v_shunt_uv >= SCD_MV[self.dm_get(0x9286, "<B") & 15] * 1000:
            a |= 0x80
            self.scd_ms = 0
        st[1] = a & 0xFF
        st[0] = st[1]

    def advance(self, ms):
        """Let simulated time pass: SCD recovers after Protections:SCD:
        Recovery Time (0x9294, s) once the short is gone; the cell
        open-wire check drains a floating pin (``open_tap``)."""
        self._open_wire_check(ms)
        self._protect()
        if self.safety[1] & 0x80:
            self.scd_ms += ms
            if self.scd_ms >= self.dm_get(0x9294, "<B") * 1000:
                self.safety[1] &= 0x7F
                self.safety[0] = self.safety[1]

    def _battery_status(self):
        v = 0
        if self.cfgupdate:
            v |= 0x0001
        if self.por:
            v |= 0x0008
        if self.sleep_enabled:
            v |= 0x0004
        if self.safety[1] or self.safety[3] or self.safety[5]:
            v |= 0x0800
        return v

    def _regs(self):
        r = bytearray(128)

        def put(reg, val):
            val = self.stuck.get(reg, val)
            struct.pack_into("<h", r, reg, max(-32768, min(32767, int(val))))

        r[0x02:0x08] = self.safety
        put(0x12, self._battery_status())
        ch = self._channel_mv()
        for k in range(16):
            put(0x14 + 2 * k, ch[k])
        stack = sum(self._true_channel_mv())   # measured on its own pin
        put(0x34, stack // 10)
        put(0x36, stack // 10 if self.dsg_fet or self.chg_fet else 0)
        put(0x38, stack // 10 if self.dsg_fet else 0)
        put(0x3A, self.source.current_ma() / self.user_amps_ma())
        if self.busy > 0 or self.is_busy:
            if self.busy > 0:
                self.busy -= 1  # still processing: 0x3E/0x3F read 0xFF
            r[0x3E] = r[0x3F] = 0xFF
        else:
            r[0x3E] = self.subcode & 0xFF
            r[0x3F] = self.subcode >> 8
        r[0x40:0x60] = self.buf
        r[0x60] = self.buf_cks
        r[0x61] = self.buf_len
        put(0x68, self.source.temp_dc(0) + 2731)
        for k in range(3):
            put(0x70 + 2 * k, self.source.temp_dc(1 + k) + 2731)
        r[0x7F] = ((1 if self.chg_fet else 0) | (4 if self.dsg_fet else 0))
        return r

    # ---- subcommands -----------------------------------------------------------
    def _set_buffer(self, code, data):
        self.subcode = code
        n = len(data)
        self.buf[:] = bytes(32)
        self.buf[0:n] = data
        self.buf_len = n + 4
        s = (code & 0xFF) + (code >> 8) + sum(data)
        self.buf_cks = (~s) & 0xFF

    def _subcommand(self, code):
        """Address written to 0x3E/0x3F: run command-only subcommands and fill
        the buffer for readable ones (after the chip's processing time)."""
        if 0x9180 <= code < 0x9400:
            self._later(T_READ_US, lambda: self._set_buffer(
                code, bytes(self.dm.get(code + i, 0) for i in range(32))))
            return
        if code == 0x0001:
            self._later(T_READ_US, lambda: self._set_buffer(code, struct.pack("<H", 0x7695)))
            return
        if code == 0x0057:
            self._later(T_READ_US, lambda: self._set_buffer(code, struct.pack("<H", self.mfg_status)))
            return
        if code == 0x0083:
            self._later(T_READ_US, lambda: self._set_buffer(code, struct.pack("<H", self.cb_mask)))
            return
        if code == 0x0090:
            def enter():
                self.cfgupdate = True
                self._set_buffer(code, b"")
            self._later(T_ENTER_US, enter)
            return
        if code == 0x0092:
            def leave():
                self.cfgupdate = False
                self.por = False
                self._set_buffer(code, b"")
            self._later(T_EXIT_US, leave)
            return
        self._set_buffer(code, b"")
        self._busy_for(T_WRITE_US)
        if code == 0x0022:
            self.fet_en = not self.fet_en
        elif code == 0x0024:
            self.pf_en = not self.pf_en
        elif code == 0x0012:
            self.reset()
        elif code == 0x0095:
            self.all_off = True
        elif code == 0x0096:
            self.all_off = False
        elif code == 0x0093:
            self.host_off |= 0x03
        elif code == 0x0094:
            self.host_off |= 0x0C
        elif code == 0x0099:
            self.sleep_enabled = True
        elif code == 0x009A:
            self.sleep_enabled = False
        elif code == 0x0010:
            self.shutdown = True
        elif code in (0x009B, 0x009C):
            # Recovery only sticks if the condition is gone.
            self.safety[1] &= ~(0x80 | 0x20 | 0x40) & 0xFF
            self.safety[0] = self.safety[1]
            self.safety[5] &= ~0x60 & 0xFF

    def _subcommand_data(self, code, data):
        """Checksum and length arrived for a subcommand/data-memory write."""
        self._set_buffer(code, b"")
        self._busy_for(T_WRITE_US)
        if 0x9180 <= code < 0x9400:
            k = self.drop_dm.get(code, 0)
            if k > 0:
                self.drop_dm[code] = k - 1
                return
            if self.cfgupdate:
                self._dm_put(code, data)
        elif code == 0x0083:
            mask = data[0] | (data[1] << 8) if len(data) >= 2 else data[0]
            n = 0
            for ch in range(16):
                if mask & (1 << ch):
                    n += 1
            if n > self.dm_get(0x933A, "<B"):
                self.cb_rejected += 1
                mask = 0
            self.cb_mask = mask
            if hasattr(self.source, "set_balance"):
                chans = self.wired_channels()
                self.source.set_balance([1 if self.cb_mask & (1 << ch) else 0 for ch in chans])
        elif code == 0x0097:
            self.host_off = data[0] & 0x0F

    # ---- the bus ------------------------------------------------------------------
    def _begin(self, addr):
        self.transactions += 1
        if self.dead or addr != self.addr:
            raise OSError(19)  # ENODEV: no ACK to the address
        if self.nack > 0:
            self.nack -= 1
            raise OSError(5)
        self._tick()

    def _write_bytes(self, reg, data):
        """Apply a register write of plain (CRC-stripped) bytes."""
        if self.is_busy and reg <= 0x61 and reg + len(data) > 0x3E:
            self.dropped += 1  # the chip is still processing: write lost
            return
        for i in range(len(data)):
            a = reg + i
            b = data[i]
            if a in (0x3E, 0x3F) or 0x40 <= a < 0x60:
                if a == 0x3E:
                    self.pending_n = 0
                idx = a - 0x3E
                if 0 <= idx < len(self.pending):
                    self.pending[idx] = b
                    self.pending_n = max(self.pending_n, idx + 1)
            elif a == 0x60:
                self._cks_in = b
            elif a == 0x61:
                self._check_and_run(getattr(self, "_cks_in", -1), b)
        if reg <= 0x3F < reg + len(data) and self.pending_n == 2:
            self._subcommand(self.pending[0] | (self.pending[1] << 8))

    def _check_and_run(self, cks, ln):
        code = self.pending[0] | (self.pending[1] << 8)
        data = bytes(self.pending[2:ln - 2]) if ln >= 4 else b""
        s = (code & 0xFF) + (code >> 8) + sum(data)
        if ln < 4 or ln - 4 > self.pending_n - 2 or cks != (~s) & 0xFF:
            self.bad_checksums += 1
            return
        self._subcommand_data(code, data)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._begin(addr)
        buf = bytes(buf)
        if self.log is not None:
            self.log.append(("w", memaddr, buf))
        if self.crc:
            if len(buf) % 2:
                raise OSError(5)
            data = bytearray()
            crc = crc8((addr << 1, memaddr))
            for i in range(0, len(buf), 2):
                if crc8((buf[i],), crc) != buf[i + 1]:
                    raise OSError(5)  # the chip NACKs a bad CRC
                data.append(buf[i])
                crc = 0
        else:
            data = buf
        self._write_bytes(memaddr, data)
        self._protect()

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._begin(addr)
        self._protect()
        regs = self._regs()
        n = len(buf) // 2 if self.crc else len(buf)
        out = bytearray()
        crc = crc8((addr << 1, memaddr, (addr << 1) | 1))
        for i in range(n):
            a = memaddr + i
            d = regs[a] if a < 128 else 0xFF
            out.append(d)
            if self.crc:
                out.append(crc8((d,), crc))
                crc = 0
        if self.garbage > 0:
            self.garbage -= 1
            out = bytearray(b"\xff" * len(out))
        elif self.corrupt > 0 and len(out):
            self.corrupt -= 1
            out[0] ^= 0x01
        buf[:] = out
        if self.log is not None:
            self.log.append(("r", memaddr, bytes(out)))

    # Plain writeto/readfrom_into: a write sets the register pointer.
    def writeto(self, addr, buf, stop=True):
        buf = bytes(buf)
        if len(buf) > 1:
            self.writeto_mem(addr, buf[0], buf[1:])
        else:
            self._begin(addr)
        self._ptr = buf[0] if buf else 0
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        self.readfrom_mem_into(addr, getattr(self, "_ptr", 0), buf)

    def scan(self):
        return [] if self.dead else [self.addr]
