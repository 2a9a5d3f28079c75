"""The narrow cell-AFE interface every front-end driver implements.

Shaped after LibreSolar's ``bms_ic`` API: the board builds the driver with its
bus, the core talks to it only through these calls, in our fixed units (mV,
mA, 0.1 degC).

    configure(conf) -> dict   apply a configuration, return what the chip
                              actually applied (thresholds are quantised to the
                              chip's steps and clamped to its ranges; read back
                              from the chip where it can be read back)
    read_cells(cell_mv, n)    fill cell_mv[0:n] (caller-owned array('H'), mV);
                              returns n
    read_temps(temp_dc)       fill AFE-side temperatures (die, thermistor
                              inputs) in 0.1 degC into a caller-owned
                              array('h'); returns how many were written
    read_current() -> int     mA, + = charging (chips with a coulomb counter)
    balance(flags)            bytearray, one 0/1 per cell; ValueError if the
                              chip (or our policy for it) forbids the pattern,
                              e.g. two adjacent bleeders
    set_switches(chg, dsg)    drive the chip's FET drivers (if it has them)
    set_mode(mode)            MODE_NORMAL / MODE_SLEEP / MODE_SHUTDOWN
    fault() -> int            FAULT_* bit field of hardware trips now active
    clear_fault()             ask the chip to recover latched trips

Counters ``crc_errors`` (CRC/PEC/checksum mismatches seen) and ``retries``
(transactions repeated) only ever grow.  A bus failure (NACK, timeout, CRC
still bad after ``retry_limit`` repeats) raises OSError, like machine.I2C
does, so the board reports a sensor fault and the core goes to its safe state.
Optional operations raise NotImplementedError.

Protection policy (which thresholds the chip gets from our parameters: the
hardware backstop) is not a driver's business: ``bms.backstop`` computes it
and the board hands the driver plain numbers through ``configure``.
"""
from micropython import const

MODE_NORMAL = const(0)
MODE_SLEEP = const(1)
MODE_SHUTDOWN = const(2)

FAULT_SCD = const(0x001)   # short circuit in discharge
FAULT_OCD = const(0x002)   # over-current in discharge
FAULT_OCC = const(0x004)   # over-current in charge
FAULT_OV = const(0x008)    # cell over-voltage
FAULT_UV = const(0x010)    # cell under-voltage
FAULT_OT = const(0x020)    # over-temperature (cells, FET or die)
FAULT_UT = const(0x040)    # under-temperature
FAULT_OPEN_WIRE = const(0x080)
FAULT_OTHER = const(0x100)  # watchdog, permanent fail, internal
FAULT_NAMES = ("SCD", "OCD", "OCC", "OV", "UV", "OT", "UT", "OPEN_WIRE", "OTHER")

def fault_names(bits):
    out = []
    for i in range(len(FAULT_NAMES)):
        if bits & (1 << i):
            out.append(FAULT_NAMES[i])
    return out


def check_no_adjacent(flags, n):
    """ValueError if two neighbouring cells of flags[0:n] are both set."""
    prev = 0
    for i in range(n):
        f = flags[i]
        if f and prev:
            raise ValueError("adjacent cells %d and %d both balancing" % (i, i + 1))
        prev = f


class Afe:
    """Base class: every operation is optional until a driver provides it."""

    max_cells = 0
    balance_no_adjacent = True
    retry_limit = 3

    def __init__(self):
        self.crc_errors = 0
        self.retries = 0

    def configure(self, conf):
        raise NotImplementedError

    def read_cells(self, cell_mv, n):
        raise NotImplementedError

    def read_temps(self, temp_dc):
        raise NotImplementedError

    def read_current(self):
        raise NotImplementedError

    def balance(self, flags):
        raise NotImplementedError

    def set_switches(self, chg, dsg):
        raise NotImplementedError

    def set_mode(self, mode):
        raise NotImplementedError

    def fault(self):
        raise NotImplementedError

    def clear_fault(self):
        raise NotImplementedError
