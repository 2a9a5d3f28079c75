"""A slave module with fewer than 16 cells, wired the way TI (and
docs/wiring.md) say: the top cell on VC16.  The module must configure its
BQ76952 for its cell count, or it reads the tied input as a 0 V cell."""
from drv_fakemachine import FakeMachine

from slave.afe import SlaveAfe
from boards import slave_module as bd


def _module(cells_mv):
    fm = FakeMachine(cells_mv)
    n = len(cells_mv)
    # physical wiring: VC1..VC(n-1) and VC16 (typed from TI's guidance, not the driver)
    fm.bq.wiring = ((1 << (n - 1)) - 1) | 0x8000
    hw = bd.build(fm)
    return fm, SlaveAfe(hw["afe"], hw["ntcs"])


def test_ten_cell_module_reads_its_top_cell_from_vc16():
    from array import array
    cells = [3300 + 10 * i for i in range(10)]
    fm, a = _module(cells)
    mv = array("H", [0] * 16)
    a.read_cells(mv, 10)
    assert list(mv[:10]) == cells
    assert fm.bq.dm_get(0x9304, "<H") == 0x81FF        # VCell Mode: VC1..VC9 + VC16


def test_cell_count_change_from_the_master_reconfigures():
    from array import array
    cells = [3400 + i for i in range(16)]
    fm, a = _module(cells)
    mv = array("H", [0] * 16)
    a.read_cells(mv, 16)
    assert list(mv) == cells
    fm.bq.wiring = 0x803F                                   # rewired as 7 cells
    fm.bq.source.cells[:] = cells[:7]
    a.read_cells(mv, 7)
    assert list(mv[:7]) == cells[:7]
    assert fm.bq.dm_get(0x9304, "<H") == 0x803F
