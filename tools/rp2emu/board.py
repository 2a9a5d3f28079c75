"""A BMS board on the emulated RP2040: the board image on one side, the pack
model and the byte-level chip emulators of tools/sim on the other, wired by
the board's own pin table (``boards/<name>.py`` ``PINS``).

    pack model -> EmuBQ76952 (I2C, CRC)   -> emulated I2C0 (pico32: +I2C1)
               -> EmuINA228               -> emulated I2C0
               -> NTC dividers            -> emulated ADC (GP26-28)
    relays, buzzer, LED                   <- emulated GPIO outputs
    key switch, INA228 ALERT              -> emulated GPIO inputs
    MCP2515 (SPI0, CS, INT)               <-> VirtualCanBus (optional)
    RS485 PC port (UART0 + DE)            <-> a pty (``Rs485Pty``)
    TTL display port (UART1)              <-> listeners / a pty
    USB-CDC REPL                          <-> ``repl`` / a pty (mpremote)

Time: ``run_ms`` advances in slices (``SLICE_MS``): the pack physics and
the chips' own timers move by one slice, then the chip runs to the end of
the slice.  Bus reads inside the slice see the pack as of its start, which
is finer than any task of the firmware (the fast task is 50 ms).
"""
import importlib
import os
import random

from bms.contactors import RELAY_NAMES
from bms.measurements import ROLE_BALANCE, ROLE_CELL, ROLE_POWER
from drivers.afe_stack import split
from drivers.ntc import Beta, NtcTable
from tools.rp2emu.chip import Rp2040
from tools.sim.chipboard import NTC_BETA, NTC_R25, NTC_SERIES, SHUNT_UOHM, _NoisyCells
from tools.sim.emu_bq76952 import EmuBQ76952
from tools.sim.emu_ina228 import EmuINA228, PackShuntSource
from tools.sim.canbus import SimCanNode, VirtualCanBus  # noqa: F401 (re-exported for rigs)
from tools.sim.emu_mcp2515 import EmuMCP2515
from tools.sim.ptylink import HostPty

SLICE_MS = 2
ROLE_NAMES = {"power": ROLE_POWER, "balance": ROLE_BALANCE, "cell": ROLE_CELL}


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


class _HostPty(HostPty):
    """A raw pty for a host client on one of the chip's ports."""

    def __init__(self, chip, symlink=None):
        HostPty.__init__(self, symlink)
        self.chip = chip


class Rs485Pty(_HostPty):
    """The PC port's transceiver and the USB-RS485 adapter on the host side.

    Bytes the chip sends reach the pty only while DE is high (a real
    transceiver does not drive the bus otherwise; ``lost_tx`` counts the
    ones that would have been cut off).  Bytes from the pty go onto the RX
    line at the UART's line rate; while DE is high the receiver is off
    (RE tied to DE) and they are lost (``lost_rx``).
    """

    def __init__(self, chip, uart, de_pin, symlink=None):
        _HostPty.__init__(self, chip, symlink)
        self.uart = uart
        self.de_pin = de_pin
        self.lost_tx = 0
        self.tx_log = []          # (t_ns, byte) of every byte on the wire
        self.rx_log = []
        chip.uart_listeners[uart].append(self._tx)

    def _tx(self, b, t):
        if self.chip.pins[self.de_pin] != 1:
            self.lost_tx += 1
            return
        self.tx_log.append((t, b))
        try:
            os.write(self.master, bytes((b,)))
        except OSError:
            pass

    def poll(self):
        """Move what the client wrote onto the RX line (call between slices)."""
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            t = self.chip.t_ns
            self.rx_log.extend((t, b) for b in data)
            self.chip.uart_send(self.uart, data)


class CdcPty(_HostPty):
    """The USB-CDC serial port (the REPL) as a pty, for mpremote or a terminal."""

    def poll(self):
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            data = b""
        if data:
            self.chip.cdc_send(data)
        if self.chip.cdc_out:
            try:
                n = os.write(self.master, bytes(self.chip.cdc_out))
                del self.chip.cdc_out[:n]
            except (BlockingIOError, OSError):
                if len(self.chip.cdc_out) > 65536:   # nobody reads: drop, as a closed port does
                    self.chip.cdc_out.clear()


class EmuBoard:
    """One board file's hardware around an emulated RP2040 running its image."""

    def __init__(self, uf2, pack, board="pico", seed=2, noise_mv=1, noise_ma=20,
                 flash_file=None, can_bus=None, afe_crc=True, cells=None, physics=True,
                 module_addr=None):
        """``cells=(first, n)``: the slice of the pack a slave module's AFE
        measures; ``physics=False`` for every board but one on a shared pack
        (one of them moves the pack in time); ``module_addr``: a slave
        module's DIP switch (0: auto-addressing)."""
        self.pack = pack
        self.physics = physics
        self.board = board
        self.pins = importlib.import_module("boards." + board).PINS
        self.rng = random.Random(seed)
        self.noise_ma = noise_ma
        self.current_gain = 1.0
        self.current_offset_ma = 0
        self.ntc_fault = {}
        self.temp_override = {}
        self.key_on = True
        self.chip = Rp2040(uf2, flash_file=flash_file, name=board)
        # The chips keep time by the emulated RP2040's clock: a driver that
        # reads too early after a command is caught as on a real board.
        chip = self.chip
        self.clock_us = lambda: chip.t_ns // 1000
        p = self.pins
        self.emu_afe = self.emu_top = self.emu_shunt = self.emu_can = None
        if board == "slave_module":
            first, n = cells or (0, pack.n)
            self._wire_afe(n, first, noise_mv, afe_crc)
            for bit, pin in enumerate(p.get("addr_pins", ())):
                # A switch closed to ground reads 0; an open one its pull-up.
                self.chip.set_input(pin, 0 if (module_addr or 0) >> bit & 1 else 1)
        else:
            stacked = bool(p.get("i2c_top"))
            # One BQ76952 measures at most 16 cells (a master's local AFE
            # sees the first module's; the rest are on the slave modules).
            n0 = split(pack.n, (16, 16))[0] if stacked else min(pack.n, 16)
            self._wire_afe(n0, 0, noise_mv, afe_crc)
            if stacked:
                src = _NoisyCells(pack, self.rng, noise_mv, n0, pack.n - n0)
                src.current_ma = lambda: 0   # SRP/SRN shorted on the top level
                self.emu_top = EmuBQ76952(src, crc=afe_crc, shunt_uohm=SHUNT_UOHM,
                                          clock=self.clock_us)
                self.chip.i2c[p["i2c_top"][0]].add(self.emu_top)
            self.emu_shunt = EmuINA228(_Shunt(self), shunt_uohm=SHUNT_UOHM)
            self.chip.i2c[p["i2c"][0]].add(self.emu_shunt)
        self._table = NtcTable(Beta(NTC_R25, NTC_BETA), r_series=NTC_SERIES)
        for pin, role in p.get("ntc", ()):
            self.chip.adc[pin - 26] = self._adc_reader(pin, ROLE_NAMES[role])
        self.relay_pins = tuple(p.get("relays", ()))
        self.relay_active_low = p.get("relay_active_low", False)
        self.chip.pin_listeners.append(self._pin_changed)
        if p.get("key") is not None:
            self.chip.set_input(p["key"], 0 if self.key_on else 1)
        self.can_bus = can_bus
        self._int_pin = None
        self._int_level = None
        if can_bus is not None and p.get("spi"):
            self.emu_can = EmuMCP2515(can_bus, clock=self.clock_us)
            self.chip.spi[p["spi"][0]] = self._spi_byte
            self._int_pin = p.get("can_int")
            if self._int_pin is not None and p.get("can_cs") is not None:
                self.chip.sync_pins([p["can_cs"]])
            self._sync_int()
        # The INA228's ALERT onto its pin, at every slice (2 ms: about the
        # chip's own conversion cycle, bus + shunt + temperature).
        self._alert_pin = p.get("shunt_alert") if self.emu_shunt is not None else None
        self._alert_level = None
        self.rs485 = None
        self.cdc = None
        self.t_phys_ns = 0
        self._sync_alert()

    def _spi_byte(self, b):
        r = self.emu_can._byte(b)
        self._sync_int(mid_run=True)
        return r

    def _sync_int(self, mid_run=False):
        """The MCP2515's INT line onto its pin: at every slice (frames land
        at slice ends) and after every SPI byte (a read that empties the
        buffers raises it; the change rides on the SPI reply)."""
        if self._int_pin is None:
            return
        level = 0 if self.emu_can.int_active() else 1
        if level != self._int_level:
            self._int_level = level
            if mid_run:
                self.chip.pending_inputs.append([self._int_pin, level])
            else:
                self.chip.set_input(self._int_pin, level)

    def _sync_alert(self):
        if self._alert_pin is None:
            return
        level = self.emu_shunt.alert_level()
        if level != self._alert_level:
            self._alert_level = level
            self.chip.set_input(self._alert_pin, level)

    def _wire_afe(self, n, first, noise_mv, crc):
        src = _NoisyCells(self.pack, self.rng, noise_mv, first, n)
        self.emu_afe = EmuBQ76952(src, crc=crc, shunt_uohm=SHUNT_UOHM, clock=self.clock_us)
        self.chip.i2c[self.pins["i2c"][0]].add(self.emu_afe)

    def _adc_reader(self, pin, role):
        def read():
            f = self.ntc_fault.get(pin)
            if f == "open":
                return 0xFFF
            if f == "short":
                return 0
            t = self.temp_override.get(pin)
            if t is None:
                pk = self.pack
                t = {ROLE_POWER: pk.power_temp_c, ROLE_BALANCE: pk.balance_temp_c,
                     ROLE_CELL: pk.cell_temp_c}[role]
            code = self._table.code_at(int(round(t * 10.0))) + self.rng.uniform(-8.0, 8.0)
            return max(0, min(0xFFF0, int(code))) >> 4
        return read

    def _pin_changed(self, pin, level, t):
        if pin in self.relay_pins:
            k = self.relay_pins.index(pin)
            on = level == (0 if self.relay_active_low else 1)
            self.pack.relays[k] = 1 if on else 0
        cs = self.pins.get("can_cs")
        if self.emu_can is not None and pin == cs:
            self.emu_can.cs.value(1 if level != 0 else 0)
            self._sync_int(mid_run=True)

    def power_cycle(self):
        """The board loses its 3.3 V rail: the RP2040, the INA228 and the
        MCP2515 restart; the BQ76952 runs on the pack and keeps its state."""
        if self.emu_shunt is not None:
            self.emu_shunt.reset()
        if self.emu_can is not None:
            self.emu_can._reset()
        self.chip.power_cycle()
        self._int_level = None
        self._sync_int()
        self._alert_level = None
        self._sync_alert()

    # ---- ports ------------------------------------------------------------------
    def open_rs485(self, symlink=None):
        uid, _tx, _rx, de = self.pins["rs485"]
        self.rs485 = Rs485Pty(self.chip, uid, de, symlink)
        return self.rs485

    def open_usb(self, symlink=None):
        """The USB REPL on a pty (mpremote connect <path>)."""
        self.cdc = CdcPty(self.chip, symlink)
        return self.cdc

    # ---- observing ----------------------------------------------------------------
    def relay(self, name):
        """Coil state of a relay, from the pin the image drives."""
        k = RELAY_NAMES.index(name)
        level = self.chip.pins[self.relay_pins[k]]
        return int(level == (0 if self.relay_active_low else 1))

    # ---- running ------------------------------------------------------------------
    def run_ms(self, ms, poll=None):
        end = self.chip.t_ns + int(ms * 1e6)
        while self.chip.t_ns < end:
            step = min(SLICE_MS * 1000000, end - self.chip.t_ns)
            self._physics(step)
            if self.rs485 is not None:
                self.rs485.poll()
            if self.cdc is not None:
                self.cdc.poll()
            if poll is not None:
                poll(self)
            self.chip.run_until(self.chip.t_ns + step)
            if self.can_bus is not None:
                self.can_bus.advance_to(self.chip.t_ns / 1000.0)
                self._sync_int()

    def _physics(self, step_ns):
        if self.physics:
            self.pack.step(step_ns / 1e9)
        self._sync_alert()
        self.t_phys_ns += step_ns
        ms = self.t_phys_ns // 1000000
        if ms:
            self.t_phys_ns -= ms * 1000000
            for emu in (self.emu_afe, self.emu_top):
                if emu is not None:
                    emu.advance(ms)
        if self.pins.get("key") is not None:
            want = 0 if self.key_on else 1
            if getattr(self, "_key_level", None) != want:
                self._key_level = want
                self.chip.set_input(self.pins["key"], want)

    def close(self):
        for port in (self.rs485, self.cdc):
            if port is not None:
                port.close()
        self.chip.close()


class Background:
    """Run a board in a thread so that clients on its ptys (pymodbus,
    bmsctl, mpremote) talk to it as to a board on a USB adapter.

    ``speed`` paces emulated time against the wall clock (1.0: real time;
    None: as fast as the host allows).  Clients then see wire timing in
    emulated time, never faster than ``speed`` times real time.
    """

    def __init__(self, board, speed=None, slice_ms=SLICE_MS):
        import threading
        self.board = board
        self.speed = speed
        self.slice_ms = slice_ms
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import time
        t0 = time.monotonic()
        e0 = self.board.chip.t_ns
        try:
            while not self._stop.is_set():
                self.board.run_ms(self.slice_ms)
                if self.speed:
                    ahead = (self.board.chip.t_ns - e0) / 1e9 / self.speed - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def __enter__(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc):
        self.stop()
