"""Host-side emulator of a small display on the TTL / RS485-1 port.

Speaks docs/display_protocol.md from the display's side, written from the
spec (its own CRC, its own decoder): it polls summary, cells and
temperatures and renders a text "screen".  ``BytePipe`` gives the BMS's
``DisplayPort`` and the emulator a UART-like port each, in memory.

    python -m tools.sim.display_emu      # a simulated pack, ten screens
"""
import struct


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(cmd, payload=b""):
    body = bytes([len(payload), cmd]) + bytes(payload)
    return b"\xa5\x5a" + body + struct.pack("<H", crc16(body))


class PortEnd:
    """One end of a BytePipe: any / readinto / write / flush."""

    def __init__(self):
        self.inbox = bytearray()
        self.peer = None

    def any(self):
        return len(self.inbox)

    def readinto(self, buf):
        n = min(len(buf), len(self.inbox))
        if n == 0:
            return None
        buf[:n] = self.inbox[:n]
        del self.inbox[:n]
        return n

    def write(self, buf):
        self.peer.inbox += bytes(buf)
        return len(buf)

    def flush(self):
        pass


def BytePipe():
    a, b = PortEnd(), PortEnd()
    a.peer, b.peer = b, a
    return a, b


class ProtocolError(Exception):
    pass


def parse(data):
    """(cmd, payload, rest) for the first frame in ``data``; raises on a bad one."""
    if len(data) < 6 or data[0] != 0xA5 or data[1] != 0x5A:
        raise ProtocolError("no frame header")
    n = data[2]
    if len(data) < 6 + n:
        raise ProtocolError("short frame")
    body = bytes(data[2:4 + n])
    if struct.unpack("<H", bytes(data[4 + n:6 + n]))[0] != crc16(body):
        raise ProtocolError("bad CRC")
    return data[3], bytes(data[4:4 + n]), bytes(data[6 + n:])


def decode_summary(p):
    """The 30-byte summary, or version 1's 36 (the u16 count and indices replace
    the u8 ones, which saturate at 255)."""
    (pack_mv, cur, soc, soh, n, vmax, imax, vmin, imin, tmax, tmin, mode, relays, level,
     faults) = struct.unpack("<IiHHBHBHBhhBBBI", p[:30])
    if len(p) >= 36:
        n, imax, imin = struct.unpack("<HHH", p[30:36])
    return {"pack_mv": pack_mv, "current_ma": cur, "soc_pm": soc, "soh_pm": soh, "cells": n,
            "cell_max_mv": vmax, "cell_max_idx": imax, "cell_min_mv": vmin,
            "cell_min_idx": imin, "t_max_dc": tmax, "t_min_dc": tmin, "mode": mode,
            "relays": relays, "level": level, "faults": faults}


class DisplayEmu:
    def __init__(self, port, step=None):
        self.port = port
        self.step = step  # runs the BMS side until it answered (sim / poll loop)

    def ask(self, cmd, payload=b""):
        self.port.write(frame(cmd, payload))
        if self.step:
            self.step()
        buf = bytearray(512)
        n = self.port.readinto(buf) or 0
        rcmd, p, _rest = parse(buf[:n])
        if rcmd == 0xFF:
            raise ProtocolError("error %d" % p[0])
        if rcmd != cmd | 0x80:
            raise ProtocolError("answer 0x%02X to 0x%02X" % (rcmd, cmd))
        return p

    def summary(self):
        """Version 1 (exact cell count and indices above 255 cells); a BMS
        without it answers error 2, then the plain request."""
        try:
            return decode_summary(self.ask(0x01, b"\x01"))
        except ProtocolError as e:
            if str(e) != "error 2":
                raise
        return decode_summary(self.ask(0x01))

    def cells(self, n):
        out = []
        for first in range(0, n, 64):
            k = min(64, n - first)
            p = self.ask(0x02, bytes([first, k]))
            assert p[0] == first and p[1] == k
            out += list(struct.unpack("<%dH" % k, p[2:]))
        return out

    def temps(self):
        p = self.ask(0x03)
        return [struct.unpack("<BBh", p[1 + 4 * i:5 + 4 * i]) for i in range(p[0])]

    def screen(self):
        s = self.summary()
        cells = self.cells(s["cells"])
        lines = ["%6.2f V %7.2f A  SOC %5.1f %%  level %d  faults 0x%08X" % (
            s["pack_mv"] / 1000.0, s["current_ma"] / 1000.0, s["soc_pm"] / 10.0, s["level"],
            s["faults"])]
        for i in range(0, len(cells), 8):
            lines.append(" ".join("%5d" % v for v in cells[i:i + 8]))
        return "\n".join(lines)


def main():
    import tools  # noqa: F401
    from comms.display import DisplayPort
    from tools.sim.simulator import Simulation
    sim = Simulation(chem="LFP", cells=16, soc=0.5)
    bms_end, disp_end = BytePipe()
    dp = DisplayPort(bms_end, sim.bms, sim.clock, jbd=True)
    emu = DisplayEmu(disp_end, step=dp.poll)
    for _ in range(10):
        sim.run(1)
        print(emu.screen())
        print()


if __name__ == "__main__":
    main()
