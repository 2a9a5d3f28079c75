"""Modules block: the CAN slave modules of a master board, read only.

Filled from ``comms.can_master.CanMaster`` (``board.master``): a header with
the layout and the internal bus state, then ``MOD_STRIDE`` registers per
module (state, cells, data age, lost count, faults, balancing,
temperatures, firmware version); a board without slave modules reads
module_count 0 and zeros elsewhere.  The name tuples below mirror
can_master / can_ids / can_guard constants without importing them (a
single board need not load the CAN master); host_tests/upy/test_can_modregs.py
checks that they agree.
"""
from micropython import const

from comms.packing import put16be as put16
from comms.regs import codes

_MH_COUNT = const(0)
_MH_MODULE_CELLS = const(1)
_MH_TOTAL_CELLS = const(2)
_MH_OK = const(3)
_MH_COMM_FAULT = const(4)
_MH_CONFIG_OK = const(5)
_MH_CAN_STATE = const(6)
_MH_BUS_OFF = const(7)
_MH_TX_FAIL = const(8)
_MH_RX_FRAMES = const(9)     # u32
_MH_TEC = const(11)
_MH_REC = const(12)
_MH_RX_OVERFLOW = const(13)
_MH_TIMEOUT = const(14)
_MH_PERIOD = const(15)
MOD_HEAD_SIZE = const(16)
MOD_STRIDE = const(16)
MOD_MAX = const(16)
SIZE = const(272)           # MOD_HEAD_SIZE + MOD_STRIDE * MOD_MAX
_M_STATE = const(0)
_M_WHY = const(1)
_M_FIRST = const(2)
_M_CELLS = const(3)
_M_AGE = const(4)
_M_LOST = const(5)
_M_FAULTS = const(6)
_M_SLAVE_STATE = const(7)
_M_BAL = const(8)
_M_N_TEMPS = const(9)
_M_TEMP = const(10)          # 4 x s16
_M_VERSION = const(14)       # 2 registers
MOD_TEMPS = const(4)
AGE_NEVER = const(0xFFFF)   # no complete sweep received since boot
_AGE_MAX = const(0xFFFE)     # ages above 6553.4 s read as this
MOD_TEMP_ABSENT = const(-32768)
MOD_TEMP_OPEN = const(32767)
MOD_TEMP_SHORT = const(32766)

MOD_STATE_NAMES = ("absent", "ok", "lost", "bad")            # can_master.MS_*
_MS_OK = const(1)
MOD_WHY_BITS = ("cell_count", "afe", "echo", "frames", "config", "two_modules")  # can_master.W_*
MOD_FAULT_BITS = ("ov", "uv", "ot", "tsensor", "afe", "master_lost", "defaults", "wiring")  # can_ids.LF_*
SLAVE_STATE_NAMES = ("boot", "run", "sleep", "fault")       # can_ids.ST_* (bits 0-3)
CAN_STATE_NAMES = ("error_active", "error_warning", "error_passive", "bus_off")

# name, offset, registers, type, unit, description
MOD_HEAD = (
    ("module_count", _MH_COUNT, 1, "u16", "modules",
     "Slave modules configured (0: this board has no CAN slave modules)"),
    ("module_cells", _MH_MODULE_CELLS, 1, "u16", "cells",
     "Cells per module as configured (the last module takes the remainder)"),
    ("module_total_cells", _MH_TOTAL_CELLS, 1, "u16", "cells", "Cells over all modules"),
    ("modules_ok", _MH_OK, 1, "u16", "modules", "Modules whose data is trusted now"),
    ("module_comm_fault", _MH_COMM_FAULT, 1, "u16", "bool",
     "A module is not ok (raises the COMM fault)"),
    ("module_config_ok", _MH_CONFIG_OK, 1, "u16", "bool",
     "cell_count / module_cells fit the module count fixed at boot"),
    ("can_state", _MH_CAN_STATE, 1, "u16", "enum",
     "Internal CAN controller state: {can_state_names}"),
    ("can_bus_off_count", _MH_BUS_OFF, 1, "u16", "count", "Bus-off events since boot"),
    ("can_tx_fail", _MH_TX_FAIL, 1, "u16", "count", "Frames not queued (no TX buffer), wraps"),
    ("can_rx_frames", _MH_RX_FRAMES, 2, "u32", "count", "Frames received since boot (wraps at 2**30)"),
    ("can_tec", _MH_TEC, 1, "u16", "count", "Controller transmit error counter"),
    ("can_rec", _MH_REC, 1, "u16", "count", "Controller receive error counter"),
    ("can_rx_overflow", _MH_RX_OVERFLOW, 1, "u16", "count", "Frames lost to a full RX buffer"),
    ("module_timeout", _MH_TIMEOUT, 1, "u16", "ms", "A module silent this long is lost"),
    ("module_sweep", _MH_PERIOD, 1, "u16", "ms", "Sweep (SYNC) period"),
)
# Module k (1-based) at A_MODS + MOD_HEAD_SIZE + MOD_STRIDE * (k - 1) + offset.
MOD_FIELDS = (
    ("state", _M_STATE, 1, "u16", "enum", "Module state: {module_state_names}"),
    ("why", _M_WHY, 1, "bits", "bits", "Why it is not ok: {module_why_bits}"),
    ("first_cell", _M_FIRST, 1, "u16", "cell", "Its first cell, 1-based pack cell number"),
    ("cells", _M_CELLS, 1, "u16", "cells", "Its cell count (expected)"),
    ("age", _M_AGE, 1, "u16", "0.1s",
     "Time since its last complete sweep (65534: or more, 65535: none yet)"),
    ("lost_count", _M_LOST, 1, "u16", "count", "Times it went silent since boot"),
    ("faults", _M_FAULTS, 1, "bits", "bits", "Faults it reports: {module_fault_bits}"),
    ("slave_state", _M_SLAVE_STATE, 1, "u16", "enum",
     "Its own state, bits 0-3: {slave_state_names}; bit 4 cell count locked, "
     "bit 5 auto-addressed"),
    ("balance", _M_BAL, 1, "bits", "bits", "Bleeders on, bit j = its cell j + 1"),
    ("temp_count", _M_N_TEMPS, 1, "u16", "sensors", "Temperature sensors it reports"),
    ("temp1", _M_TEMP, 1, "s16", "0.1degC", "Sensor 1 (-32768 absent, 32767 open, 32766 short)"),
    ("temp2", _M_TEMP + 1, 1, "s16", "0.1degC", "Sensor 2 (-32768 absent, 32767 open, 32766 short)"),
    ("temp3", _M_TEMP + 2, 1, "s16", "0.1degC", "Sensor 3 (-32768 absent, 32767 open, 32766 short)"),
    ("temp4", _M_TEMP + 3, 1, "s16", "0.1degC", "Sensor 4 (-32768 absent, 32767 open, 32766 short)"),
    ("version", _M_VERSION, 2, "u32", "",
     "Firmware major, minor, patch, protocol (one byte each; 0: not read yet)"),
)


def _master_of(bms):
    """The board's CAN master (``board.master``) or None on a single board."""
    m = getattr(getattr(bms, "board", None), "master", None)
    if m is None or getattr(m, "mod_state", None) is None:
        return None
    return m


def _mods_head(ms, o):
    if o == _MH_COUNT:
        return ms.n_modules
    if o == _MH_MODULE_CELLS:
        return ms.mod_cells[0] if ms.config_ok else 0
    if o == _MH_TOTAL_CELLS:
        return ms.total_cells
    if o == _MH_OK:
        n = 0
        st = ms.mod_state
        for k in range(ms.n_modules):
            if st[k] == _MS_OK:
                n += 1
        return n
    if o == _MH_COMM_FAULT:
        return 1 if ms.comm_fault else 0
    if o == _MH_CONFIG_OK:
        return 1 if ms.config_ok else 0
    if o == _MH_CAN_STATE:
        return ms.guard.state
    if o == _MH_BUS_OFF:
        return ms.guard.bus_off_count
    if o == _MH_TX_FAIL:
        return ms.tx_fail
    if o == _MH_RX_FRAMES:
        return ms.rx_frames >> 16
    if o == _MH_RX_FRAMES + 1:
        return ms.rx_frames
    if o == _MH_TEC:
        return getattr(ms.ctrl, "tec", 0)
    if o == _MH_REC:
        return getattr(ms.ctrl, "rec", 0)
    if o == _MH_RX_OVERFLOW:
        return getattr(ms.ctrl, "rx_overflow", 0)
    if o == _MH_TIMEOUT:
        return ms.timeout if ms.timeout < 0xFFFF else 0xFFFF
    if o == _MH_PERIOD:
        return ms.period
    return 0


def _mods_field(ms, k, f, now):
    if f == _M_STATE:
        return ms.mod_state[k]
    if f == _M_WHY:
        return ms.mod_why[k]
    if f == _M_FIRST:
        return ms.mod_first[k] + 1 if ms.mod_cells[k] else 0
    if f == _M_CELLS:
        return ms.mod_cells[k]
    if f == _M_AGE:
        if not ms.mod_full_ever[k]:
            return AGE_NEVER
        a = ms.module_age_ms(k, now)
        if a < 0:
            return 0
        a //= 100
        return a if a < _AGE_MAX else _AGE_MAX
    if f == _M_LOST:
        return ms.mod_lost_count[k]
    if f == _M_FAULTS:
        return ms.mod_faults[k]
    if f == _M_SLAVE_STATE:
        return ms.mod_slave_state[k]
    if f == _M_BAL:
        return ms.mod_bal[k]
    if f == _M_N_TEMPS:
        return ms.mod_n_temps[k]
    if _M_TEMP <= f < _M_TEMP + MOD_TEMPS:
        return ms.temp_dc[MOD_TEMPS * k + f - _M_TEMP]
    if f == _M_VERSION or f == _M_VERSION + 1:
        j = 4 * k + 2 * (f - _M_VERSION)
        v = ms.mod_version
        return (v[j] << 8) | v[j + 1]
    return 0


def read(rm, off, count, out, pos):
    """Fill ``count`` registers of the modules block (allocation-free)."""
    ms = _master_of(rm.bms)
    now = rm.bms.clock.ticks_ms() if ms is not None else 0
    for i in range(count):
        o = off + i
        v = 0
        if ms is not None:
            if o < MOD_HEAD_SIZE:
                v = _mods_head(ms, o)
            else:
                k = (o - MOD_HEAD_SIZE) // MOD_STRIDE
                if k < ms.n_modules:
                    v = _mods_field(ms, k, o - MOD_HEAD_SIZE - k * MOD_STRIDE, now)
        put16(out, pos + 2 * i, v & 0xFFFF)
    return codes.EX_NONE


write = codes.read_only


def doc(start):
    """Header registers, then every field of module 1..16 (one CSV row each)."""
    from comms.regdoc import doc as resolve, md_table, row
    rows = [row(start + off, name, typ, n, unit, "R", "", "", desc)
            for name, off, n, typ, unit, desc in MOD_HEAD]
    for k in range(MOD_MAX):
        base = start + MOD_HEAD_SIZE + MOD_STRIDE * k
        for name, off, n, typ, unit, desc in MOD_FIELDS:
            rows.append(row(base + off, "module%d.%s" % (k + 1, name), typ, n, unit, "R", "", "",
                            desc))
    o = ["Read only.  On a master board with CAN slave modules (`comms.can_master`) the header "
         "gives the layout and the internal bus state; module *k* (1-based) follows at `0x%04X + "
         "%d * (k - 1)`, %d registers each.  Modules beyond `module_count` read 0; a board "
         "without slave modules reads `module_count` 0.  A module's cells are pack cells "
         "`first_cell .. first_cell + cells - 1` of the cells block.\n\n"
         % (start + MOD_HEAD_SIZE, MOD_STRIDE, MOD_STRIDE)]
    o.append(md_table(["address", "name", "type", "regs", "unit", "description"],
                      [("0x%04X" % r[0], r[2], r[3], r[4], r[5], r[9]) for r in rows
                       if r[0] < start + MOD_HEAD_SIZE]))
    o.append("\nPer module, offset from the module's first register:\n\n")
    o.append(md_table(["offset", "name", "type", "regs", "unit", "description"],
                      [(off, name, typ, n, unit, resolve(desc))
                       for name, off, n, typ, unit, desc in MOD_FIELDS]))
    return "Slave modules (CAN)", "".join(o), rows
