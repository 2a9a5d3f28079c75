"""The committed docs are exactly what the firmware tables generate."""
import tools  # noqa: F401
from tools import gendocs


def test_committed_docs_are_up_to_date():
    assert gendocs.stale() == [], "run `make docs` and commit docs/"


def test_csv_names_every_parameter_and_cell():
    import csv
    import io

    from bms.params import TABLE
    rows = list(csv.DictReader(io.StringIO(gendocs.gen_csv())))
    names = {(r["block"], r["name"]) for r in rows}
    for row in TABLE:
        assert ("params", row[0]) in names
    assert ("cells", "cell256") in names
    addrs = [int(r["address"]) for r in rows]
    assert len(addrs) == len(set(addrs))  # no two fields share an address
