"""Byte-level Microchip MCP2515 emulator (datasheet DS20001801) on SPI.

``emu.spi`` (write / readinto / write_readinto / read) and ``emu.cs``
(value / on / off / call) behave like machine.SPI and machine.Pin; every
byte clocked while CS is low goes through the instruction decoder:

  RESET 0xC0, READ 0x03 a, WRITE 0x02 a, BIT MODIFY 0x05 a mask data,
  READ STATUS 0xA0, RX STATUS 0xB0, READ RX BUFFER 0x90|n<<2|m<<1 (clears
  RXnIF at CS high), LOAD TX BUFFER 0x40|abc, RTS 0x80|T2T1T0.

Register file of 128 bytes with CANSTAT/CANCTRL mirrored at every xE/xF,
configuration-mode-only registers (CNF, filters, masks) write-protected in
other modes, bit-modify only where the datasheet allows it.

CAN side: the node attaches to a ``tools.sim.canbus.VirtualCanBus``.  One TX
buffer is in flight at a time, chosen by TXP then buffer number; acceptance
filtering with RXM0 (RXF0-1 -> RXB0, rollover to RXB1 with BUKT) and RXM1
(RXF2-5 -> RXB1), EXIDE per filter, data-byte matching for standard frames,
RXM=11 receive-any; overflow sets RXnOVR; TEC/REC per the CAN fault
confinement rules (+8 on a transmit error, +1 on a receive error, -1 on
success, ACK errors do not push an error-passive node further), EFLG
warning / passive / bus-off flags, and automatic recovery from bus-off
after ``recovery_ticks`` idle bus steps (128 x 11 recessive bits on the
real chip).  Loopback mode receives its own frames without the bus.

Reset timing: after the RESET instruction the chip is held in reset by its
oscillator start-up timer for 128 OSC1 cycles (DS20001801 section 8.1,
``osc_hz``, 16 us at 8 MHz); SPI frames that start before that are ignored
(MISO reads 0xFF) and counted in ``ignored_frames``.  Time comes from
``clock`` (tools/sim/vclock.UsClock by default), the same clock the driver's
injected wait advances.

Fault injection: ``dead`` (MISO floats high: every read is 0xFF),
``corrupt_reads = k`` (flip a bit in the next k bytes read), and the bus's
``errors``.  ``spi_log`` (a list, or None) records every transaction as
(mosi bytes, miso bytes).
"""

try:  # flat path (driver tests, also under MicroPython) or the simulator package
    from emu_spi import CsPin, SpiPort
    from vclock import UsClock
except ImportError:
    from tools.sim.emu_spi import CsPin, SpiPort
    from tools.sim.vclock import UsClock


CANSTAT = 0x0E
CANCTRL = 0x0F
TEC = 0x1C
REC = 0x1D
CNF3 = 0x28
CNF2 = 0x29
CNF1 = 0x2A
CANINTE = 0x2B
CANINTF = 0x2C
EFLG = 0x2D
TXB = (0x30, 0x40, 0x50)
RXB = (0x60, 0x70)

MODE_NORMAL = 0
MODE_SLEEP = 1
MODE_LOOPBACK = 2
MODE_LISTEN = 3
MODE_CONFIG = 4

# Writable only in configuration mode.
_CONFIG_ONLY = set(list(range(0x00, 0x0C)) + list(range(0x10, 0x1C)) +
                   list(range(0x20, 0x28)) + [CNF3, CNF2, CNF1])
# Registers that honour BIT MODIFY's mask (others take the data byte whole).
_BIT_MODIFY = set([0x0C, 0x0D, CANCTRL, CNF3, CNF2, CNF1, CANINTE, CANINTF, EFLG,
                   0x30, 0x40, 0x50, 0x60, 0x70])
_READ_ONLY = set([CANSTAT, TEC, REC])


class EmuMCP2515:
    def __init__(self, bus=None, recovery_ticks=2, clock=None, osc_hz=8000000):
        self.clock = clock if clock is not None else UsClock()
        self.osc_hz = osc_hz
        self._reset_until = 0
        self._ignore = False
        self.ignored_frames = 0
        self.regs = bytearray(128)
        self.spi = SpiPort(self, 0x00)
        self.cs = CsPin(self)
        self.bus = None
        self.recovery_ticks = recovery_ticks
        self.dead = False
        self.corrupt_reads = 0
        self.spi_log = None
        self.tx_frames = 0
        self.rx_frames = 0
        self._active = False
        self._mosi = []
        self._miso = []
        self._inflight = None
        self._boff_ticks = 0
        self._reset()
        if bus is not None:
            bus.attach(self)

    # ---- chip state ----------------------------------------------------------
    def int_active(self):
        """The INT output (active low on the chip): an enabled flag is set."""
        return (self.regs[CANINTF] & self.regs[CANINTE]) != 0

    def _reset(self):
        r = self.regs
        for i in range(128):
            r[i] = 0
        r[CANCTRL] = 0x87
        r[CANSTAT] = 0x80
        self._inflight = None
        self._boff_ticks = 0

    @property
    def mode(self):
        return self.regs[CANSTAT] >> 5

    @property
    def bus_off(self):
        return bool(self.regs[EFLG] & 0x20)

    def _read_reg(self, a):
        a &= 0x7F
        if a & 0x0F == 0x0E:
            return self.regs[CANSTAT]
        if a & 0x0F == 0x0F:
            return self.regs[CANCTRL]
        return self.regs[a]

    def _write_reg(self, a, v, mask=0xFF):
        a &= 0x7F
        if a & 0x0F == 0x0F:
            a = CANCTRL
        if a in _READ_ONLY or a & 0x0F == 0x0E:
            return
        if a in _CONFIG_ONLY and self.mode != MODE_CONFIG:
            return
        old = self.regs[a]
        new = (old & ~mask & 0xFF) | (v & mask)
        if a in TXB:
            n = TXB.index(a)
            # ABTF, MLOA, TXERR are read-only status bits.
            new = (new & 0x0B) | (old & 0x70)
            self.regs[a] = new
            if old & 0x08 and not new & 0x08:
                self.regs[a] |= 0x40  # aborted
                if self._inflight == n:
                    self._inflight = None
            return
        if a == 0x60:  # RXM and BUKT writable; BUKT1 mirrors BUKT; FILHIT0 read-only
            new = (new & 0x64) | (0x02 if new & 0x04 else 0) | (old & 0x01)
        elif a == 0x70:  # RXM writable; FILHIT2:0 read-only
            new = (new & 0x60) | (old & 0x07)
        if a == EFLG:
            new = (old & 0x3F) | (new & 0xC0 & old)  # only RXnOVR, only clearable
        self.regs[a] = new
        if a == CANCTRL:
            self._canctrl(old, new)

    def _canctrl(self, old, new):
        reqop = new >> 5
        if reqop > 4:
            reqop = MODE_CONFIG
        self.regs[CANSTAT] = (self.regs[CANSTAT] & 0x1F) | (reqop << 5)
        if new & 0x10:  # ABAT: abort every pending transmission
            for n in range(3):
                if self.regs[TXB[n]] & 0x08:
                    self.regs[TXB[n]] = (self.regs[TXB[n]] & ~0x08 & 0xFF) | 0x40
            self._inflight = None
        if reqop == MODE_CONFIG:
            self._inflight = None

    # ---- SPI transaction decoder ---------------------------------------------
    def _begin(self):
        self._active = True
        self._ignore = self.clock() < self._reset_until
        if self._ignore:
            self.ignored_frames += 1
        self._n = 0
        self._instr = None
        self._addr = 0
        self._mask = 0
        self._rx_clear = None
        self._mosi = []
        self._miso = []

    def _end(self):
        if not self._active:
            return
        self._active = False
        if self.spi_log is not None:
            self.spi_log.append((bytes(self._mosi), bytes(self._miso)))
        if self._rx_clear is not None:
            self.regs[CANINTF] &= ~(1 << self._rx_clear) & 0xFF
        self._kick_tx()

    def _out(self, v):
        if self.dead:
            return 0xFF
        if self.corrupt_reads > 0:
            self.corrupt_reads -= 1
            return v ^ 0x10
        return v

    def _byte(self, b):
        if not self._active:
            return 0xFF  # CS high: MISO tri-stated
        if self._ignore:  # still held in reset: nothing decoded, MISO floats
            self._mosi.append(b)
            self._miso.append(0xFF)
            return 0xFF
        out = self._step(b) & 0xFF
        out = self._out(out)
        self._mosi.append(b)
        self._miso.append(out)
        return out

    def _status(self):
        f = self.regs[CANINTF]
        s = f & 0x03
        s |= 0x04 if self.regs[0x30] & 0x08 else 0
        s |= 0x08 if f & 0x04 else 0
        s |= 0x10 if self.regs[0x40] & 0x08 else 0
        s |= 0x20 if f & 0x08 else 0
        s |= 0x40 if self.regs[0x50] & 0x08 else 0
        s |= 0x80 if f & 0x10 else 0
        return s

    def _rx_status(self):
        f = self.regs[CANINTF] & 0x03
        s = f << 6
        if f:
            base = RXB[0] if f & 1 else RXB[1]
            sidl = self.regs[base + 2]
            ext = sidl & 0x08
            rtr = (self.regs[base + 5] & 0x40) if ext else (sidl & 0x10)
            s |= ((2 if ext else 0) | (1 if rtr else 0)) << 3
            if f & 1:
                s |= self.regs[0x60] & 0x01
            else:
                s |= self.regs[0x70] & 0x07
        return s

    def _step(self, b):
        n = self._n
        self._n += 1
        if n == 0:
            self._instr = b
            if b == 0xC0:
                self._reset()
                # Oscillator start-up timer: 128 OSC1 cycles in reset.
                self._reset_until = self.clock() + (128000000 + self.osc_hz - 1) // self.osc_hz
            elif b & 0xF8 == 0x80 and b != 0x80:
                for k in range(3):
                    if b & (1 << k):
                        self.regs[TXB[k]] |= 0x08
            elif b & 0xF9 == 0x90:
                k = (b >> 2) & 1
                self._addr = RXB[k] + (6 if b & 0x02 else 1)
                self._rx_clear = k
            elif b & 0xF8 == 0x40 and (b & 0x07) <= 5:
                k = (b >> 1) & 3
                self._addr = TXB[k] + (6 if b & 1 else 1)
            return 0xFF
        ins = self._instr
        if ins == 0x03:
            if n == 1:
                self._addr = b & 0x7F
                return 0xFF
            v = self._read_reg(self._addr)
            self._addr = (self._addr + 1) & 0x7F
            return v
        if ins == 0x02:
            if n == 1:
                self._addr = b & 0x7F
                return 0xFF
            self._write_reg(self._addr, b)
            self._addr = (self._addr + 1) & 0x7F
            return 0xFF
        if ins == 0x05:
            if n == 1:
                self._addr = b & 0x7F
            elif n == 2:
                self._mask = b
            elif n == 3:
                a = self._addr
                mask = self._mask if (a in _BIT_MODIFY or a & 0x0F == 0x0F) else 0xFF
                self._write_reg(a, b, mask)
            return 0xFF
        if ins == 0xA0:
            return self._status()
        if ins == 0xB0:
            return self._rx_status()
        if ins & 0xF9 == 0x90:
            v = self.regs[self._addr]
            self._addr += 1
            if self._addr > RXB[self._rx_clear] + 0x0D:
                self._addr = RXB[self._rx_clear] + 1  # wraps within the buffer
            return v
        if ins & 0xF8 == 0x40 and (ins & 0x07) <= 5:
            k = (ins >> 1) & 3
            if self._addr <= TXB[k] + 0x0D:
                self.regs[self._addr] = b
                self._addr += 1
            return 0xFF
        return 0xFF

    # ---- frames ----------------------------------------------------------------
    @staticmethod
    def encode_id(can_id, ext):
        if ext:
            sid = can_id >> 18
            return bytes([sid >> 3, ((sid & 7) << 5) | 0x08 | ((can_id >> 16) & 3),
                          (can_id >> 8) & 0xFF, can_id & 0xFF])
        return bytes([can_id >> 3, (can_id & 7) << 5, 0, 0])

    @staticmethod
    def decode_id(b):
        sid = (b[0] << 3) | (b[1] >> 5)
        if b[1] & 0x08:
            return (sid << 18) | ((b[1] & 3) << 16) | (b[2] << 8) | b[3], True
        return sid, False

    def _frame(self, k):
        base = TXB[k]
        r = self.regs
        can_id, ext = self.decode_id(r[base + 1:base + 5])
        dlc = r[base + 5] & 0x0F
        n = 8 if dlc > 8 else dlc
        return can_id, bytes(r[base + 6:base + 6 + n]), ext

    def _kick_tx(self):
        if self._inflight is not None or self.bus_off:
            return
        mode = self.mode
        if mode not in (MODE_NORMAL, MODE_LOOPBACK):
            return
        best = None
        for k in range(3):
            c = self.regs[TXB[k]]
            if c & 0x08:
                key = ((c & 0x03) << 2) | k  # TXP first, then the higher buffer
                if best is None or key > best[0]:
                    best = (key, k)
        if best is None:
            return
        k = best[1]
        can_id, data, ext = self._frame(k)
        if mode == MODE_LOOPBACK:
            self._inflight = k
            self._receive(can_id, data, ext)
            self.tx_done(True, count=False)
            return
        if self.bus is None:
            return
        self._inflight = k
        self.bus.transmit(self, can_id, data, ext)

    # ---- VirtualCanBus node hooks ---------------------------------------------
    def can_ack(self):
        return self.mode in (MODE_NORMAL,) and not self.bus_off

    def tx_done(self, acked, count=True):
        k = self._inflight
        if k is None:
            return
        self._inflight = None
        r = self.regs
        if acked:
            r[TXB[k]] &= ~0x18 & 0xFF
            r[CANINTF] |= 0x04 << k
            self.tx_frames += 1
            if count and r[TEC] > 0:
                r[TEC] -= 1
        else:
            # ACK error: +8, but an error-passive sender stays where it is.
            r[TXB[k]] |= 0x10
            r[CANINTF] |= 0x80
            if r[TEC] < 128:
                r[TEC] = min(255, r[TEC] + 8)
            if r[CANCTRL] & 0x08:  # one-shot mode: no retransmission
                r[TXB[k]] = (r[TXB[k]] & ~0x08 & 0xFF) | 0x40
        self._update_eflg()
        self._kick_tx()

    def tx_error(self):
        k = self._inflight
        self._inflight = None
        r = self.regs
        if k is not None:
            r[TXB[k]] |= 0x10
        r[CANINTF] |= 0x80
        tec = r[TEC] + 8
        if tec > 255:
            r[TEC] = 255
            r[EFLG] |= 0x20  # bus-off
            self._boff_ticks = 0
        else:
            r[TEC] = tec
        self._update_eflg()
        if k is not None and r[CANCTRL] & 0x08:
            r[TXB[k]] = (r[TXB[k]] & ~0x08 & 0xFF) | 0x40
        self._kick_tx()

    def rx_error(self):
        if self.mode not in (MODE_NORMAL, MODE_LISTEN) or self.bus_off:
            return
        r = self.regs
        if r[REC] < 255:
            r[REC] += 1
        r[CANINTF] |= 0x80
        self._update_eflg()

    def bus_tick(self):
        if self.bus_off:
            self._boff_ticks += 1
            if self._boff_ticks >= self.recovery_ticks:
                r = self.regs
                r[TEC] = 0
                r[REC] = 0
                r[EFLG] &= 0xC0
                r[EFLG] &= ~0x20 & 0xFF
                self._update_eflg()
                self._kick_tx()

    def _update_eflg(self):
        r = self.regs
        tec = r[TEC]
        rec = r[REC]
        f = r[EFLG] & 0xE0  # RX1OVR, RX0OVR, TXBO
        if not f & 0x20:
            if tec >= 128:
                f |= 0x10
            if rec >= 128:
                f |= 0x08
            if tec >= 96:
                f |= 0x04
            if rec >= 96:
                f |= 0x02
            if tec >= 96 or rec >= 96:
                f |= 0x01
        if f != r[EFLG]:
            r[CANINTF] |= 0x20  # ERRIF
        r[EFLG] = f

    def deliver(self, can_id, data, ext):
        if self.mode not in (MODE_NORMAL, MODE_LISTEN) or self.bus_off:
            return
        r = self.regs
        if r[REC] > 0:
            r[REC] = r[REC] - 1 if r[REC] <= 127 else 120
            self._update_eflg()
        self._receive(can_id, data, ext)

    def _match(self, fbase, mbase, can_id, data, ext):
        r = self.regs
        f = self.decode_id(r[fbase:fbase + 4])
        fext = bool(r[fbase + 1] & 0x08)
        if fext != bool(ext):
            return False
        m = r[mbase:mbase + 4]
        if ext:
            mask = (((m[0] << 3) | (m[1] >> 5)) << 18) | ((m[1] & 3) << 16) | (m[2] << 8) | m[3]
            return (can_id & mask) == (f[0] & mask)
        mask = (m[0] << 3) | (m[1] >> 5)
        fid = (r[fbase] << 3) | (r[fbase + 1] >> 5)
        if (can_id & mask) != (fid & mask):
            return False
        # Standard frames: EID15:8 / EID7:0 filter the first two data bytes.
        for i, (mb, fb) in enumerate(((m[2], r[fbase + 2]), (m[3], r[fbase + 3]))):
            if mb:
                d = data[i] if i < len(data) else 0
                if (d & mb) != (fb & mb):
                    return False
        return True

    def _receive(self, can_id, data, ext):
        r = self.regs
        flt = (0x00, 0x04, 0x08, 0x10, 0x14, 0x18)
        hit = None
        # RXB0 first (RXF0/1 with RXM0), then RXB1 (RXF2-5 with RXM1).
        if (r[0x60] >> 5) & 3 == 3:
            hit = 0
        else:
            for k in (0, 1):
                if self._match(flt[k], 0x20, can_id, data, ext):
                    hit = k
                    break
        target = None
        filhit = 0
        if hit is not None:
            if not r[CANINTF] & 0x01:
                target = 0
                filhit = hit
            elif r[0x60] & 0x04:  # BUKT rollover
                if not r[CANINTF] & 0x02:
                    target = 1
                    filhit = 6 + hit
                else:
                    r[EFLG] |= 0x80
                    r[CANINTF] |= 0x20
                    return
            else:
                r[EFLG] |= 0x40
                r[CANINTF] |= 0x20
                return
        else:
            if (r[0x70] >> 5) & 3 == 3:
                hit = 2
            else:
                for k in (2, 3, 4, 5):
                    if self._match(flt[k], 0x24, can_id, data, ext):
                        hit = k
                        break
            if hit is None:
                return
            if r[CANINTF] & 0x02:
                r[EFLG] |= 0x80
                r[CANINTF] |= 0x20
                return
            target = 1
            filhit = hit
        base = RXB[target]
        idb = self.encode_id(can_id, ext)
        for i in range(4):
            r[base + 1 + i] = idb[i]
        r[base + 5] = len(data) & 0x0F
        for i in range(8):
            r[base + 6 + i] = data[i] if i < len(data) else 0
        if target == 0:
            r[0x60] = (r[0x60] & 0xFE) | (filhit & 1)
        else:
            r[0x70] = (r[0x70] & 0xF8) | (filhit & 7)
        r[CANINTF] |= 1 << target
        self.rx_frames += 1
