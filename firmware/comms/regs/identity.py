"""Identity block: model, firmware, serial, manufacturing date, Bluetooth
address (ASCII), map version and sizes; serial, model, date and Bluetooth
address are writable with the factory role.  Also the objects of the FC43 /
MEI 14 device identification (``device_id``) and ``DeviceInfo``, the
identity strings, persisted through a dict-like store."""
from micropython import const

from bms.params import N_PARAMS
from comms.regs import codes, rows

_MAP_VERSION = const(1)
SIZE = const(0x40)

# name, offset, registers, type, writable (factory role), description
INFO = (
    ("model", 0x00, 16, "ascii", True, "Model name"),
    ("firmware", 0x10, 8, "ascii", False, "Firmware version"),
    ("serial", 0x18, 8, "ascii", True, "Serial number (machine code)"),
    ("mfg_date", 0x20, 6, "ascii", True, "Manufacturing date, YYYY-MM-DD"),
    ("bt_addr", 0x26, 6, "ascii", True, "Bluetooth address, 12 hex digits"),
    ("map_version", 0x2C, 1, "u16", False, "Version of this register map"),
    ("max_cells", 0x2D, 1, "u16", False, "Cells this board can measure"),
    ("temp_sensors", 0x2E, 1, "u16", False, "Temperature sensors fitted"),
    ("param_count", 0x2F, 1, "u16", False, "Rows in the parameter block"),
    ("vendor", 0x30, 8, "ascii", False, "Vendor name"),
)


def _key(name):
    """Store key of a field; the Bluetooth name shares the BLE link's own key
    (comms.ble_link NAME_KEY), so a rename over either path is the same name."""
    return "ble.name" if name == "ble_name" else "info." + name


class DeviceInfo:
    """Identity strings, optionally persisted through a dict-like ``store``."""

    def __init__(self, model="MPY-BMS", firmware="0.1.0", serial="", mfg_date="",
                 bt_addr="", vendor="micropython-bms", store=None):
        self.store = store
        self.fields = {}
        self.nums = {}    # numeric fields without a store
        vals = {"model": model, "firmware": firmware, "serial": serial,
                "mfg_date": mfg_date, "bt_addr": bt_addr, "vendor": vendor}
        for name, _off, n, typ, _w, _d in INFO:
            if typ != "ascii":
                continue
            buf = bytearray(2 * n)
            v = vals[name]
            if store is not None and store.get("info." + name) is not None:
                v = store.get("info." + name)
            self._fill(buf, v)
            self.fields[name] = buf

    @staticmethod
    def _fill(buf, v):
        if isinstance(v, str):
            v = v.encode()
        for i in range(len(buf)):
            buf[i] = v[i] if i < len(v) else 0

    def get(self, name):
        b = self.fields[name]
        n = 0
        while n < len(b) and b[n]:
            n += 1
        return bytes(b[:n]).decode()

    def set(self, name, value):
        self._fill(self.fields[name], value)
        if self.store is not None:
            # Bytes: the board's key/value store keeps ints and bytes only.
            self.store[_key(name)] = self.get(name).encode()

    def field(self, name, nregs, default=b""):
        """The buffer of text field ``name`` (``nregs`` registers), built on
        first use from the store (the names block's fields)."""
        b = self.fields.get(name)
        if b is None:
            b = bytearray(2 * nregs)
            v = self.store.get(_key(name)) if self.store is not None else None
            self._fill(b, default if v is None else v)
            self.fields[name] = b
        return b

    def field_text(self, name, nregs):
        b = self.field(name, nregs)
        n = 0
        while n < len(b) and b[n]:
            n += 1
        return bytes(b[:n]).decode()

    def num(self, name, default=0):
        v = self.store.get("info." + name) if self.store is not None else None
        if v is None:
            v = self.nums.get(name, default)
        return v

    def set_num(self, name, v):
        self.nums[name] = v
        if self.store is not None:
            self.store["info." + name] = v


def _num(rm, name):
    if name == "map_version":
        return _MAP_VERSION
    if name == "max_cells":
        return rm.bms.meas.max_cells
    if name == "temp_sensors":
        return rm.bms.meas.n_temps
    if name == "param_count":
        return N_PARAMS
    return 0


def _text(rm, name, _n):
    return rm.info.fields[name]


def read(rm, off, count, out, pos):
    return rows.fields(INFO, SIZE, rm, _text, _num, off, count, out, pos)


def write(rm, off, count, data, pos):
    for name, o, n, _typ, writable, _d in INFO:
        if o == off and writable and count <= n:
            if not rm.allowed(codes.ROLE_FACTORY):
                return rm.refuse(codes.EX_FUNCTION, -1, "locked: identity needs the factory role")
            text = codes.ascii_of(data, pos, count)
            if not codes.printable(text):
                return rm.refuse(codes.EX_VALUE, -1, "%s: printable ASCII only" % name)
            rm.info.set(name, text)
            return codes.EX_NONE
    return rm.refuse(codes.EX_ADDRESS, -1, "not a writable identity field")


def device_id(info, oid):
    """Bytes of identification object ``oid`` (FC43 / MEI 14) or None
    (allocates; rare)."""
    if oid == 0:
        return info.get("vendor").encode()
    if oid == 1:
        return info.get("model").encode()
    if oid == 2:
        return info.get("firmware").encode()
    if oid == 3:
        return b"https://github.com/micropython-bms"
    if oid == 4:
        return b"MicroPython BMS"
    if oid == 5:
        return info.get("model").encode()
    if oid == 6:
        return b"bms"
    if oid == 0x80:
        return info.get("serial").encode()
    if oid == 0x81:
        return info.get("mfg_date").encode()
    if oid == 0x82:
        return info.get("bt_addr").encode()
    return None


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + off, name, typ, n, "", "R/W factory" if w else "R", "", "", desc)
            for name, off, n, typ, w, desc in INFO]
    return "Identity", section(rows), rows
