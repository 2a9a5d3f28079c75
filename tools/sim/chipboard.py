"""A simulated board built from the REAL drivers talking to chip emulators.

    pack model -> EmuBQ76952 (I2C 0x08, CRC on)  <- drivers.bq76952.BQ76952
               -> EmuINA228  (I2C 0x40)          <- drivers.ina228.INA228
               -> NTC dividers on emulated ADCs   <- drivers.ntc.Ntc
    relays / buzzer / key on simulated pins      <- drivers.gpio
    all of it behind drivers.hwboard.HwBoard: the board interface the core uses.

The two I2C chips share one simulated bus (``SimI2C``), so a NACK burst or
a stuck bus hits both, as on the real board.  Readings carry the same
seeded noise as FakeBoard (cells, current) plus the chips' own quantisation;
NTC codes are 12-bit like the RP2040 ADC.

Fault-injection knobs, named as on FakeBoard:
  ntc_fault[i]       None / "open" / "short"
  temp_override[i]   degC forced on NTC i (None = pack temperature)
  afe_dead           the BQ76952 stops answering (ENODEV)
  nack               the next k I2C transactions are NACKed (any device);
                     ``nack_forever = True`` keeps the bus NACKing
  afe_trip           setting it true latches a hardware short-circuit trip
  current_gain, current_offset_ma   shunt errors
  key_on             ON/OFF switch position
  top_dead           the top BQ76952 of a stacked board stops answering
Up to 16 cells: one BQ76952.  17-32 cells: the stacked single board
(boards/pico32.py): two BQ76952 behind drivers.afe_stack.AfeStack, the
bottom one on the shared bus with the INA228 and the shunt, the top one on
its own (isolated) bus, cells split by ``afe_stack.split``; the top chip's
sense inputs see no current (SRP/SRN shorted on that level).
"""
import random

from bms.contactors import RELAY_NAMES
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER
from drivers.afe_stack import AfeStack, split
from drivers.bq76952 import BQ76952
from drivers.gpio import Buzzer, Key, Relay
from drivers.hwboard import HwBoard
from drivers.ina228 import INA228
from drivers.ntc import Beta, Ntc, NtcTable
from tools.sim.emu_bq76952 import EmuBQ76952, PackSource
from tools.sim.emu_ina228 import EmuINA228, PackShuntSource
from tools.sim.vclock import UsClock

TEMP_ROLES = (ROLE_POWER, ROLE_BALANCE, ROLE_CELL, ROLE_CELL)
SHUNT_UOHM = 100
NTC_R25 = 10000.0
NTC_BETA = 3950.0
NTC_SERIES = 10000.0


class SimI2C:
    """machine.I2C stand-in routing by address to the chip emulators."""

    def __init__(self, devices):
        self.devices = {d.addr: d for d in devices}
        self.nack = 0
        self.nack_forever = False
        self.transactions = 0
        self.nacked = 0

    def _dev(self, addr):
        self.transactions += 1
        if self.nack_forever or self.nack > 0:
            if self.nack > 0:
                self.nack -= 1
            self.nacked += 1
            raise OSError(5)
        d = self.devices.get(addr)
        if d is None:
            raise OSError(19)
        return d

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        self._dev(addr).readfrom_mem_into(addr, reg, buf)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).writeto_mem(addr, reg, buf)

    def scan(self):
        return sorted(self.devices)


class SimPin:
    def __init__(self, v=0):
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        return None

    def on(self):
        self.v = 1

    def off(self):
        self.v = 0


class _NoisyCells(PackSource):
    def __init__(self, pack, rng, noise_mv, first=0, n=None):
        PackSource.__init__(self, pack, first, n)
        self.rng = rng
        self.noise_mv = noise_mv

    def cell_mv(self, i):
        v = PackSource.cell_mv(self, i)
        if v and self.noise_mv:
            v += int(round(self.rng.uniform(-self.noise_mv, self.noise_mv)))
        return max(0, v)


class _Shunt(PackShuntSource):
    def __init__(self, board):
        PackShuntSource.__init__(self, board.pack, bus="load")
        self.board = board

    def current_ma(self):
        b = self.board
        i = self.pack.current_a * 1000.0 * b.current_gain + b.current_offset_ma
        if b.noise_ma:
            i += b.rng.uniform(-b.noise_ma, b.noise_ma)
        return i


class SimAdc:
    """ADC pin behind an NTC divider (low side), read_u16 with 12-bit steps."""

    def __init__(self, board, idx, table):
        self.board = board
        self.idx = idx
        self.table = table

    def read_u16(self):
        b = self.board
        f = b.ntc_fault[self.idx]
        if f == "open":
            return 0xFFF0
        if f == "short":
            return 0
        t = b.temp_override[self.idx]
        if t is None:
            p = b.pack
            t = {ROLE_POWER: p.power_temp_c, ROLE_BALANCE: p.balance_temp_c,
                 ROLE_CELL: p.cell_temp_c}[TEMP_ROLES[self.idx]]
        code = self.table.code_at(int(round(t * 10.0)))
        code += b.rng.uniform(-8.0, 8.0)
        return max(0, min(0xFFF0, int(code)) & 0xFFF0)


class ChipBoard:
    def __init__(self, pack, seed=2, max_cells=None, noise_mv=1, noise_ma=20, params=None,
                 crc=True):
        if pack.n > 32:
            raise ValueError("ChipBoard has one or two BQ76952: at most 32 cells")
        self.pack = pack
        self.rng = random.Random(seed)
        self.noise_ma = noise_ma
        self.current_gain = 1.0
        self.current_offset_ma = 0
        self.ntc_fault = [None] * len(TEMP_ROLES)
        self.temp_override = [None] * len(TEMP_ROLES)
        self.key_on = True
        self.buzzer_changes = 0
        # Chips and the bus.  The drivers wait (data-sheet times) on a
        # microsecond clock that follows the pack's simulated time; the chip
        # emulators keep time by the same clock.
        self.clock = UsClock(base=lambda: int(pack.time_s * 1000000.0))
        wait = self.clock.sleep_us
        stacked = pack.n > 16
        n0 = split(pack.n, (16, 16))[0] if stacked else pack.n
        self.emu_afe = EmuBQ76952(_NoisyCells(pack, self.rng, noise_mv, 0, n0), crc=crc,
                                  shunt_uohm=SHUNT_UOHM, clock=self.clock)
        self.emu_shunt = EmuINA228(_Shunt(self), shunt_uohm=SHUNT_UOHM)
        self.i2c = SimI2C([self.emu_afe, self.emu_shunt])
        self.emu_top = self.i2c_top = None
        # Drivers, as a board file would build them.
        self.afe = BQ76952(self.i2c, crc=crc, cells=n0, wait_us=wait)
        if stacked:
            top_src = _NoisyCells(pack, self.rng, noise_mv, n0, pack.n - n0)
            top_src.current_ma = lambda: 0   # SRP/SRN shorted on the top level
            self.emu_top = EmuBQ76952(top_src, crc=crc, shunt_uohm=SHUNT_UOHM, clock=self.clock)
            self.i2c_top = SimI2C([self.emu_top])
            self.afe = AfeStack([self.afe, BQ76952(self.i2c_top, crc=crc, cells=pack.n - n0,
                                                   wait_us=wait)])
        self.shunt = INA228(self.i2c, shunt_uohm=SHUNT_UOHM, max_current_ma=1600000)
        table = NtcTable(Beta(NTC_R25, NTC_BETA), r_series=NTC_SERIES)
        ntcs = [(Ntc(SimAdc(self, i, table), table), TEMP_ROLES[i])
                for i in range(len(TEMP_ROLES))]
        self.relay_pins = [SimPin(1) for _ in RELAY_NAMES]
        relays = [Relay(p, active_low=True) for p in self.relay_pins]
        self.buzzer_pin = SimPin()
        self.key_pin = SimPin()
        key = Key(self.key_pin, self._ticks_ms, _ticks_diff, active_low=True, debounce_ms=50)
        conf = {"cells": pack.n, "shunt_uohm": SHUNT_UOHM}
        self.hw = HwBoard(self.afe, self.shunt, ntcs, relays, Buzzer(self.buzzer_pin), key,
                          afe_conf=conf, pack_source="afe", load_source="shunt",
                          max_cells=max_cells or pack.n)
        if params is not None:   # the hardware backstop, as app.build does on a board
            from bms.backstop import Backstop
            self.hw.attach_backstop(Backstop(params))
        self.max_cells = self.hw.max_cells
        self.temp_roles = self.hw.temp_roles
        self.balance_no_adjacent = self.hw.balance_no_adjacent
        self.relays = bytearray(len(RELAY_NAMES))
        self.balance = bytearray(self.max_cells)
        self._t_adv = pack.time_s
        self._sync_key()

    # ---- time and pins ---------------------------------------------------------
    def _ticks_ms(self):
        return int(self.pack.time_s * 1000.0) & 0x3FFFFFFF

    def _sync_key(self):
        self.key_pin.v = 0 if self.key_on else 1  # active low switch

    def _advance(self):
        dt = self.pack.time_s - self._t_adv
        if dt > 0:
            self.emu_afe.advance(int(dt * 1000.0))
            if self.emu_top is not None:
                self.emu_top.advance(int(dt * 1000.0))
            self._t_adv = self.pack.time_s

    # ---- board interface (delegated to the real HwBoard) ---------------------------
    def read_current(self, m, now):
        self._advance()
        self.hw.read_current(m, now)

    def read_volts(self, m, now):
        self._advance()
        self.hw.read_volts(m, now)

    def read_cells(self, m, now):
        self.hw.read_cells(m, now)

    def read_temps(self, m, now):
        self.hw.read_temps(m, now)

    def set_relays(self, states):
        self.hw.set_relays(states)
        for i, p in enumerate(self.relay_pins):
            self.relays[i] = 1 if p.v == 0 else 0  # active low coils
        self.pack.relays = list(self.relays)

    def set_balance(self, flags):
        self.hw.set_balance(flags)
        for i in range(len(self.balance)):
            self.balance[i] = 1 if (i < len(flags) and flags[i]) else 0

    def set_buzzer(self, on):
        before = self.hw.buzzer.state
        self.hw.set_buzzer(on)
        if self.hw.buzzer.state != before:
            self.buzzer_changes += 1

    @property
    def buzzer(self):
        return self.buzzer_pin.v == 1

    def key(self):
        self._sync_key()
        return self.hw.key()

    def afe_fault(self):
        return self.hw.afe_fault()

    def charger_present(self):
        """Charge-port sense: a charger is connected to the charge path."""
        return self.pack.charger_a > 0

    def clear_afe_fault(self):
        self.hw.clear_afe_fault()

    # ---- fault-injection knobs ----------------------------------------------------
    @property
    def afe_dead(self):
        return self.emu_afe.dead

    @afe_dead.setter
    def afe_dead(self, v):
        self.emu_afe.dead = bool(v)

    @property
    def top_dead(self):
        return self.emu_top is not None and self.emu_top.dead

    @top_dead.setter
    def top_dead(self, v):
        self.emu_top.dead = bool(v)

    @property
    def nack(self):
        return self.i2c.nack

    @nack.setter
    def nack(self, k):
        self.i2c.nack = k

    @property
    def afe_trip(self):
        return self.hw.afe_fault()

    @afe_trip.setter
    def afe_trip(self, v):
        if v:
            self.emu_afe.trip_scd()


def _ticks_diff(a, b):
    return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000
