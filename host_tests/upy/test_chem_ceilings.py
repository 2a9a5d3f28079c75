# Chemistry ceilings (docs/parameters.md): the user role cannot set limits
# beyond a chemistry's datasheet window; only the factory role's custom_chem
# lifts them, and that change is logged.  Written from the examples
# (LFP with ov1 4500 / ov2 4800 mV, lt_chg -30 degC).  MicroPython-compatible.
from bms import params as P
from bms.eventlog import EV_PARAM
from comms.registers import A_PARAMS
from modbus_rig import ModbusRig, crc_ok, exception_code


def _refused(ps, pairs, factory=False):
    try:
        ps.set_many(pairs, factory)
    except P.ParamError as e:
        return e
    raise AssertionError("accepted %r" % (pairs,))


def test_lfp_refuses_nmc_voltages_and_frozen_charging():
    ps = P.ParamSet(P.CHEM_LFP)
    e = _refused(ps, [(P.P_OV1, 4500), (P.P_OV2, 4800), (P.P_OV_REC, 4400),
                      (P.P_BAL_START, 4300)])
    assert e.index == P.P_OV2 and "ceiling" in e.reason
    e = _refused(ps, [(P.P_LT_CHG, -30), (P.P_LT_CHG_REC, -15), (P.P_LT_DSG, -40),
                      (P.P_LT_DSG_REC, -35)])
    assert e.index == P.P_LT_CHG
    _refused(ps, [(P.P_T_CHG_OT, 62), (P.P_T_CHG_REC, 57)])
    _refused(ps, [(P.P_UV2, 1500), (P.P_UV1, 2000)])
    _refused(ps, [(P.P_DIFF_PROT, 1500)])
    assert ps[P.P_OV2] == 3750 and ps[P.P_LT_CHG] == 0   # nothing changed


def test_every_chemistry_default_is_inside_its_ceilings():
    for chem in range(4):
        assert P.check(P.defaults(chem)) is None, chem


def test_custom_chem_needs_the_factory_role_and_lifts_the_ceilings():
    ps = P.ParamSet(P.CHEM_LFP)
    e = _refused(ps, [(P.P_CUSTOM_CHEM, 1)])
    assert "factory" in e.reason
    ps.set_many([(P.P_CUSTOM_CHEM, 1)], True)
    ps.set_many([(P.P_OV1, 4000), (P.P_OV2, 4100), (P.P_OV_REC, 3900)])
    assert ps[P.P_OV2] == 4100
    # Switching it off again is refused while a value is beyond the ceiling.
    _refused(ps, [(P.P_CUSTOM_CHEM, 0)], True)


def test_modbus_user_cannot_lift_the_ceiling_factory_can_and_it_is_logged():
    r = ModbusRig()
    r.unlock()
    resp = r.write_n(A_PARAMS + P.P_OV1, [4500, 4800])
    assert exception_code(resp, 16) == 3
    assert r.params[P.P_OV2] == 3750
    resp = r.write1(A_PARAMS + P.P_CUSTOM_CHEM, 1)
    assert exception_code(resp, 6) == 3
    assert r.params[P.P_CUSTOM_CHEM] == 0
    r.unlock(b"factory1")
    resp = r.write1(A_PARAMS + P.P_CUSTOM_CHEM, 1)
    assert crc_ok(resp) and resp[1] == 6
    assert r.params[P.P_CUSTOM_CHEM] == 1
    assert [e for e in r.log.find(EV_PARAM) if e[3] == P.P_CUSTOM_CHEM]
    resp = r.write_n(A_PARAMS + P.P_OV1, [3900, 4000])
    assert crc_ok(resp) and resp[1] == 16


def test_stored_settings_beyond_a_ceiling_are_replaced_at_load():
    from bms.store import migrate
    v = P.defaults(P.CHEM_LFP)
    pairs = [(P.TABLE[i][0], v[i]) for i in range(P.N_PARAMS)]
    pairs = [(n, 4800 if n == "ov2" else (-30 if n == "lt_chg" else x)) for n, x in pairs]
    values, report = migrate(pairs)
    assert values[P.P_OV2] == 3750 and values[P.P_LT_CHG] == 0
    assert P.check(values) is None
    assert [x for x in report if x[0] == "ov2"]
