"""Two (or more) cell AFEs stacked into one: 17S-32S on a single board.

A BQ76952 measures at most 16 cells, so the 21S-32S single board (TOPBMS
21S-32S manual) carries two of them in series: the bottom chip sits on B- and
measures cells 1..n0 and the pack shunt (SRP/SRN); the top chip's VSS is the
bottom chip's top cell tap and it measures cells n0+1..n.  The top chip has
the same fixed address 0x08 and floats up to half the pack voltage, so it has
its own I2C bus behind a digital isolator (docs/wiring.md).  ``AfeStack``
presents the chips as one AFE behind the narrow interface of drivers.afe.

Cell split (``split(n)``): fill from the bottom, as the TOPBMS manual does
when its 32S board is used for 31S..21S.
Each chip takes as many cells as it can (16 for a BQ76952) while leaving at
least ``CHIP_MIN_CELLS`` (3, the BQ76952's minimum) for every chip above it;
the top chip takes the rest.  Two BQ76952:

    n       bottom  top       n       bottom  top
    6..18   n - 3   3         19..32  16      n - 16

So 21S..32S always have 16 cells on the bottom chip and 5..16 on the top
one; 17S and 18S put 3 cells on the top chip.  Unlike the manual's "extra
wires to the pack positive", a chip's unused inputs go to the negative of
its top cell: TI requires a real cell between VC15 and VC16, so only VC16
goes to the pack positive (docs/wiring.md has the table).  Fewer than 6 cells
cannot be measured (each chip needs 3 cells to run): configure() raises
ValueError.  Within each chip the drivers' own channel rule applies
(bottom cells on VC1.., the chip's top cell on VC16).

What goes to which chip:
  configure(conf)   cells split as above; the bottom chip gets the whole
                    configuration (cell and current protections, the shunt);
                    the top chip gets the cell-voltage protections only:
                    its SRP/SRN are shorted (no shunt on that level), so its
                    coulomb counter reads zero and a current protection
                    there could only trip on noise - OCC/OCD1/SCD stay
                    disabled in its Enabled Protections A.
  read_cells        each chip into its own preallocated scratch, copied in
                    order into the caller's array (no allocation)
  read_temps        chip k's values at [4k .. 4k+3] (die, TS1..TS3 each)
  read_current      bottom chip only (the shunt is there)
  read_stack_mv     sum of the chips' stacks
  balance(flags)    split into preallocated per-chip bytearrays; every chip's
                    own adjacency rule is checked before any chip is written
                    (cells on different chips do not share a VC pin)
  set_switches      one chip only, ``fet_chip`` (default 0, the bottom one,
                    which also sees the shunt); the reference board switches
                    relays and does not use it.  High-side FETs at the pack
                    positive could only be driven by the top chip (its BAT
                    is the pack positive): pass fet_chip=-1 for such a board
  fault()           OR of the chips' bits; current bits only from the bottom
  set_mode, clear_fault   every chip; all are tried, then the first
                    OSError is raised
  crc_errors, retries     sums over the chips

A chip that stops answering raises OSError out of every call that needs it,
like a single AFE: the board reports stale data and the core goes to its
safe state (relays open) - also when only the top chip is gone.
"""
from array import array

from micropython import const

from drivers.afe import FAULT_OCC, FAULT_OCD, FAULT_SCD, Afe, check_no_adjacent

CHIP_MIN_CELLS = const(3)     # BQ76952: 3S..16S
_CURRENT_FAULTS = FAULT_SCD | FAULT_OCD | FAULT_OCC
_CURRENT_KEYS = ("occ_ma", "occ_delay_ms", "ocd1_ma", "ocd1_delay_ms", "scd_ma", "scd_delay_us")
_TEMPS_PER_CHIP = const(4)


def split(n, maxes, min_cells=CHIP_MIN_CELLS):
    """Cells per chip (bottom first) for n cells on chips of ``maxes`` cells:
    fill from the bottom, leaving min_cells for every chip above."""
    k = len(maxes)
    if n < min_cells * k or n > sum(maxes):
        raise ValueError("%d chips measure %d..%d cells, not %d" % (k, min_cells * k, sum(maxes), n))
    out = []
    left = n
    for i in range(k):
        above = k - 1 - i
        if above == 0:
            take = left
        else:
            take = min(maxes[i], left - min_cells * above)
        out.append(take)
        left -= take
    return out


class AfeStack(Afe):
    def __init__(self, afes, fet_chip=0):
        if len(afes) < 2:
            raise ValueError("a stack needs at least two AFEs")
        self.afes = list(afes)
        self.bottom = self.afes[0]
        self.fet_afe = self.afes[fet_chip]
        self.max_cells = 0
        self.min_cells = CHIP_MIN_CELLS * len(self.afes)   # see split()
        no_adj = False
        for a in self.afes:
            self.max_cells += a.max_cells
            no_adj = no_adj or getattr(a, "balance_no_adjacent", True)
        self.balance_no_adjacent = no_adj
        self._maxes = [a.max_cells for a in self.afes]
        # Per-chip scratch, sized once: read_cells and balance never allocate.
        self._mv = [array("H", [0] * a.max_cells) for a in self.afes]
        self._bal = [bytearray(a.max_cells) for a in self.afes]
        self._t = array("h", [0] * 8)
        self.counts = array("B", [0] * len(self.afes))
        self.cells = 0
        n = 0
        for i in range(len(self.afes)):
            c = getattr(self.afes[i], "cells", 0)
            self.counts[i] = c
            n += c
        self.cells = n

    # ---- counters: sums over the chips -----------------------------------------
    @property
    def crc_errors(self):
        s = 0
        for a in self.afes:
            s += a.crc_errors
        return s

    @property
    def retries(self):
        s = 0
        for a in self.afes:
            s += a.retries
        return s

    @property
    def config_lost(self):
        for a in self.afes:
            if getattr(a, "config_lost", False):
                return True
        return False

    # ---- configuration ---------------------------------------------------------
    def configure(self, conf):
        """Split and apply; returns the bottom chip's applied values with the
        stack's ``cells``, the loosest cell-voltage limits of all chips, the
        ``split`` and every chip's own result in ``chips``."""
        n = conf.get("cells", self.cells)
        counts = split(n, self._maxes)
        if "vcell_mask" in conf:
            raise ValueError("vcell_mask is per chip: use vcell_masks")
        masks = conf.get("vcell_masks")
        applied = []
        for i in range(len(self.afes)):
            c = {}
            for k in conf:
                if k == "vcell_masks":
                    continue
                if i and k in _CURRENT_KEYS:
                    continue   # top chips: no shunt, no current protection
                c[k] = conf[k]
            c["cells"] = counts[i]
            if masks is not None:
                c["vcell_mask"] = masks[i]
            applied.append(self.afes[i].configure(c))
            self.counts[i] = counts[i]
        self.cells = n
        out = dict(applied[0])
        out["cells"] = n
        out["split"] = tuple(counts)
        out["chips"] = applied
        for a in applied[1:]:
            if "cov_mv" in out:
                out["cov_mv"] = max(out["cov_mv"], a.get("cov_mv", 0))
            if "cuv_mv" in out and "cuv_mv" in a:
                out["cuv_mv"] = min(out["cuv_mv"], a["cuv_mv"])
        return out

    # ---- measurements ------------------------------------------------------------
    def read_cells(self, cell_mv, n):
        if n > self.cells:
            raise ValueError("only %d cells configured" % self.cells)
        k = 0
        i = 0
        for a in self.afes:
            if k >= n:
                break
            c = self.counts[i]
            if c > n - k:
                c = n - k
            buf = self._mv[i]
            a.read_cells(buf, c)
            for j in range(c):
                cell_mv[k + j] = buf[j]
            k += c
            i += 1
        return n

    def read_temps(self, temp_dc):
        t = self._t
        room = len(temp_dc)
        k = 0
        for a in self.afes:
            got = a.read_temps(t)
            if got > _TEMPS_PER_CHIP:
                got = _TEMPS_PER_CHIP
            for j in range(_TEMPS_PER_CHIP):
                if k + j < room:
                    temp_dc[k + j] = t[j] if j < got else 0
            k += _TEMPS_PER_CHIP
        return k if k < room else room

    def read_current(self):
        return self.bottom.read_current()

    def read_stack_mv(self):
        s = 0
        for a in self.afes:
            s += a.read_stack_mv()
        return s

    def read_ld_mv(self):
        # The bottom chip's LD pin sees only its own half of the stack.
        raise NotImplementedError

    # ---- outputs -------------------------------------------------------------------
    def balance(self, flags):
        nf = len(flags)
        k = 0
        for i in range(len(self.afes)):
            b = self._bal[i]
            c = self.counts[i]
            for j in range(len(b)):
                b[j] = flags[k + j] if (j < c and k + j < nf) else 0
            k += c
        # Check every chip before writing any, so a refused pattern changes nothing.
        for i in range(len(self.afes)):
            if getattr(self.afes[i], "balance_no_adjacent", True):
                check_no_adjacent(self._bal[i], self.counts[i])
        for i in range(len(self.afes)):
            self.afes[i].balance(self._bal[i])

    def set_switches(self, chg, dsg):
        self.fet_afe.set_switches(chg, dsg)

    def set_mode(self, mode):
        self._all("set_mode", mode)

    def clear_fault(self):
        self._all("clear_fault")

    def _all(self, name, *args):
        err = None
        for a in self.afes:
            try:
                getattr(a, name)(*args)
            except OSError as e:
                if err is None:
                    err = e
        if err is not None:
            raise err

    # ---- faults --------------------------------------------------------------------
    def fault(self):
        f = self.bottom.fault()
        for i in range(1, len(self.afes)):
            f |= self.afes[i].fault() & ~_CURRENT_FAULTS
        return f
