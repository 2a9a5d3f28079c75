"""Property tests: random parameter writes never leave an invalid set."""
from hypothesis import given, settings, strategies as st

from bms import params as P
from bms.params import ParamError, ParamSet

idx = st.integers(min_value=-2, max_value=P.N_PARAMS + 2)
val = st.integers(min_value=-40000, max_value=70000)
near = st.sampled_from(range(P.N_PARAMS)).flatmap(
    lambda i: st.tuples(st.just(i), st.integers(P.TABLE[i][2] - 5, P.TABLE[i][3] + 5)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.lists(st.lists(st.one_of(st.tuples(idx, val), near),
                                            min_size=1, max_size=6), max_size=25))
def test_random_writes_keep_the_set_valid(chem, batches):
    ps = ParamSet(chem, max_cells=32)
    for pairs in batches:
        before = list(ps.values)
        try:
            ps.set_many(pairs)
        except ParamError as e:
            assert list(ps.values) == before  # refused: nothing changed
            assert isinstance(e.reason, str) and e.reason
        else:
            for i, v in pairs:
                if i != P.P_CHEMISTRY:
                    # Later pairs for the same index win.
                    last = [w for j, w in pairs if j == i][-1]
                    assert ps[i] == last
        assert P.check(ps.values, 32) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-40000, 70000), min_size=P.N_PARAMS, max_size=P.N_PARAMS))
def test_check_agrees_with_replace(values):
    ps = ParamSet(1)
    bad = P.check(values)
    try:
        ps.replace(values)
        assert bad is None
        assert list(ps.values) == values
    except ParamError as e:
        assert bad is not None and e.index == bad[0]
