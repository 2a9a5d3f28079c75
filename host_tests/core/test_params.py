# Parameter table and ParamSet: ranges, rules, chemistry defaults, atomicity.
from bms import params as P
from bms.params import CHEM_LFP, CHEM_LTO, CHEM_NA, CHEM_NMC, ParamError, ParamSet


def _refused(ps, pairs):
    before = list(ps.values)
    ver = ps.version
    try:
        ps.set_many(pairs)
    except ParamError as e:
        assert list(ps.values) == before
        assert ps.version == ver
        return e
    raise AssertionError("accepted %r" % (pairs,))


def test_manual_defaults_per_chemistry():
    # TOPBMS parameter sheet values, typed in from the manual (mV).
    expect = {CHEM_NMC: (4200, 4300, 4100, 2750, 2500, 3100),
              CHEM_LFP: (3650, 3750, 3550, 2500, 2250, 2900),
              CHEM_LTO: (2800, 2950, 2700, 1800, 1600, 2200)}
    for chem, vals in expect.items():
        ps = ParamSet(chem)
        got = (ps[P.P_OV1], ps[P.P_OV2], ps[P.P_OV_REC], ps[P.P_UV1], ps[P.P_UV2],
               ps[P.P_UV_REC])
        assert got == vals, (chem, got)


def test_every_chemistry_default_set_is_valid():
    for chem in (CHEM_NMC, CHEM_LFP, CHEM_LTO, CHEM_NA):
        assert P.check(P.defaults(chem)) is None, chem


def test_table_rows_are_well_formed():
    names = []
    for row in P.TABLE:
        name, unit, lo, hi, dflt, dep, text = row
        assert name not in names, name
        names.append(name)
        assert lo <= hi, name
        assert len(dflt) == 4, name
        for v in dflt:
            assert lo <= v <= hi, (name, v)
        assert -32768 <= lo and hi <= 65535, name  # fits one Modbus register
        assert text, name
    assert len(names) == P.N_PARAMS


def test_out_of_range_refused_with_reason():
    ps = ParamSet(CHEM_LFP)
    e = _refused(ps, [(P.P_OV1, 9000)])
    assert e.index == P.P_OV1
    assert "ov1" in e.reason and "range" in e.reason


def test_rule_ov2_above_ov1():
    ps = ParamSet(CHEM_LFP)
    e = _refused(ps, [(P.P_OV2, 3600)])
    assert "level 2" in e.reason or "ov2" in e.reason


def test_rule_recovery_below_ov1_and_above_uv1():
    ps = ParamSet(CHEM_LFP)
    _refused(ps, [(P.P_OV_REC, 3700)])
    _refused(ps, [(P.P_UV_REC, 2400)])
    _refused(ps, [(P.P_UV2, 2600)])


def test_multi_write_is_all_or_nothing():
    ps = ParamSet(CHEM_LFP)
    # First pair alone is fine, the second breaks a rule: nothing changes.
    _refused(ps, [(P.P_OV_DELAY, 6000), (P.P_OV2, 3000)])
    assert ps[P.P_OV_DELAY] == 5000


def test_valid_combination_applies_together():
    ps = ParamSet(CHEM_LFP)
    # Raising ov1 above the old ov2 is only valid together with ov2.
    ps.set_many([(P.P_OV1, 3700), (P.P_OV2, 3740)])
    assert ps[P.P_OV1] == 3700 and ps[P.P_OV2] == 3740
    assert ps.version == 1


def test_chemistry_change_loads_its_limits():
    ps = ParamSet(CHEM_LFP)
    ps.set(P.P_CELL_COUNT, 14)
    ps.set(P.P_CHEMISTRY, CHEM_NMC)
    assert ps[P.P_OV1] == 4200
    assert ps[P.P_CELL_COUNT] == 14  # not chemistry-dependent: kept


def test_unknown_index_and_cell_count_above_board():
    ps = ParamSet(CHEM_LFP, max_cells=16)
    e = _refused(ps, [(P.N_PARAMS, 1)])
    assert e.index == P.N_PARAMS
    e = _refused(ps, [(P.P_CELL_COUNT, 17)])
    assert "16" in e.reason


def test_listener_hears_each_change():
    heard = []
    ps = ParamSet(CHEM_LFP)
    ps.listener = lambda i, old, new: heard.append((i, old, new))
    ps.set(P.P_OV_DELAY, 7000)
    assert heard == [(P.P_OV_DELAY, 5000, 7000)]
    ps.set(P.P_OV_DELAY, 7000)  # no change, no event, no version bump
    assert len(heard) == 1 and ps.version == 1


def test_replace_refuses_invalid_stored_set():
    ps = ParamSet(CHEM_LFP)
    bad = list(P.defaults(CHEM_LFP))
    bad[P.P_OV2] = bad[P.P_OV1] - 10
    try:
        ps.replace(bad)
        raise AssertionError("accepted")
    except ParamError:
        pass
    assert ps[P.P_OV2] == 3750


def test_load_defaults_keeps_pack_size():
    ps = ParamSet(CHEM_LFP)
    ps.set_many([(P.P_CELL_COUNT, 8), (P.P_CAPACITY, 2800), (P.P_OV_DELAY, 9000)])
    ps.load_defaults(CHEM_LFP)
    assert ps[P.P_OV_DELAY] == 5000
    assert ps[P.P_CELL_COUNT] == 8 and ps[P.P_CAPACITY] == 2800
