"""Temperature block: every sensor's value, status and role, read only."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

T_COUNT = const(0)      # sensors fitted
T_VALUE = const(1)      # 16 x s16, 0.1 degC
T_STATUS = const(17)    # 16 x u16: 0 ok, 1 open, 2 short, 3 no data
T_ROLE = const(33)      # 16 x u16: measurements.ROLE_NAMES
MAX_TEMPS = const(16)
SIZE = const(49)
T_STATUS_NAMES = ("ok", "open", "short", "no_data")


def _reg(m, o):
    n = m.n_temps
    if o == T_COUNT:
        return n
    if T_VALUE <= o < T_VALUE + MAX_TEMPS:
        i = o - T_VALUE
        return m.temp_dc[i] & 0xFFFF if i < n else 0
    if T_STATUS <= o < T_STATUS + MAX_TEMPS:
        i = o - T_STATUS
        return m.temp_status[i] if i < n else 3
    if T_ROLE <= o < T_ROLE + MAX_TEMPS:
        i = o - T_ROLE
        return m.temp_role[i] if i < n else 0
    return 0


def read(rm, off, count, out, pos):
    m = rm.bms.meas
    for k in range(count):
        put16(out, pos + 2 * k, _reg(m, off + k))
    return codes.EX_NONE


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
