"""Host-side BLE client for the BMS (bleak), speaking ``comms.ble_link`` framing.

    python -m tools.bleclient scan
    python -m tools.bleclient monitor  ADDRESS [--period 1000]
    python -m tools.bleclient read     ADDRESS REG COUNT
    python -m tools.bleclient rename   ADDRESS NEWNAME --password 123456

Layers, so everything but the radio is testable without bleak:
  Central           framing: chunking to the MTU, reassembly, CRC, seq
  BleakTransport    the radio (bleak), ``request(typ, payload)`` -> (typ, payload)
  LoopbackTransport a BleLink object in the same process (tests, demos)
  BleModbusClient   the pymodbus calls that ``tools.bmsctl.client.BmsClient``
                    uses, over a transport: every bmsctl feature works over BLE
                    (``BmsClient(name, client=BleModbusClient(transport))``)

bleak is imported only by BleakTransport / the CLI.
"""
import argparse
import sys

import tools  # noqa: F401  (firmware on sys.path)
from comms import ble_link as BL
from comms.crc16 import crc16

SERVICE_UUID = "6e9c0001-5a4d-4f42-8c2e-4d5059424d53"
RX_UUID = "6e9c0002-5a4d-4f42-8c2e-4d5059424d53"
TX_UUID = "6e9c0003-5a4d-4f42-8c2e-4d5059424d53"


class LinkError(Exception):
    pass


class Central:
    def __init__(self, mtu=23):
        self.mtu = mtu
        self.seq = 0
        self._cur = None
        self._cur_seq = None
        self._idx = 0
        self.errors = 0

    def encode(self, typ, payload):
        """(seq, chunks) for one request."""
        self.seq = (self.seq + 1) & 0xFF
        body = bytes([typ, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
        c = crc16(body)
        msg = body + bytes([c & 0xFF, c >> 8])
        size = BL.chunk_size(self.mtu)
        out = []
        for k, pos in enumerate(range(0, len(msg), size)):
            f = k & BL.IDX_MASK
            if pos == 0:
                f |= BL.F_START
            if pos + size >= len(msg):
                f |= BL.F_END
            out.append(bytes([self.seq, f]) + msg[pos:pos + size])
        return self.seq, out

    def feed(self, chunk):
        """One notification; returns (seq, type, payload) when a message completes."""
        if len(chunk) < 2:
            self.errors += 1
            return None
        f = chunk[1]
        if f & BL.F_START:
            self._cur = bytearray()
            self._cur_seq = chunk[0]
            self._idx = 0
        elif self._cur is None or chunk[0] != self._cur_seq or (f & BL.IDX_MASK) != self._idx:
            self.errors += 1
            self._cur = None
            return None
        self._cur += chunk[2:]
        self._idx = (self._idx + 1) & BL.IDX_MASK
        if not f & BL.F_END:
            return None
        m = self._cur
        self._cur = None
        n = m[1] | (m[2] << 8) if len(m) >= 3 else -1
        if n < 0 or len(m) != n + 5:
            self.errors += 1
            return None
        c = crc16(m, 0, n + 3)
        if m[n + 3] != (c & 0xFF) or m[n + 4] != (c >> 8):
            self.errors += 1
            return None
        return self._cur_seq, m[0], bytes(m[3:3 + n])


class LoopbackTransport:
    """Talks to a BleLink in the same process (tests and demos)."""

    def __init__(self, link, mtu=23, wait=None):
        self.link = link
        self._wait = wait       # fn(seconds): let the device run meanwhile (a test's loop)
        self.central = Central(mtu)
        link.set_mtu(mtu)
        self.live = []
        self._buf = bytearray(mtu)

    def pump(self):
        """Deliver what the link has queued; live notifications go to ``live``."""
        out = []
        while True:
            n = self.link.next_chunk(self._buf)
            if not n:
                return out
            r = self.central.feed(bytes(self._buf[:n]))
            if r is None:
                continue
            if r[1] == BL.T_LIVE:
                self.live.append(r[2])
            else:
                out.append(r)

    def request(self, typ, payload):
        seq, chunks = self.central.encode(typ, payload)
        answers = []
        for c in chunks:
            self.link.on_write(c)
            answers += self.pump()
        self.link.poll()
        answers += self.pump()
        for s, t, p in answers:
            if s == seq:
                return t, p
        raise LinkError("no answer")

    def wait(self, seconds):
        if self._wait is not None:
            self._wait(seconds)
        self.link.poll()
        self.live += [r[2] for r in self.pump() if r[1] == BL.T_LIVE]

    def close(self):
        pass


class BleakTransport:
    """The radio side with bleak; synchronous calls around one asyncio loop."""

    def __init__(self, address, timeout=5.0):
        import asyncio
        from bleak import BleakClient
        self.asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self.client = BleakClient(address, timeout=timeout)
        self.timeout = timeout
        self.central = None
        self.live = []
        self._answers = None

    def _on_notify(self, _char, data):
        r = self.central.feed(bytes(data))
        if r is None:
            return
        if r[1] == BL.T_LIVE:
            self.live.append(r[2])
        elif self._answers is not None:
            self._answers.put_nowait(r)

    async def _connect(self):
        await self.client.connect()
        mtu = getattr(self.client, "mtu_size", 23) or 23
        self.central = Central(mtu)
        self._answers = self.asyncio.Queue()
        await self.client.start_notify(TX_UUID, self._on_notify)

    def connect(self):
        self.loop.run_until_complete(self._connect())
        return True

    async def _request(self, typ, payload):
        seq, chunks = self.central.encode(typ, payload)
        for c in chunks:
            await self.client.write_gatt_char(RX_UUID, c, response=False)
        while True:
            s, t, p = await self.asyncio.wait_for(self._answers.get(), self.timeout)
            if s == seq:
                return t, p

    def request(self, typ, payload):
        try:
            return self.loop.run_until_complete(self._request(typ, payload))
        except self.asyncio.TimeoutError:
            raise LinkError("no answer within %.1f s" % self.timeout)

    def wait(self, seconds):
        self.loop.run_until_complete(self.asyncio.sleep(seconds))

    def close(self):
        self.loop.run_until_complete(self.client.disconnect())


# ---- pymodbus-shaped client -------------------------------------------------
class _Response:
    def __init__(self, registers=None, code=None):
        self.registers = registers or []
        self.exception_code = code

    def isError(self):  # noqa: N802 - pymodbus name
        return self.exception_code is not None


class BleModbusClient:
    """What BmsClient needs from pymodbus, as Modbus PDUs over BLE."""

    def __init__(self, transport):
        self.t = transport

    def connect(self):
        c = getattr(self.t, "connect", None)
        return c() if c else True

    def close(self):
        self.t.close()

    def wait(self, seconds):
        """Let time pass with the link serviced (bleak: notifications keep arriving)."""
        w = getattr(self.t, "wait", None)
        if w is not None:
            w(seconds)
        else:
            import time
            time.sleep(seconds)

    def _pdu(self, pdu):
        typ, p = self.t.request(BL.T_MODBUS, pdu)
        if typ == BL.T_ERROR:
            raise LinkError("link error %d" % p[0])
        if typ != BL.T_MODBUS | BL.T_RESPONSE or not p:
            raise LinkError("unexpected answer type 0x%02X" % typ)
        if p[0] & 0x80:
            return None, p[1]
        return p, None

    def _read(self, fc, addr, count):
        p, ex = self._pdu(bytes([fc, addr >> 8, addr & 0xFF, count >> 8, count & 0xFF]))
        if ex is not None:
            return _Response(code=ex)
        return _Response([(p[2 + 2 * i] << 8) | p[3 + 2 * i] for i in range(p[1] // 2)])

    def read_holding_registers(self, addr, count=1, device_id=1):
        return self._read(3, addr, count)

    def read_input_registers(self, addr, count=1, device_id=1):
        return self._read(4, addr, count)

    def write_register(self, addr, value, device_id=1):
        p, ex = self._pdu(bytes([6, addr >> 8, addr & 0xFF, value >> 8, value & 0xFF]))
        return _Response(code=ex)

    def write_registers(self, addr, values, device_id=1):
        pdu = bytearray([16, addr >> 8, addr & 0xFF, 0, len(values), 2 * len(values)])
        for v in values:
            pdu += bytes([v >> 8, v & 0xFF])
        p, ex = self._pdu(bytes(pdu))
        return _Response(code=ex)

    # ---- BLE-only requests ----------------------------------------------
    def rename(self, name):
        typ, p = self.t.request(BL.T_SET_NAME, name.encode())
        return {0: "ok", 1: "locked: unlock first", 2: "invalid name"}.get(p[0], "?")

    def subscribe(self, period_ms):
        typ, p = self.t.request(BL.T_SUBSCRIBE, bytes([period_ms & 0xFF, period_ms >> 8]))
        return p[1] | (p[2] << 8)


def decode_live(payload):
    """A live notification (monitor block) -> dict of monitor values."""
    from tools.bmsctl.client import decode_monitor
    count = payload[2]
    regs = [(payload[3 + 2 * i] << 8) | payload[4 + 2 * i] for i in range(count)]
    return decode_monitor(regs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cmd", choices=["scan", "monitor", "read", "rename"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--password")
    ap.add_argument("--period", type=int, default=1000)
    a = ap.parse_args(argv)
    if a.cmd == "scan":
        import asyncio
        from bleak import BleakScanner
        devs = asyncio.run(BleakScanner.discover(timeout=5.0, service_uuids=[SERVICE_UUID]))
        for d in devs:
            print(d.address, d.name)
        return 0
    from tools.bmsctl.client import BmsClient
    t = BleakTransport(a.args[0])
    mb = BleModbusClient(t)
    bms = BmsClient(a.args[0], client=mb).connect()
    try:
        if a.password:
            bms.unlock(a.password)
        if a.cmd == "read":
            reg, n = int(a.args[1], 0), int(a.args[2], 0)
            print(bms.read(reg, n))
        elif a.cmd == "rename":
            print(mb.rename(a.args[1]))
        elif a.cmd == "monitor":
            mb.subscribe(a.period)
            while True:
                t.wait(a.period / 1000.0)
                while t.live:
                    print(decode_live(t.live.pop(0)))
    except KeyboardInterrupt:
        pass
    finally:
        bms.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
