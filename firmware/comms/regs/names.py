"""Names block: the Bluetooth and device names (user role) and the
battery's code fields (factory role), persisted through the device info's
key/value store.

Text fields are ASCII, written whole with FC16 from their first register
(shorter writes are padded with NUL).  The Bluetooth name is what the radio
advertises after the next restart (BLE link).  Nothing here changes how
the BMS protects the pack: the battery's nominal voltage and capacity are
the nameplate, the parameters ``capacity`` and ``cell_count`` are what the
core uses."""
from micropython import const

from comms.packing import get16be as get16
from comms.regs import codes, rows

N_BLE = const(0)        # 16 registers
N_DEVICE = const(16)    # 16 registers
N_TYPE = const(32)      # 8 registers
N_NOMINAL = const(40)   # u16 0.01 V
N_CAPACITY = const(41)  # u16 0.1 Ah
N_MAKER = const(42)     # 8 registers
N_DATE = const(50)      # 6 registers
SIZE = const(56)
_BLE_MAX = const(20)    # comms.ble_link._MAX_NAME
_USER = const(0)
_FACTORY = const(1)
# name, offset, registers, type, role to write, description
FIELDS = (
    ("ble_name", N_BLE, 16, "ascii", _USER, "Bluetooth name advertised (from the next restart)"),
    ("device_name", N_DEVICE, 16, "ascii", _USER, "Device name shown by the app and bmsctl"),
    ("bat_type", N_TYPE, 8, "ascii", _FACTORY, "Battery code: type (e.g. LFP 16S1P)"),
    ("bat_nominal", N_NOMINAL, 1, "u16", _FACTORY, "Battery code: nominal voltage, 0.01 V"),
    ("bat_capacity", N_CAPACITY, 1, "u16", _FACTORY, "Battery code: nameplate capacity, 0.1 Ah"),
    ("bat_maker", N_MAKER, 8, "ascii", _FACTORY, "Battery code: maker"),
    ("bat_date", N_DATE, 6, "ascii", _FACTORY, "Battery code: production date, YYYY-MM-DD"),
)


def _row(o):
    for r in FIELDS:
        if r[1] <= o < r[1] + r[2]:
            return r
    return None


def _text(rm, name, n):
    return rm.info.field(name, n)


def _num(rm, name):
    return rm.info.num(name) & 0xFFFF


def read(rm, off, count, out, pos):
    return rows.fields(FIELDS, SIZE, rm, _text, _num, off, count, out, pos)


def write(rm, off, count, data, pos):
    r = _row(off)
    if r is None or r[1] != off or count > r[2]:
        return rm.refuse(codes.EX_ADDRESS, -1, "write one field from its first register")
    role = codes.ROLE_FACTORY if r[4] == _FACTORY else codes.ROLE_USER
    if not rm.allowed(role):
        if role == codes.ROLE_FACTORY:
            return rm.refuse(codes.EX_FUNCTION, -1, "locked: %s needs the factory role" % r[0])
        return rm.locked()
    if r[3] == "ascii":
        text = codes.ascii_of(data, pos, count)
        if not codes.printable(text):
            return rm.refuse(codes.EX_VALUE, -1, "%s: printable ASCII only" % r[0])
        if r[1] == N_BLE and not 1 <= len(text) <= _BLE_MAX:
            return rm.refuse(codes.EX_VALUE, -1, "ble_name: 1 to %d characters" % _BLE_MAX)
        info = rm.info
        info.field(r[0], r[2])
        info.set(r[0], text)
    else:
        rm.info.set_num(r[0], get16(data, pos))
    return codes.EX_NONE


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + o, name, typ, n, "", "R/W factory" if w else "R/W user", "", "", desc)
            for name, o, n, typ, w, desc in FIELDS]
    return "Names and battery code", section(rows), rows
