"""Battery data block: health, capacities and cycles, read only.  The
present limits (CCL / DCL / CVL / DVL) are in the status block; the
battery's code fields (type, nominal voltage, capacity, maker, date) in the
names block.

SOH is the learned capacity over the rated one (``bms.soc.Soc.soh_pm``): 100.0 % until
a full-to-empty (or empty-to-full) run between two calibration points has
measured the capacity (``bms.soc``).  ``cal_capacity`` is that last
measurement before averaging, ``learned_capacity`` the averaged value in
use."""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

B_SOH = const(0)
B_LEARNED = const(1)     # u32 mAh
B_RATED = const(3)       # u32 mAh
B_DSG_TOTAL = const(5)   # u32 mAh
B_CAL_CAP = const(7)     # u32 mAh
B_CYCLES = const(9)
B_CAL_FULL = const(10)
B_CAL_EMPTY = const(11)
B_OCV_N = const(12)
B_OCV_LO = const(13)     # s16 0.1 mV
B_OCV_HI = const(14)
SIZE = const(15)

FIELDS = (
    ("soh", B_SOH, 1, "u16", "0.1%", "State of health: learned / rated capacity (100.0 % "
     "until a capacity was learned)"),
    ("learned_capacity", B_LEARNED, 2, "u32", "mAh", "Capacity learned between calibration "
     "points, averaged (0: not learned yet)"),
    ("rated_capacity", B_RATED, 2, "u32", "mAh", "Rated capacity (parameter capacity)"),
    ("discharged_capacity", B_DSG_TOTAL, 2, "u32", "mAh", "Charge discharged since "
     "boot (not persisted; stops at 2**30-1)"),
    ("cal_capacity", B_CAL_CAP, 2, "u32", "mAh", "Capacity measured by the last full "
     "calibration run (before averaging; 0: none yet)"),
    ("cycles", B_CYCLES, 1, "u16", "cycles", "Full discharge cycles counted"),
    ("cal_full_count", B_CAL_FULL, 1, "u16", "count", "Calibrations at full since boot"),
    ("cal_empty_count", B_CAL_EMPTY, 1, "u16", "count", "Calibrations at empty since boot"),
    ("ocv_learned_count", B_OCV_N, 1, "u16", "count", "Rests the SOC estimator learned its "
     "OCV table from since boot (relaxed rests after a full or empty anchor)"),
    ("ocv_offset_min", B_OCV_LO, 1, "s16", "0.1mV", "Learned OCV table: the lowest offset of "
     "a point from the chemistry's table (0 and 0: the bare table)"),
    ("ocv_offset_max", B_OCV_HI, 1, "s16", "0.1mV", "Learned OCV table: the highest offset"),
)


def _val(b, o):
    s = b.soc
    if o == B_SOH:
        return s.soh_pm
    if o == B_CYCLES:
        return s.cycles
    if o == B_CAL_FULL:
        return s.cal_full
    if o == B_CAL_EMPTY:
        return s.cal_empty
    if o == B_OCV_N:
        return s.ocv_learned
    if o == B_OCV_LO:
        return s.ocv_offset_dmv(False)
    if o == B_OCV_HI:
        return s.ocv_offset_dmv(True)
    if o < B_CYCLES:
        # Field by field (no tuple: reads a monitor polls allocate nothing).
        v = _u32(s, (o - B_LEARNED) >> 1)
        return v >> 16 if (o - B_LEARNED) & 1 == 0 else v
    return 0


def _u32(s, w):
    if w == 0:
        return s.learned_mah
    if w == 1:
        return s.rated_mah
    if w == 2:
        return s.total_dsg_mah
    return s.last_learned_mah


def read(rm, off, count, out, pos):
    b = rm.bms
    for k in range(count):
        put16(out, pos + 2 * k, _val(b, off + k) & 0xFFFF)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    from comms.regdoc import row, section
    rows = [row(start + o, name, typ, n, unit, "R", "", "", desc)
            for name, o, n, typ, unit, desc in FIELDS]
    return "Battery data", section(rows), rows
