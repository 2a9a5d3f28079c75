"""Row tables (monitor, status): values placed as big-endian registers in any
window, by the viper loop on MicroPython and the bytecode loop elsewhere."""
import sys

from bms import faults as F
from comms.registers import A_MON, A_STATUS, monitor_address
from comms.regs import rows, status
from comms.regs.monitor import SIZE as MON_SIZE
from modbus_rig import ModbusRig

ROWS = (
    ("a", "u16", "", "", 3),
    ("b", "s32", "", "", 0),
    ("c", "s16", "", "", 5),
    ("d", "u32", "", "", 1),
    ("e", "bits", "", "", 2),
    ("f", "s32", "", "", 4),
)
VALUES = {3: 0xBEEF, 0: -123456, 5: -2, 1: 0x7FFFFFFF, 2: 0x8001, 4: 1}


def _words(typ, v):
    # The registers of one row, from the Modbus convention: 16-bit words,
    # high word first for 32-bit values, two's complement for signed ones.
    if typ in ("u32", "s32"):
        v &= 0xFFFFFFFF
        return [v >> 16, v & 0xFFFF]
    return [v & 0xFFFF]


def _expected():
    regs = []
    for _n, typ, _u, _d, key in ROWS:
        regs += _words(typ, VALUES[key])
    return regs


def _regs(buf, pos, count):
    return [(buf[pos + 2 * i] << 8) | buf[pos + 2 * i + 1] for i in range(count)]


def _filled(lay):
    v = rows.values(lay)
    for k, x in VALUES.items():
        v[k] = x
    return v


def test_every_window_holds_the_rows_words():
    lay = rows.Layout(ROWS)
    assert lay.size == 9 and lay.keys == 6
    vals = _filled(lay)
    whole = _expected()
    for off in range(lay.size):
        for count in range(0, lay.size - off + 1):
            out = bytearray(2 * count + 3)
            for i in range(len(out)):
                out[i] = 0xA5
            assert rows.pack(lay, vals, off, count, out, 1) == 0
            assert _regs(out, 1, count) == whole[off:off + count], (off, count)
            # nothing outside the window is touched
            assert out[0] == 0xA5 and out[-2] == 0xA5 and out[-1] == 0xA5


def test_the_fast_loop_matches_the_bytecode_loop():
    if sys.implementation.name == "micropython":
        from comms.regs import pack_viper
        assert rows._loop is pack_viper.pack_loop    # the unix port has viper (x64)
    lay = rows.Layout(ROWS)
    vals = _filled(lay)
    for off in range(lay.size):
        for count in range(lay.size - off + 1):
            a = bytearray(2 * count)
            b = bytearray(2 * count)
            rows.pack(lay, vals, off, count, a, 0)
            rows.pack_bytecode(vals, lay.first, lay.wide, lay.key, len(lay.wide), off,
                               off + count, b, 0)
            assert a == b, (off, count)


def test_a_range_outside_the_table_or_the_buffer_is_refused():
    # The fast loop writes through raw pointers: a bad range must never reach it.
    lay = rows.Layout(ROWS)
    vals = _filled(lay)
    for off, count, n, pos in ((0, 10, 20, 0), (8, 2, 4, 0), (-1, 2, 4, 0), (0, 4, 7, 0),
                               (0, 2, 4, 1), (0, 1, 2, -1), (0, -1, 2, 0)):
        try:
            rows.pack(lay, vals, off, count, bytearray(n), pos)
        except IndexError:
            continue
        raise AssertionError("accepted %r" % ((off, count, n, pos),))
    short = rows.values(rows.Layout(ROWS[:2]))
    try:
        rows.pack(lay, short, 0, 2, bytearray(4), 0)
    except IndexError:
        return
    raise AssertionError("accepted a value array shorter than the keys")


def test_fault_words_and_flags_follow_every_active_fault():
    # docs: bit b of word k is fault id 16k + b; protection = level >= L_PROT,
    # alarm = warnings.  A cell above OV1 raises OV1 (protection) and its
    # warning (id >= 16, the second word).
    r = ModbusRig(mv=3300)
    r.run(2000)
    m = r.read(A_MON, MON_SIZE)
    st = r.read(A_STATUS, status.SIZE)
    off = status.offsets()
    for k in (0, 1):
        for name in ("faults", "protection", "alarm"):
            assert m[monitor_address("%s_%d" % (name, k)) - A_MON] == 0
    assert st[off[8]] == 0 and st[off[9]] == 0
    r.board.cells[2] = 3700
    r.run(7000)
    prot = r.bms.prot
    want = {"faults": [0, 0], "protection": [0, 0], "alarm": [0, 0]}
    for i in range(F.N_FAULTS):
        if prot.active(i):
            lvl = F.TABLE[i][F.F_LEVEL]
            want["faults"][i // 16] |= 1 << (i % 16)
            if lvl >= F.L_PROT:
                want["protection"][i // 16] |= 1 << (i % 16)
            if lvl == F.L_WARN:
                want["alarm"][i // 16] |= 1 << (i % 16)
    assert want["protection"][0] & (1 << F.OV1) and want["alarm"][1]   # the case is real
    m = r.read(A_MON, MON_SIZE)
    for name, words in want.items():
        for k in (0, 1):
            assert m[monitor_address("%s_%d" % (name, k)) - A_MON] == words[k], (name, k)
    st = r.read(A_STATUS, status.SIZE)
    assert status.STATUS[8][0] == "alarm_active" and status.STATUS[9][0] == "protection_active"
    assert st[off[8]] == 1 and st[off[9]] == 1


def test_copy_moves_exactly_the_range_and_refuses_any_other():
    if sys.implementation.name == "micropython":
        from comms.regs import pack_viper
        assert rows._copy is pack_viper.copy_loop
    src = bytes(range(1, 41))
    for spos, dpos, n in ((0, 0, 0), (0, 0, 40), (3, 5, 17), (39, 0, 1), (10, 29, 11)):
        dst = bytearray(b"\xee" * 40)
        rows.copy(dst, dpos, src, spos, n)
        want = bytearray(b"\xee" * 40)
        want[dpos:dpos + n] = src[spos:spos + n]
        assert dst == want, (spos, dpos, n)
        ref = bytearray(b"\xee" * 40)
        rows.copy_bytecode(ref, dpos, src, spos, n)
        assert ref == want
    for spos, dpos, n in ((0, 0, 41), (1, 0, 40), (0, 1, 40), (-1, 0, 2), (0, -1, 2), (0, 0, -1)):
        try:
            rows.copy(bytearray(40), dpos, src, spos, n)
        except IndexError:
            continue
        raise AssertionError("accepted %r" % ((spos, dpos, n),))


def test_cell_block_any_window_by_the_rule():
    # docs: cell n at offset n - 1, mV; 0 beyond the cell count, 0xFFFF invalid.
    from array import array

    from comms.regs import cells
    if sys.implementation.name == "micropython":
        from comms.regs import pack_viper
        assert cells._loop is pack_viper.cells_loop
    mv = array("H", [3000 + 7 * i for i in range(256)])
    ok = bytearray([0 if i in (2, 17, 40) else 1 for i in range(256)])
    n = 45

    class M:
        pass
    m = M()
    m.n_cells, m.cell_mv, m.cell_ok = n, mv, ok
    rm = M()
    rm.bms = M()
    rm.bms.meas = m
    want = [(0xFFFF if not ok[i] else mv[i]) if i < n else 0 for i in range(cells.SIZE)]
    for off, count in ((0, 1), (0, 125), (1, 3), (16, 30), (40, 10), (131, 125), (255, 1)):
        out = bytearray(2 * count + 2)
        assert cells.read(rm, off, count, out, 2) == 0
        assert _regs(out, 2, count) == want[off:off + count], (off, count)
        ref = bytearray(2 * count + 2)
        cells.read_bytecode(mv, ok, n, off, count, ref, 2)
        assert ref == out
    for off, count, size in ((250, 7, 14), (0, 4, 7), (-1, 2, 4)):
        try:
            cells.read(rm, off, count, bytearray(size), 0)
        except IndexError:
            continue
        raise AssertionError("accepted %r" % ((off, count, size),))


def test_temperature_block_any_window_matches_the_whole():
    from comms.registers import A_TEMPS
    from comms.regs import temps
    r = ModbusRig(mv=3300)
    r.run(2000)
    whole = r.read(A_TEMPS, temps.SIZE)
    n = r.bms.meas.n_temps
    assert whole[temps.T_COUNT] == n > 0
    for i in range(temps.MAX_TEMPS):
        if i < n:
            assert whole[temps.T_VALUE + i] == r.bms.meas.temp_dc[i] & 0xFFFF
            assert whole[temps.T_ROLE + i] == r.bms.meas.temp_role[i]
        else:
            assert whole[temps.T_STATUS + i] == 3 and whole[temps.T_VALUE + i] == 0
    for start in range(temps.SIZE):
        for count in (1, 5):
            if start + count <= temps.SIZE:
                assert r.read(A_TEMPS + start, count) == whole[start:start + count]


def test_names_block_fields_by_their_layout_and_any_window():
    # docs: ASCII fields at their offsets, NUL-padded; nominal and capacity
    # u16 at 40 and 41; a read may start and end inside a field.
    from comms.registers import A_NAMES
    from comms.regs import names as RN
    r = ModbusRig(mv=3300)
    r.info.field("device_name", 16)
    r.info.set("device_name", "Garage 1")
    r.info.field("bat_maker", 8)
    r.info.set("bat_maker", "EVE")
    r.info.set_num("bat_capacity", 2800)
    whole = r.read(A_NAMES, RN.SIZE)

    def text(a, n):
        b = b"".join(bytes(((w >> 8) & 0xFF, w & 0xFF)) for w in whole[a:a + n])
        return b.rstrip(b"\0")
    assert text(RN.N_DEVICE, 16) == b"Garage 1" and text(RN.N_MAKER, 8) == b"EVE"
    assert whole[RN.N_CAPACITY] == 2800
    for start in range(RN.SIZE):
        for count in (1, 3, 9):
            if start + count <= RN.SIZE:
                assert r.read(A_NAMES + start, count) == whole[start:start + count], \
                    (start, count)


def test_validity_bits_mean_valid_now_not_ever_seen():
    # docs/modbus.md, status.valid: bit 0-3 temperature roles, bit 4 cells,
    # bit 5 current.  A bit is the data being valid now, by the core's rule
    # for current_stale / cell_stale / temp_sensor: a shunt ADC that died
    # leaves its last current in the snapshot, which must not read as valid.
    r = ModbusRig(mv=3300)
    r.run(2000)
    v = r.read(A_STATUS, 1)[0]
    assert v & 0x7F == 0x77                   # power, balance, cell; cells, current, running
    r.board.fail_current = 1 << 30            # the shunt ADC stops answering
    r.run(1000)
    assert r.bms.prot.flags[F.SIG_CUR_STALE]  # the core calls it stale ...
    v = r.read(A_STATUS, 1)[0]
    assert v & status.V_CURRENT == 0, hex(v)  # ... so the register must not say valid
    assert v & status.V_CELLS and v & status.V_RUNNING
    r.board.fail_current = 0
    r.run(200)
    assert r.read(A_STATUS, 1)[0] & status.V_CURRENT
    # Cells: the AFE stops answering, the last voltages hold.
    r.board.fail_cells = 1 << 30
    r.run(2000)
    assert r.bms.prot.flags[F.SIG_CELL_STALE]
    assert r.read(A_STATUS, 1)[0] & status.V_CELLS == 0
    r.board.fail_cells = 0
    r.run(600)
    assert r.read(A_STATUS, 1)[0] & status.V_CELLS
    # Temperatures: every NTC read stops (held values), then one sensor opens.
    r.board.fail_temps = 1 << 30
    r.run(3500)
    assert r.read(A_STATUS, 1)[0] & 0x0F == 0
    r.board.fail_temps = 0
    r.run(600)
    assert r.read(A_STATUS, 1)[0] & 0x0F == 0x07
    r.board.temp_status[0] = 1                # the power board's only NTC: open
    r.run(600)
    assert r.read(A_STATUS, 1)[0] & 0x0F == 0x06   # its held value is not valid
