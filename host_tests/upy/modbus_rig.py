"""Shared by the Modbus tests: a fake UART port, a us/ms clock, a server rig.

MicroPython-compatible.  The CRC used to build request frames is a bitwise
implementation typed in here from the Modbus serial-line spec (6.2.2), not
the firmware's table, so the tests do not check the firmware against itself.
"""
from bms.auth import Auth
from bms.core import Bms
from bms.eventlog import EventLog
from bms.params import CHEM_LFP, ParamSet
from comms.modbus_rtu import ModbusRTU
from comms.registers import RegisterMap
from comms.regs.identity import DeviceInfo
from scripted_board import ScriptedBoard

PERIOD = 0x40000000
START_US = PERIOD - 50000000  # 50 s before the us ticks wrap


def ref_crc(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def with_crc(data):
    c = ref_crc(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


class UsClock:
    """ticks_us and ticks_ms of one virtual time, both wrapping at 2**30."""

    def __init__(self, start_us=START_US):
        self.us = start_us

    def ticks_us(self):
        return self.us % PERIOD

    def ticks_ms(self):
        return (self.us // 1000) % PERIOD

    def advance_us(self, us):
        self.us += us

    def advance(self, ms):
        self.us += ms * 1000


class FakePort:
    """UART-like port with preallocated buffers (readinto/write allocate nothing)."""

    def __init__(self, size=4096):
        self.rxbuf = bytearray(size)
        self.head = 0
        self.tail = 0
        self.txbuf = bytearray(size)
        self.txn = 0
        self.writes = 0
        self.baud_set = []

    def feed(self, data):
        for b in data:
            self.rxbuf[self.tail] = b
            self.tail += 1

    def any(self):
        return self.tail - self.head

    def readinto(self, buf):
        n = self.tail - self.head
        if n <= 0:
            return None
        if n > len(buf):
            n = len(buf)
        for i in range(n):
            buf[i] = self.rxbuf[self.head + i]
        self.head += n
        if self.head == self.tail:
            self.head = 0
            self.tail = 0
        return n

    def write(self, buf):
        n = len(buf)
        for i in range(n):
            self.txbuf[self.txn + i] = buf[i]
        self.txn += n
        self.writes += 1
        return n

    def flush(self):
        pass

    def set_baud(self, baud):
        self.baud_set.append(baud)

    def take(self):
        out = bytes(self.txbuf[:self.txn])
        self.txn = 0
        return out


class ModbusRig:
    def __init__(self, cells=16, mv=3300, address=1, with_auth=True, store=None, us=True):
        self.clock = UsClock()
        self.board = ScriptedBoard(max_cells=cells, cells=cells, mv=mv)
        self.params = ParamSet(CHEM_LFP, max_cells=cells)
        self.log = EventLog(64)
        self.bms = Bms(self.board, self.params, self.clock, self.log)
        self.store = store if store is not None else {}
        self.auth = Auth(self.clock, self.store, factory_password=b"factory1",
                         rng=lambda n: b"\x01" * n, iterations=4) if with_auth else None
        self.info = DeviceInfo(serial="SN0001", mfg_date="2026-11-23", bt_addr="26541C98068E")
        self.regs = RegisterMap(self.bms, self.auth, self.info)
        self.port = FakePort()
        clk = self.clock if us else MsOnly(self.clock)
        self.server = ModbusRTU(self.port, self.regs, clk, params=self.params)
        self.idle(10)  # the line is quiet: the server synchronises

    def run(self, ms):
        """Advance the control loop and the server together, 1 ms at a time."""
        for _ in range(ms):
            self.clock.advance(1)
            self.bms.step()
            self.server.poll()

    def idle(self, ms):
        for _ in range(ms):
            self.clock.advance(1)
            self.server.poll()

    def send_raw(self, frame, gap_ms=6):
        self.port.feed(frame)
        self.server.poll()
        self.idle(gap_ms)
        return self.port.take()

    def request(self, pdu, address=1):
        return self.send_raw(with_crc(bytes((address,)) + bytes(pdu)))

    def read(self, start, count, fc=3, address=1):
        r = self.request(bytes((fc, start >> 8, start & 0xFF, count >> 8, count & 0xFF)), address)
        if len(r) < 5 or r[1] != fc:
            raise ModbusError(r)
        return [(r[3 + 2 * i] << 8) | r[4 + 2 * i] for i in range(count)]

    def write1(self, addr, value, address=1):
        value &= 0xFFFF
        return self.request(bytes((6, addr >> 8, addr & 0xFF, value >> 8, value & 0xFF)), address)

    def write_n(self, addr, values, address=1):
        pdu = bytearray((16, addr >> 8, addr & 0xFF, 0, len(values), 2 * len(values)))
        for v in values:
            v &= 0xFFFF
            pdu.append(v >> 8)
            pdu.append(v & 0xFF)
        return self.request(pdu, address)

    def unlock(self, pw=b"123456"):
        from comms.registers import A_AUTH
        return self.write_n(A_AUTH, ascii_regs(pw, 8))


class MsOnly:
    """A clock with only ticks_ms (the server's millisecond mode)."""

    def __init__(self, clock):
        self._c = clock

    def ticks_ms(self):
        return self._c.ticks_ms()


class ModbusError(Exception):
    pass


def ascii_regs(s, n):
    if isinstance(s, str):
        s = s.encode()
    b = bytearray(2 * n)
    for i in range(min(len(s), 2 * n)):
        b[i] = s[i]
    return [(b[2 * i] << 8) | b[2 * i + 1] for i in range(n)]


def exception_code(resp, fc):
    """The exception code of a well-formed exception response, else None."""
    if len(resp) == 5 and resp[1] == (fc | 0x80) and ref_crc(resp[:3]) == resp[3] | (resp[4] << 8):
        return resp[2]
    return None


def crc_ok(resp):
    return len(resp) >= 4 and ref_crc(resp[:-2]) == resp[-2] | (resp[-1] << 8)


def s16(v):
    return v - 0x10000 if v & 0x8000 else v


def u32(regs, i):
    return (regs[i] << 16) | regs[i + 1]


def s32(regs, i):
    v = u32(regs, i)
    return v - 0x100000000 if v & 0x80000000 else v
