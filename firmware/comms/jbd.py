"""JBD / LLT ("Jiabaida software board general protocol") read-only responder.

So that tools which already speak it (xiaoxiang app clones, dbus-serialbattery,
batmon, jbdtool, esphome-jbd-bms) can read this BMS unmodified over the
TTL / RS485-1 port.  9600 8N1, 16-bit fields big-endian.

  request   DD A5 cmd len data... chk_hi chk_lo 77
  response  DD cmd status len data... chk_hi chk_lo 77
  chk = 0x10000 - sum(bytes between the first two bytes and the checksum)
        (request: cmd, len, data; response: status, len, data)

Read commands answered: 0x03 basic information, 0x04 cell voltages,
0x05 hardware version (device name).  Anything else, and every write
(DD 5A ...), is answered with status 0x80: this mode is read-only, settings
go through Modbus / BLE with their password gate.

0x03 payload: total voltage (10 mV), current (10 mA, signed, + = charging),
remaining and nominal capacity (10 mAh), cycles, production date
((year-2000)<<9 | month<<5 | day; 0 = unknown), balance bits cells 1-16 and
17-32, protection bits, software version, RSOC %, FET bits (bit0 charge,
bit1 discharge), cell count, NTC count, NTCs in 0.1 K.

NTC order (what open clients make of it): NTC 0 is the MOS temperature
(the hottest power-board sensor; the hottest cell sensor if the board has
none), NTC 1.. are the cell sensors, the battery temperatures a client
averages and derates on.  The balance-board and ambient sensors are not
sent: a client would average a hot balancer into the pack temperature and
cut the charge current for nothing.  A failed NTC reads 0 (0 K).

Protection bits: 0 cell OV, 1 cell UV, 2 pack OV, 3 pack UV, 4 charge OT,
5 charge UT, 6 discharge OT, 7 discharge UT, 8 charge OC, 9 discharge OC,
10 short circuit, 11 front-end IC error, 12 MOS locked by software.
Cell OV / UV set the pack bits too: clients such as dbus-serialbattery
raise their high / low voltage alarms from bits 2 / 3 only.  Every fault
whose reaction opens a relay sets at least one bit (a test walks the fault
table): lost or implausible measurements (NTC, cell or current data, the
AFE, a module) are "front-end IC error"; faults of the BMS itself
(imbalance, precharge, lease, welded relay, firmware) are "MOS locked".
"""
from micropython import const

from bms.contactors import RELAY_CHG, RELAY_DSG
from bms.measurements import ROLE_CELL, ROLE_POWER
from comms.packing import put16be as _put16

START = const(0xDD)
END = const(0x77)
READ = const(0xA5)
WRITE = const(0x5A)
CMD_BASIC = const(0x03)
CMD_CELLS = const(0x04)
CMD_VERSION = const(0x05)
ST_OK = const(0x00)
ST_ERROR = const(0x80)
MAX_CELLS = const(127)  # the length byte limits a 0x04 answer to 254 bytes
MAX_NTC = const(8)
SW_VERSION = const(0x10)
KELVIN_DC = const(2731)

# Fault ids of bms.faults, as literal copies: names imported from another
# module are not folded, so PROT_BITS would be built on the heap at import;
# host_tests/test_const_tables.py checks them against bms.faults.
_F_OV1 = const(0)
_F_OV2 = const(1)
_F_UV1 = const(2)
_F_UV2 = const(3)
_F_CHG_OC = const(4)
_F_DSG_OC = const(5)
_F_PEAK = const(6)
_F_SHORT = const(7)
_F_T_POWER = const(8)
_F_T_CELL = const(10)
_F_T_CHG = const(11)
_F_LT_CHG = const(12)
_F_LT_DSG = const(13)
_F_DIFF = const(14)
_F_T_SENSOR = const(15)
_F_CELL_STALE = const(17)
_F_CUR_STALE = const(18)
_F_PRECHARGE = const(19)
_F_INTERNAL = const(20)
_F_AFE = const(21)
_F_COMM = const(22)
_F_LEASE = const(23)
_F_RELAY_WELD = const(30)
_F_CURRENT_SENSOR = const(31)

B_CELL_OV = const(0x0001)
B_CELL_UV = const(0x0002)
B_PACK_OV = const(0x0004)
B_PACK_UV = const(0x0008)
B_CHG_OT = const(0x0010)
B_CHG_UT = const(0x0020)
B_DSG_OT = const(0x0040)
B_DSG_UT = const(0x0080)
B_CHG_OC = const(0x0100)
B_DSG_OC = const(0x0200)
B_SHORT = const(0x0400)
B_IC = const(0x0800)
B_LOCK = const(0x1000)

# (fault id, protection bits)
PROT_BITS = (
    (_F_OV1, B_CELL_OV | B_PACK_OV), (_F_OV2, B_CELL_OV | B_PACK_OV),
    (_F_UV1, B_CELL_UV | B_PACK_UV), (_F_UV2, B_CELL_UV | B_PACK_UV),
    (_F_T_CHG, B_CHG_OT), (_F_T_CELL, B_CHG_OT | B_DSG_OT), (_F_T_POWER, B_CHG_OT | B_DSG_OT),
    (_F_LT_CHG, B_CHG_UT), (_F_LT_DSG, B_DSG_UT),
    (_F_CHG_OC, B_CHG_OC), (_F_DSG_OC, B_DSG_OC), (_F_PEAK, B_DSG_OC), (_F_SHORT, B_SHORT),
    (_F_AFE, B_IC), (_F_CELL_STALE, B_IC), (_F_CUR_STALE, B_IC), (_F_T_SENSOR, B_IC),
    (_F_COMM, B_IC), (_F_CURRENT_SENSOR, B_IC),
    (_F_DIFF, B_LOCK), (_F_PRECHARGE, B_LOCK), (_F_LEASE, B_LOCK), (_F_RELAY_WELD, B_LOCK),
    (_F_INTERNAL, B_LOCK),
)


def checksum(buf, start, end):
    s = 0
    for i in range(start, end):
        s += buf[i]
    return (0x10000 - s) & 0xFFFF


def _clamp16(v):
    return 0 if v < 0 else 0xFFFF if v > 0xFFFF else v


def protection_word(prot):
    w = 0
    st = prot.state
    for fid, bits in PROT_BITS:
        if st[fid]:
            w |= bits
    return w


class JbdResponder:
    def __init__(self, bms, name=b"MPY-BMS"):
        self.bms = bms
        self.name = name
        self.requests = 0
        self.refused = 0

    def frame_length(self, rx, n):
        """Total length of the request starting at rx[0], 0 if not known yet."""
        if n < 4:
            return 0
        return 4 + rx[3] + 3

    def valid(self, rx, total):
        if rx[0] != START or rx[total - 1] != END:
            return False
        c = checksum(rx, 2, total - 3)
        return rx[total - 3] == c >> 8 and rx[total - 2] == c & 0xFF

    def respond(self, rx, tx):
        """Answer the (valid) request in ``rx`` into ``tx``; returns its length."""
        self.requests += 1
        cmd = rx[2]
        tx[0] = START
        tx[1] = cmd
        tx[2] = ST_OK
        n = 0
        if rx[1] != READ:
            tx[2] = ST_ERROR
        elif cmd == CMD_BASIC:
            n = self._basic(tx, 4)
        elif cmd == CMD_CELLS:
            m = self.bms.meas
            k = m.n_cells if m.n_cells < MAX_CELLS else MAX_CELLS
            for i in range(k):
                _put16(tx, 4 + 2 * i, m.cell_mv[i] if m.cell_ok[i] else 0)
            n = 2 * k
        elif cmd == CMD_VERSION:
            for i in range(len(self.name)):
                tx[4 + i] = self.name[i]
            n = len(self.name)
        else:
            tx[2] = ST_ERROR
        if tx[2] != ST_OK:
            self.refused += 1
        tx[3] = n
        c = checksum(tx, 2, 4 + n)
        tx[4 + n] = c >> 8
        tx[5 + n] = c & 0xFF
        tx[6 + n] = END
        return 7 + n

    def _basic(self, tx, p):
        b = self.bms
        m = b.meas
        soc = b.soc
        mv = m.pack_mv if m.pack_mv else m.sum_mv
        _put16(tx, p, _clamp16(mv // 10))
        i = m.current_ma
        ci = i // 10 if i >= 0 else -((-i) // 10)
        ci = -0x8000 if ci < -0x8000 else 0x7FFF if ci > 0x7FFF else ci
        _put16(tx, p + 2, ci & 0xFFFF)
        _put16(tx, p + 4, _clamp16(soc.remaining_mah // 10))
        _put16(tx, p + 6, _clamp16(soc.capacity_mah // 10))
        _put16(tx, p + 8, _clamp16(soc.cycles))
        _put16(tx, p + 10, 0)
        fl = b.balancer.flags
        lo = 0
        hi = 0
        for c in range(m.n_cells if m.n_cells < 32 else 32):
            if fl[c]:
                if c < 16:
                    lo |= 1 << c
                else:
                    hi |= 1 << (c - 16)
        _put16(tx, p + 12, lo)
        _put16(tx, p + 14, hi)
        _put16(tx, p + 16, protection_word(b.prot))
        tx[p + 18] = SW_VERSION
        pm = soc.soc_pm
        tx[p + 19] = 0 if pm < 0 else 100 if pm > 1000 else (pm + 5) // 10
        rs = b.contactors.state
        tx[p + 20] = (1 if rs[RELAY_CHG] else 0) | (2 if rs[RELAY_DSG] else 0)
        tx[p + 21] = m.n_cells if m.n_cells < 255 else 255
        return 23 + 2 * _ntcs(m, tx, p + 22)


def _ntc(m, i):
    return m.temp_dc[i] + KELVIN_DC if m.temp_status[i] == 0 else 0


def _ntcs(m, tx, p):
    """NTC count at tx[p], then MOS (power board) and the cell sensors; returns the count."""
    role = m.temp_role
    mos = -1
    for i in range(m.n_temps):
        if role[i] == ROLE_POWER and (mos < 0 or _ntc(m, i) > _ntc(m, mos)):
            mos = i
    if mos < 0:
        for i in range(m.n_temps):
            if role[i] == ROLE_CELL and (mos < 0 or _ntc(m, i) > _ntc(m, mos)):
                mos = i
    n = 0
    if mos >= 0:
        _put16(tx, p + 1, _clamp16(_ntc(m, mos)))
        n = 1
    for i in range(m.n_temps):
        if n >= MAX_NTC:
            break
        if role[i] == ROLE_CELL:
            _put16(tx, p + 1 + 2 * n, _clamp16(_ntc(m, i)))
            n += 1
    tx[p] = n
    return n
