"""Temperature block: every sensor's value, status and role, read only."""
from micropython import const

from comms.regs import codes, rows

T_COUNT = const(0)      # sensors fitted
T_VALUE = const(1)      # 16 x s16, 0.1 degC
T_STATUS = const(17)    # 16 x u16: 0 ok, 1 open, 2 short, 3 no data
T_ROLE = const(33)      # 16 x u16: measurements.ROLE_NAMES
MAX_TEMPS = const(16)
SIZE = const(49)
T_STATUS_NAMES = ("ok", "open", "short", "no_data")


# One register a row, its value at the same index: the row machinery of
# comms.regs.rows places them (viper on a board; the per-register function
# calls took 2.6 ms for the block on an RP2040, emulated).
_LAYOUT = rows.flat(SIZE)
_VALS = rows.values(_LAYOUT)


def _fill(m, v):
    n = m.n_temps
    v[T_COUNT] = n
    dc = m.temp_dc
    st = m.temp_status
    role = m.temp_role
    for i in range(MAX_TEMPS):
        if i < n:
            v[T_VALUE + i] = dc[i] & 0xFFFF
            v[T_STATUS + i] = st[i]
            v[T_ROLE + i] = role[i]
        else:
            v[T_VALUE + i] = 0
            v[T_STATUS + i] = 3
            v[T_ROLE + i] = 0


def read(rm, off, count, out, pos):
    _fill(rm.bms.meas, _VALS)
    return rows.pack(_LAYOUT, _VALS, off, count, out, pos)


write = codes.read_only


def doc(start):
    from bms.measurements import ROLE_NAMES as TR
    from comms.regdoc import row
    st = ", ".join("%d %s" % (j, s) for j, s in enumerate(T_STATUS_NAMES))
    rows = [row(start + T_COUNT, "temp_count", "u16", 1, "", "R", "", "",
                "Temperature sensors fitted")]
    for k in range(MAX_TEMPS):
        rows.append(row(start + T_VALUE + k, "temp%d" % (k + 1), "s16", 1, "0.1degC", "R", "", "",
                        "Sensor %d temperature" % (k + 1)))
    for k in range(MAX_TEMPS):
        rows.append(row(start + T_STATUS + k, "temp%d_status" % (k + 1), "u16", 1, "enum", "R",
                        "", "", "Sensor %d status: %s" % (k + 1, st)))
    for k in range(MAX_TEMPS):
        rows.append(row(start + T_ROLE + k, "temp%d_role" % (k + 1), "u16", 1, "enum", "R", "", "",
                        "Sensor %d role: %s" % (k + 1, ", ".join(
                            "%d %s" % (j, s) for j, s in enumerate(TR)))))
    md = ("Sensor *k* (1-based): value at `0x%04X + k` (s16, 0.1 degC), status at `0x%04X + k` "
          "(%s), role at `0x%04X + k`; `0x%04X` holds the number of sensors.\n"
          % (start + T_VALUE - 1, start + T_STATUS - 1, st, start + T_ROLE - 1, start))
    return "Temperature sensors", md, rows
