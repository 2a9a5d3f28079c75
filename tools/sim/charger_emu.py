"""Host-side emulator of the "special charger" on RS485-1 (docs/charger_protocol.md).

Behaves like an Elcon / TC charger whose CAN messages travel in the
RS485 frame: it charges the simulated pack (``Pack.charger_a`` /
``charger_cv``) at min(requested, rated) current up to the requested voltage
while the BMS keeps commanding "charge", stops at once on "stop", stops by
itself after 5 s without a BMS command (status bit 4) and reports output
voltage, current and status every second.  Written from the spec: its own
CRC and parser.
"""
import struct

from tools.sim.display_emu import crc16

TIMEOUT_MS = 5000
PERIOD_MS = 1000


def frame(cmd, payload):
    body = bytes([len(payload), cmd]) + bytes(payload)
    return b"\xa5\x5a" + body + struct.pack("<H", crc16(body))


class ChargerEmu:
    def __init__(self, port, pack, rated_a=20.0):
        self.port = port
        self.pack = pack
        self.rated_a = rated_a
        self.buf = bytearray()
        self.t_ms = 0
        self.last_cmd_ms = None
        self.next_status = 0
        self.commands = []      # (t_ms, volts, amps, control)
        self.status = 0
        self.running = False

    def _apply(self, v, a, ctrl):
        if ctrl == 0 and a > 0 and v > 0 and not self.status & 0x0F:
            self.pack.charger_a = min(a, self.rated_a)
            self.pack.charger_cv = v
            self.running = True
        else:
            self.stop()

    def stop(self):
        self.pack.charger_a = 0.0
        self.running = False

    def step(self, dt_ms):
        self.t_ms += dt_ms
        b = bytearray(256)
        n = self.port.readinto(b) or 0
        self.buf += b[:n]
        while len(self.buf) >= 14:
            if self.buf[0] != 0xA5 or self.buf[1] != 0x5A:
                del self.buf[0]
                continue
            f = bytes(self.buf[:14])
            if f[2] != 8 or f[3] != 0x10 or struct.unpack("<H", f[12:14])[0] != crc16(f[2:12]):
                del self.buf[0]
                continue
            del self.buf[:14]
            v, a, ctrl = struct.unpack(">HHB", f[4:9])
            self.commands.append((self.t_ms, v / 10.0, a / 10.0, ctrl))
            self.last_cmd_ms = self.t_ms
            self.status &= ~0x10
            self._apply(v / 10.0, a / 10.0, ctrl)
        if self.last_cmd_ms is not None and self.t_ms - self.last_cmd_ms > TIMEOUT_MS:
            self.status |= 0x10
            self.stop()
        if self.t_ms >= self.next_status:
            self.next_status = self.t_ms + PERIOD_MS
            out_a = max(0.0, self.pack.current_a) if self.running else 0.0
            payload = struct.pack(">HHB3x", int(self.pack.pack_voltage() * 10),
                                  int(out_a * 10), self.status)
            self.port.write(frame(0x90, payload))
