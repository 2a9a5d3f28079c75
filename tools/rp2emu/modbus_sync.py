"""A Modbus RTU master wired straight to the emulated chip's RS485 port, in
emulated time: each request goes onto the UART RX line at the line rate,
the emulator runs until the reply's last byte left the chip (while DE was
high), and nothing waits on the wall clock.  It has the surface of the
pymodbus client ``BmsClient`` uses (``BmsClient(..., client=EmuModbus(b))``),
so ``bmsctl``'s own code (unlock, the update transport) drives the chip.

Why not pymodbus over the pty: its inter-frame waits are wall-clock
sleeps, which on an emulator running at a fraction of real time turn into
tens of emulated ms per request and hours of wall time for a 230 KB update.
"""
import struct

import tools  # noqa: F401
from comms.crc16 import crc16


class _Reply:
    def __init__(self, registers=None, exc=None):
        self.registers = registers or []
        self.exception_code = exc

    def isError(self):
        return self.exception_code is not None


class EmuModbus:
    def __init__(self, board, step_ms=0.5, timeout_ms=2000):
        self.board = board
        self.step_ms = step_ms
        self.timeout_ms = timeout_ms
        uid, _tx, _rx, de = board.pins["rs485"]
        self.uart = uid
        self.de = de
        self.rx = bytearray()
        self.requests = 0
        self.busy_ms = 0.0          # emulated time spent in requests
        board.chip.uart_listeners[uid].append(self._tx)

    def _tx(self, b, t):
        if self.board.chip.pins[self.de] == 1:
            self.rx.append(b)

    def connect(self):
        return True

    def close(self):
        pass

    def _transact(self, pdu, dev, expect):
        frame = bytes((dev,)) + pdu
        c = crc16(frame, 0, len(frame))
        frame += struct.pack("<H", c)
        self.rx.clear()
        t0 = self.board.chip.t_ns
        self.board.chip.uart_send(self.uart, frame)
        self.requests += 1
        waited = 0.0
        while True:
            self.board.run_ms(self.step_ms)
            waited += self.step_ms
            r = self.rx
            if len(r) >= 5 and r[1] & 0x80:
                n = 5
            else:
                n = expect(r)
            if n and len(r) >= n:
                break
            if waited > self.timeout_ms:
                raise IOError("no reply within %d ms (got %r)" % (self.timeout_ms, bytes(r)))
        self.busy_ms += (self.board.chip.t_ns - t0) / 1e6
        r = bytes(self.rx[:n])
        if crc16(r, 0, n - 2) != struct.unpack("<H", r[n - 2:])[0]:
            raise IOError("reply CRC error")
        if r[1] & 0x80:
            return _Reply(exc=r[2])
        return r

    def _read(self, fc, addr, count, dev):
        r = self._transact(struct.pack(">BHH", fc, addr, count), dev,
                           lambda b: 5 + b[2] if len(b) >= 3 else 0)
        if isinstance(r, _Reply):
            return r
        return _Reply(list(struct.unpack(">%dH" % (r[2] // 2), r[3:3 + r[2]])))

    def read_holding_registers(self, addr, count=1, device_id=1):
        return self._read(3, addr, count, device_id)

    def read_input_registers(self, addr, count=1, device_id=1):
        return self._read(4, addr, count, device_id)

    def write_register(self, addr, value, device_id=1):
        r = self._transact(struct.pack(">BHH", 6, addr, value), device_id, lambda b: 8)
        return r if isinstance(r, _Reply) else _Reply()

    def write_registers(self, addr, values, device_id=1):
        pdu = struct.pack(">BHHB", 16, addr, len(values), 2 * len(values)) + \
            struct.pack(">%dH" % len(values), *values)
        r = self._transact(pdu, device_id, lambda b: 8)
        return r if isinstance(r, _Reply) else _Reply()
