"""One emulated RP2040 running a board image, its buses in Python.

The chip itself runs in Node on rp2040js (runner.mjs, beside this file);
this object owns the pipe to it and answers its bus events:

- I2C: by bus number and 7-bit address, devices with the ``machine.I2C``
  surface the chip emulators in tools/sim already have (``readfrom_mem_into``,
  ``writeto_mem``; ``dead`` / ``nack`` knobs).  The address phase is ACKed
  or NACKed here, so a missing or dead chip gives the firmware EIO, as on a
  board.  A read after a register write is served from one
  ``readfrom_mem_into`` of ``READ_AHEAD`` bytes; the master clocks out as
  many as it wants (the emulators' reads have no side effect per byte).
- SPI: a callable per bus, one byte in, one byte out; chip selects are GPIOs.
- UART: listeners per UART get each byte when its stop bit ends (the runner
  models the line rate); ``uart_send`` queues bytes onto the RX line.
- GPIO: the output level of every pin (``pins``), listeners on edges,
  ``set_input`` drives an input pin.
- ADC: a callable per channel returns the 12-bit code at the time of the read.
- USB-CDC: ``cdc_send`` / ``cdc_out`` (the REPL).

Time: ``run_until(t_ns)`` lets the chip run up to an emulated time; every
event carries the time it happened, so the Python side steps its models on
the same clock.  Nothing here waits on the wall clock.

The Node runtime and rp2040js come from ``tools.rp2emu.setup``.
"""
import json
import os
import subprocess

from tools import flashlayout
from tools.rp2emu import setup

READ_AHEAD = 64
HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "runner.mjs")
# Flash kept between runs: everything above the firmware region
# (ROMFS + littlefs of boards/rp2/BMS_PICO).
FLASH_KEEP_FROM = flashlayout.FIRMWARE_MAX
FLASH_SIZE = flashlayout.FLASH_BYTES
RESET_POWER, RESET_WDT, RESET_FORCE = 0, 1, 2


class EmuError(Exception):
    pass


class I2cBus:
    """The targets on one emulated I2C bus, addressed like machine.I2C."""

    def __init__(self):
        self.devices = {}
        self.ptr = {}
        self.nack_all = False
        self.transactions = 0

    def add(self, dev, addr=None):
        self.devices[addr if addr is not None else dev.addr] = dev

    def _dev(self, addr):
        if self.nack_all:
            return None
        d = self.devices.get(addr)
        if d is None or getattr(d, "dead", False):
            return None
        if getattr(d, "nack", 0) > 0:
            d.nack -= 1
            return None
        return d

    def probe(self, addr):
        return self._dev(addr) is not None

    def write(self, addr, data):
        d = self.devices.get(addr)
        if d is None:
            return
        self.transactions += 1
        if len(data) >= 2:
            try:
                d.writeto_mem(addr, data[0], bytes(data[1:]))
            except OSError:
                pass  # a chip that rejects the data (bad CRC) ignores it
        if data:
            self.ptr[addr] = data[0]

    def read(self, addr, wr):
        if wr and len(wr) > 1:
            self.write(addr, wr)
        d = self._dev(addr)
        if d is None:
            return None
        self.transactions += 1
        reg = wr[0] if wr else self.ptr.get(addr, 0)
        buf = bytearray(READ_AHEAD)
        try:
            d.readfrom_mem_into(addr, reg, buf)
        except OSError:
            return None
        return list(buf)


class Rp2040:
    def __init__(self, uf2, flash_file=None, name="rp2040"):
        node = setup.node()
        rpdir, bootrom = setup.rp2040js()
        args = [node, RUNNER, rpdir, bootrom, uf2]
        if flash_file:
            args.append(flash_file)
        self.name = name
        self.flash_file = flash_file
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self._rd = self.proc.stdout
        self.t_ns = 0
        self.busy_ns = 0
        self.i2c = {0: I2cBus(), 1: I2cBus()}
        self.spi = {}
        self.adc = {}
        self.pins = [-1] * 30
        self.pin_listeners = []        # fn(pin, level, t_ns)
        self.pending_inputs = []       # [pin, level]: applied with the next SPI reply
        self.uart_listeners = {0: [], 1: []}   # fn(byte, t_ns): bytes the chip sent
        self.uart_in_listeners = {0: [], 1: []}   # fn(byte, t_ns): landed in its RX FIFO
        self.reset_listeners = []      # fn(reason, t_ns)
        self.cdc_out = bytearray()
        self.cdc_up = False
        self.resets = []
        self.logs = []
        self.stats = {}
        hello = self._read()
        if hello.get("e") != "hello":
            raise EmuError("runner did not start: %r" % (hello,))

    # ---- the pipe ------------------------------------------------------------
    def _read(self):
        line = self._rd.readline()
        if not line:
            rc = self.proc.poll()
            raise EmuError("the emulator stopped (exit %s)" % rc)
        return json.loads(line)

    def _send(self, obj):
        try:
            self.proc.stdin.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
        except BrokenPipeError:
            raise EmuError("the emulator is gone")

    # ---- running ---------------------------------------------------------------
    def run_until(self, t_ns):
        """Run the chip up to emulated time t_ns, answering its bus events."""
        self._send({"c": "run", "until": int(t_ns)})
        while True:
            m = self._read()
            e = m["e"]
            if "t" in m:
                self.t_ns = m["t"]
            if e == "done":
                self.busy_ns = m["busy"]
                self.stats = m["stats"]
                return
            self._event(e, m)

    def run_ms(self, ms):
        self.run_until(self.t_ns + int(ms * 1e6))

    def _event(self, e, m):
        if e == "gpio" or e == "gpio_sync":
            self.pins[m["pin"]] = m["v"]
            for fn in self.pin_listeners:
                fn(m["pin"], m["v"], m["t"])
            if e == "gpio_sync":
                self._send({"gpio": self.pending_inputs})
                self.pending_inputs = []
        elif e == "i2c_probe":
            self._send({"ack": self.i2c[m["bus"]].probe(m["addr"])})
        elif e == "i2c_read":
            data = self.i2c[m["bus"]].read(m["addr"], m["wr"])
            self._send({"ack": data is not None, "data": data or []})
        elif e == "i2c_write":
            self.i2c[m["bus"]].write(m["addr"], m["wr"])
        elif e == "spi":
            fn = self.spi.get(m["bus"])
            msg = {"b": fn(m["b"]) if fn else 0xFF}
            if self.pending_inputs:
                # An input a chip on the bus changed during the transfer (the
                # MCP2515's INT): mid-run, only a reply can carry it.
                msg["gpio"] = self.pending_inputs
                self.pending_inputs = []
            self._send(msg)
        elif e == "adc":
            fn = self.adc.get(m["ch"])
            self._send({"v": fn() if fn else 0})
        elif e == "uart":
            for fn in self.uart_listeners[m["n"]]:
                fn(m["b"], m["t"])
        elif e == "uart_in":
            for fn in self.uart_in_listeners[m["n"]]:
                fn(m["b"], m["t"])
        elif e == "cdc":
            self.cdc_out += bytes(m["d"])
        elif e == "cdc_up":
            self.cdc_up = True
        elif e == "reset":
            self.cdc_up = False
            self.resets.append((m["reason"], m["t"]))
            for fn in self.reset_listeners:
                fn(m["reason"], m["t"])
        elif e == "log":
            self.logs.append(m["msg"])
        elif e == "saved":
            pass
        elif e == "profile":
            self.profile = m["pcs"]
        else:
            raise EmuError("unknown event %r" % (m,))

    # ---- inputs ----------------------------------------------------------------
    def uart_send(self, n, data):
        self._send({"c": "uart_rx", "n": n, "d": list(bytes(data))})

    def rx_events(self, on):
        """Report every byte landing in a UART RX FIFO (uart_in_listeners)."""
        self._send({"c": "rx_events", "on": bool(on)})

    def cdc_send(self, data):
        self._send({"c": "cdc_rx", "d": list(bytes(data))})

    def sync_pins(self, pins):
        """Edges on these output pins wait for the listeners, which may
        change inputs in answer (``pending_inputs``) before the code goes on."""
        self._send({"c": "sync_pins", "pins": list(pins)})

    def set_input(self, pin, level):
        self._send({"c": "gpio_in", "pin": pin, "v": 1 if level else 0})

    def power_cycle(self):
        """Power off and on: RAM and peripherals lost, flash kept."""
        self._send({"c": "reset", "reason": RESET_POWER})
        self.run_until(self.t_ns)

    def save_flash(self, path=None):
        path = path or self.flash_file
        self._send({"c": "flash_save", "path": path, "start": FLASH_KEEP_FROM,
                    "end": FLASH_SIZE})
        self.run_until(self.t_ns)

    def profile_start(self):
        self._send({"c": "profile", "on": True})

    def profile_stop(self):
        """[(pc, samples)] since profile_start (one sample per instruction burst)."""
        self.profile = []
        self._send({"c": "profile", "on": False})
        self.run_until(self.t_ns)
        return self.profile

    def close(self):
        if self.proc.poll() is None:
            try:
                self._send({"c": "quit"})
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (EmuError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def t_ms(self):
        return self.t_ns / 1e6
