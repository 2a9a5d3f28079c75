"""Master side of the internal CAN bus: sweeps, discovery, pack snapshot.

``CanMaster`` runs the protocol (``comms.can_ids``): it sends SYNC every
``period`` ms, collects each module's STATUS / CELLS / TEMPS in its slot,
keeps a per-cell value and receive time, decides per module whether its
data can be trusted, queues balancing and configuration commands and
answers auto-addressing requests.  ``MasterBoard`` wraps it into the core's
board interface (see ``bms/core.py``): cells and module temperatures come
from the modules, current, local temperatures, relays, buzzer and key from
a base board (the master PCB's own drivers, or the simulator's FakeBoard).

Layout: ``cell_count`` (total strings) and ``module_cells`` (cells per
module) give ``n_modules = ceil(cell_count / module_cells)``; every module
has ``module_cells`` cells except the last, which takes the remainder.
The module count sets the size of the temperature snapshot, so like the
TOPBMS master it takes effect after a restart; a later change that needs
another module count is a configuration fault until then.

Module health (``mod_state``).  A module is OK only if, within the last
``module_timeout`` ms, it delivered a complete sweep: a STATUS echoing the
current SYNC, reporting the expected cell count, no AFE error and an AFE
sample younger than the timeout, followed by every CELLS and the TEMPS
frame of that sweep.  Otherwise it is LOST (silent) or BAD (stale or
inconsistent data), its cells are marked invalid in the snapshot and
``comm_fault`` is raised.  CELLS frames are accepted only after a good
STATUS of the same sweep, so values never outlive the status that vouched
for them.

Fault timing (documented in docs/can_internal.md): a module that stops
sending is declared LOST at most ``module_timeout`` + one poll after its
last complete sweep; ``MasterBoard`` sets the core's SIG_COMM flag in the
same poll and the core opens the relays at its next fast tick (<= 50 ms).
The COMM fault is auto-recovering: when every module is OK again the flag
drops and the fault clears after its clear delay (2 s, fault table).

While the master sleeps (``sleep``: the SYNC sleep flag) the modules are
silent on request: no module is judged, ``comm_fault`` holds; after the
wake one not heard since keeps its old verdict for ``module_timeout``
(docs/can_internal.md, "The master's sleep"; bms.core ``waking`` holds the
relays open until the cells are valid again).

Slave-local hard limits (STATUS faults OV/UV/OT) are latched here and
reported through ``afe_fault()``: the core raises its latched AFE fault,
reset by command or key cycle once no module reports them any more.

For the Modbus map / PC tool: ``n_modules``, ``mod_cells`` (expected),
``mod_first`` (first cell index), ``mod_state`` (MS_*), ``mod_faults``
(slave LF_* bits), ``mod_bal`` (bleeders on), ``mod_temps`` / ``temp_dc``
(module temperatures, 4 per module), ``mod_version`` (4 bytes per module),
``mod_lost_count``, ``module_age_ms(k, now)`` (valid once ``mod_full_ever[k]``);
bus figures ``guard`` (state, bus_off_count, restarts), ``rx_frames``, ``tx_fail``.
"""
from array import array

from micropython import const

from bms import faults as F
from bms.measurements import CELL_MV_MAX, ROLE_CELL, T_NO_DATA, T_OK, T_OPEN, T_SHORT
from bms.params import (P_CELL_COUNT, P_MODULE_CELLS, P_MODULE_TIMEOUT, P_OV2, P_T_CELL_OT,
                        P_UV2)
from bms.ticks import ticks_add, ticks_diff
from comms import can_ids as C
from comms.can_guard import BusGuard

MS_ABSENT = const(0)   # never heard since boot
MS_OK = const(1)
MS_LOST = const(2)     # heard before, silent now
MS_BAD = const(3)      # talking, but its data is stale or inconsistent
MS_NAMES = ("absent", "ok", "lost", "bad")

# Why a module is BAD (mod_why bits).
W_COUNT = const(0x01)   # reports a cell count other than expected
W_AFE = const(0x02)     # its AFE did not answer / sample too old
W_ECHO = const(0x04)    # status did not echo the current sweep
W_FRAMES = const(0x08)  # cell/temperature frames of the sweep missing
W_CONFIG = const(0x10)  # the master's own layout is invalid
W_DUP = const(0x20)     # two modules answer at this address (a frame twice a sweep)
DUP_SWEEPS = const(3)   # ... in this many sweeps in a row (one repeat is CAN's doing)

_OV_MARGIN_MV = const(50)    # slave hard limits sit just outside the master's level 2
_UV_MARGIN_MV = const(100)
_OT_MARGIN_C = const(5)
CHECK_MS = const(50)
MASTER_CELL_MS = const(500)     # the core's cell sweep on a master (see MasterBoard)
_CONFIG_RETRY_SWEEPS = const(5)
# Every module's CONFIG again this often, one module a sweep: STATUS echoes
# the cell count but not the hard limits, so a CONFIG lost at the module (its
# receive buffer full, a controller restart) would leave its second line of
# defence on old limits until it restarts.
_CONFIG_REFRESH_SWEEPS = const(30)
_OUTBOX = const(24)
_MAX_RX_PER_POLL = const(16)
_MAX_TX_PER_POLL = const(3)
_BAL_TIMEOUT_SWEEPS = const(3)
_NEVER = const(-1000000)


def layout(cell_count, module_cells):
    """(modules, cells of the last module) or None if impossible: more than
    MAX_MODULES modules, or a module outside MIN_MODULE_CELLS..MAX_MODULE_CELLS
    (the last one takes the rest)."""
    if module_cells < C.MIN_MODULE_CELLS or module_cells > C.MAX_MODULE_CELLS \
            or cell_count < C.MIN_MODULE_CELLS:
        return None
    n = (cell_count + module_cells - 1) // module_cells
    last = cell_count - (n - 1) * module_cells
    if n > C.MAX_MODULES or last < C.MIN_MODULE_CELLS:
        return None
    return n, last


def layout_rule(values):
    """The parameter set's board rule on a master with CAN modules
    (bms.params.check): cell_count in modules of module_cells must give a
    layout, or the master could not configure its modules (and after a
    restart could not build them)."""
    n = values[P_CELL_COUNT]
    k = values[P_MODULE_CELLS]
    if layout(n, k) is None:
        return (P_MODULE_CELLS,
                "cell_count=%d in modules of module_cells=%d: no layout of at most %d modules"
                " of %d..%d cells (the last takes the rest)"
                % (n, k, C.MAX_MODULES, C.MIN_MODULE_CELLS, C.MAX_MODULE_CELLS))
    return None



def set_filters(ctrl, filters):
    """Program acceptance filters, widening them when the controller cannot.

    Hardware filters only save CPU: every frame is validated in software
    anyway.  A controller with fewer masks than asked (the MCP2515 has two)
    gets one common mask that accepts a superset, and failing that, all
    frames.  Returns the filter list actually applied (None = accept all).
    """
    try:
        ctrl.set_filters(filters)
        return filters
    except NotImplementedError:
        return None
    except ValueError:
        pass
    except OSError:
        # The controller does not answer (yet): it keeps the list and
        # programs it at its next init (BusGuard restarts it).
        return filters
    mask = 0x7FF
    for _fid, m, _ext in filters:
        mask &= m
    wide = []
    for fid, _m, ext in filters:
        f = (fid & mask, mask, ext)
        if f not in wide:
            wide.append(f)
    for attempt in (wide, None):
        try:
            ctrl.set_filters(attempt)
            return attempt
        except (ValueError, NotImplementedError):
            pass
        except OSError:
            return attempt
    return None

class CanMaster:
    def __init__(self, ctrl, n_modules, max_cells=256, temps_per_module=3, period=C.SWEEP_MS,
                 slot=C.SLOT_MS, gap=C.GAP_MS, now=0):
        if n_modules < 1 or n_modules > C.MAX_MODULES:
            raise ValueError("modules")
        if (n_modules + 1) * slot > period:
            raise ValueError("slots do not fit the sweep")
        n = n_modules
        self.ctrl = ctrl
        self._rx_pending = getattr(ctrl, "rx_pending", None)   # MCP2515: the INT pin
        self.guard = BusGuard(ctrl)
        self.n_modules = n
        self.max_cells = max_cells
        self.period = period
        self.slot = slot
        self.gap = gap
        self.timeout = 2500
        self.total_cells = 0
        self.config_ok = False
        self.ov_mv = 4250
        self.uv_mv = 1500
        self.ot_c = 65
        self.cell_mv = array("H", [C.CELL_INVALID] * max_cells)
        # Arrival time per cell frame (module k, frame f at k * CELL_FRAMES + f):
        # the cells of one frame share it, a quarter of a per-cell array.
        self.frame_ts = array("i", [0] * (C.CELL_FRAMES * n))
        # fill_cells copies a module again only when something it copied can
        # have changed: a cell frame landed (rx_seq), the module's state, the
        # cell count, or a fresh frame may have aged past the timeout.
        self.mod_rx_seq = bytearray(n)
        self._fill_seq = bytearray(n)
        self._fill_state = bytearray([0xFF] * n)
        self._fill_oldest = array("i", [0] * n)   # oldest fresh frame at the last copy
        self._fill_fresh = bytearray(n)           # some frame was fresh at the last copy
        self._fill_n = -1
        self.mod_cells = bytearray(n)
        self.mod_first = array("H", [0] * n)
        self.mod_state = bytearray(n)
        self.mod_why = bytearray(n)
        self.mod_why_status = bytearray(n)   # the part decided by the last STATUS
        # Two modules at one address: the sweep echoed by its last STATUS, the
        # last sweep that brought a second one, how many sweeps in a row did.
        self._st_echo = array("h", [-1] * n)
        self._dup_echo = array("h", [-1] * n)
        self.mod_dup = bytearray(n)
        self._cell_seen = bytearray(n)    # cell frames taken this sweep (cleared at SYNC)
        self.mod_faults = bytearray(n)
        self.mod_slave_state = bytearray(n)
        self.mod_rep_cells = bytearray(n)
        self.mod_n_temps = bytearray(n)
        self.mod_bal = array("H", [0] * n)
        self.mod_bal_want = array("H", [0] * n)
        self.mod_age = array("H", [0] * n)
        self.mod_status_ts = array("i", [0] * n)
        self.mod_full_ts = array("i", [0] * n)
        self.mod_pending = bytearray(n)
        self.mod_full_seen = bytearray(n)
        self.mod_full_ever = bytearray(n)     # a complete sweep seen since boot (age valid)
        self.mod_temp_seen = bytearray(n)
        self.mod_lost_count = array("H", [0] * n)
        self.mod_cfg_sweep = array("i", [_NEVER] * n)
        self.mod_version = bytearray(4 * n)
        self.temp_dc = array("h", [C.TEMP_ABSENT] * (C.MAX_MODULE_TEMPS * n))
        self.mod_temps = self.temp_dc
        self.uids = [0] * n        # auto-addressing table (index = addr - 1)
        self.fw = None             # comms.slave_update.SlaveUpdater (slave firmware update)
        self.sweep = 0
        self.n_sweeps = 0
        self._reassign = False
        self.temps_per_module = temps_per_module
        self.sleep = False
        self._wake_by = None       # after a sleep: modules silent since have until then
        self.bal_ok = True
        self.comm_fault = True     # nothing heard yet
        self.hard_latch = 0        # OR of slave hard-limit bits since the last clear
        self.hard_now = 0
        self.rx_frames = 0
        self.rx_unknown = 0
        self.tx_fail = 0
        self.outbox_drop = 0
        self._next_sync = now
        self._next_check = now
        self._bal_seq = 0
        self._rx = bytearray(8)
        self._ob_id = array("H", [0] * _OUTBOX)
        self._ob_len = bytearray(_OUTBOX)
        self._ob_data = bytearray(8 * _OUTBOX)
        self._ob_head = 0
        self._ob_n = 0
        self._scratch = bytearray(8)
        # One preallocated view per length: sending a 4-byte BAL allocates nothing.
        mv = memoryview(self._scratch)
        self._views = [mv[:k] for k in range(9)]
        set_filters(ctrl, [(C.ID_STATUS, 0x700, False), (C.ID_CELLS, 0x780, False),
                           (C.ID_TEMPS, 0x7F0, False), (C.ID_VERSION, 0x7F0, False),
                           (C.ID_ANNOUNCE, 0x7FF, False), (C.ID_FWACK, 0x7F0, False)])

    # ---- configuration --------------------------------------------------
    def configure(self, cell_count, module_cells, timeout_ms, ov_mv=4250, uv_mv=1500, ot_c=65):
        """Apply the layout and limits; returns False (and keeps the comm fault) if invalid."""
        self.timeout = timeout_ms
        self._fill_n = -1   # the next fill_cells copies every module
        lim_changed = (ov_mv, uv_mv, ot_c) != (self.ov_mv, self.uv_mv, self.ot_c)
        self.ov_mv = ov_mv
        self.uv_mv = uv_mv
        self.ot_c = ot_c
        lay = layout(cell_count, module_cells)
        ok = lay is not None and lay[0] == self.n_modules and cell_count <= self.max_cells
        self.config_ok = ok
        if not ok:
            self.comm_fault = True
            return False
        first = 0
        for k in range(self.n_modules):
            c = module_cells if k < self.n_modules - 1 else lay[1]
            if self.mod_cells[k] != c or self.mod_first[k] != first:
                lim_changed = True
                # What it sent is of the old layout (another count, other
                # pack positions): not OK until a complete sweep after a
                # STATUS with the new count.
                if self.mod_rep_cells[k] != c:
                    self.mod_why_status[k] |= W_COUNT
                self.mod_pending[k] = 0
                self.mod_full_seen[k] = 0
                if self.mod_state[k] == MS_OK:
                    self.mod_state[k] = MS_BAD
            self.mod_cells[k] = c
            self.mod_first[k] = first
            first += c
        self.total_cells = first
        if lim_changed:
            for k in range(self.n_modules):
                self.mod_cfg_sweep[k] = _NEVER  # resend CONFIG at the next sweep
        return True

    def configure_from(self, params):
        p = params
        return self.configure(p[P_CELL_COUNT], p[P_MODULE_CELLS], p[P_MODULE_TIMEOUT],
                              p[P_OV2] + _OV_MARGIN_MV, p[P_UV2] - _UV_MARGIN_MV,
                              p[P_T_CELL_OT] + _OT_MARGIN_C)

    def set_balance(self, flags):
        """Core balance flags (one byte per cell) -> per-module masks."""
        for k in range(self.n_modules):
            first = self.mod_first[k]
            m = 0
            for j in range(self.mod_cells[k]):
                i = first + j
                if i < len(flags) and flags[i]:
                    m |= 1 << j
            self.mod_bal_want[k] = m

    def reassign(self):
        """Forget auto-assigned addresses (next SYNC tells the slaves)."""
        for k in range(self.n_modules):
            self.uids[k] = 0
        self._reassign = True

    def clear_hard(self):
        self.hard_latch = self.hard_now

    def module_age_ms(self, k, now):
        return ticks_diff(now, self.mod_full_ts[k])

    # ---- the loop -------------------------------------------------------
    def poll(self, now):
        """Call as often as possible (every main-loop pass, at least every ``gap`` ms)."""
        if self.guard.step(now):
            self._receive(now)
            if ticks_diff(now, self._next_sync) >= 0:
                nxt = ticks_add(self._next_sync, self.period)
                if ticks_diff(now, nxt) >= 0:
                    nxt = ticks_add(now, self.period)
                self._next_sync = nxt
                self._sweep(now)
            self._flush()
        if ticks_diff(now, self._next_check) >= 0:
            self._next_check = ticks_add(now, CHECK_MS)
            self._check(now)

    def _sweep(self, now):
        self.sweep = (self.sweep + 1) & 0xFFFF
        self.n_sweeps += 1
        nsw = self.n_sweeps
        b = self._scratch
        flags = 0
        if self.sleep:
            flags |= C.SYNC_SLEEP
        if self.bal_ok:
            flags |= C.SYNC_BAL_OK
        if self._reassign:
            flags |= C.SYNC_REASSIGN
            self._reassign = False
        C.sync_pack(b, self.sweep, flags, self.n_modules, self.period, self.slot, self.gap)
        # Anything still waiting belongs to the last sweep: stale, drop it.
        if self._ob_n:
            self.outbox_drop += self._ob_n
            self._ob_n = 0
        self._queue(C.ID_SYNC, b, 8)
        seen = self._cell_seen
        for k in range(self.n_modules):
            seen[k] = 0     # a cell frame counts twice only within one sweep
        if self.sleep:
            return
        for k in range(self.n_modules):
            st = self.mod_state[k]
            if st == MS_ABSENT or st == MS_LOST:
                continue
            last = self.mod_cfg_sweep[k]
            if last == _NEVER or ((self.mod_rep_cells[k] != self.mod_cells[k]
                                  or self.mod_faults[k] & C.LF_DEFAULTS)
                                 and nsw - last >= _CONFIG_RETRY_SWEEPS) or \
                    (nsw + k) % _CONFIG_REFRESH_SWEEPS == 0 and nsw != last:
                C.config_pack(b, self.mod_cells[k], self.temps_per_module, self.ov_mv,
                              self.uv_mv, self.ot_c, C.CFG_SET_CELLS)
                # Sent once it got into the outbox; a full one (16 modules
                # balancing: SYNC + 16 CONFIG + 16 BAL) tries at the next sweep.
                if self._queue(C.ID_CONFIG + k, b, 8):
                    self.mod_cfg_sweep[k] = nsw
            if self.mod_version[4 * k + 3] == 0 and (nsw + k) % _CONFIG_RETRY_SWEEPS == 0:
                self.request(k + 1, C.REQ_VERSION)
            want = self.mod_bal_want[k] if self.bal_ok else 0
            if want or self.mod_bal[k]:
                self._bal_seq = (self._bal_seq + 1) & 0xFF
                C.bal_pack(b, want, self.period * _BAL_TIMEOUT_SWEEPS, self._bal_seq)
                self._queue(C.ID_BAL + k, b, 4)

    def _queue(self, cid, data, n):
        if self._ob_n >= _OUTBOX:
            self.outbox_drop += 1
            return False
        i = (self._ob_head + self._ob_n) % _OUTBOX
        self._ob_id[i] = cid
        self._ob_len[i] = n
        o = 8 * i
        d = self._ob_data
        for j in range(n):
            d[o + j] = data[j]
        self._ob_n += 1
        return True

    def _flush(self):
        for _ in range(_MAX_TX_PER_POLL):
            if self._ob_n == 0:
                return
            i = self._ob_head
            n = self._ob_len[i]
            b = self._scratch
            o = 8 * i
            d = self._ob_data
            for j in range(n):
                b[j] = d[o + j]
            if not self.ctrl.send(self._ob_id[i], self._views[n], False):
                self.tx_fail += 1
                return
            self._ob_head = (i + 1) % _OUTBOX
            self._ob_n -= 1

    def request(self, addr, what):
        b = self._scratch
        b[0] = addr
        b[1] = what
        self._queue(C.ID_REQUEST, b, 2)

    # ---- receiving ------------------------------------------------------
    def due(self, now):
        """Cheap: does ``poll`` have anything to do now (a frame waiting, the
        outbox, the SYNC or the check due, a slave update)?  The main loop
        asks it between its sleeps instead of running every poller."""
        if self._ob_n or ticks_diff(now, self._next_sync) >= 0 \
                or ticks_diff(now, self._next_check) >= 0:
            return True
        if self.fw is not None and self.fw.busy():
            return True
        rp = self._rx_pending
        return rp() if rp is not None else True

    def _receive(self, now):
        ctrl = self.ctrl
        rp = self._rx_pending
        if rp is not None and not rp():
            return
        b = self._rx
        n_mod = self.n_modules
        for _ in range(_MAX_RX_PER_POLL):
            n = ctrl.recv(b)
            if n < 0:
                return
            # Wraps at 2**30: beyond, every frame would allocate a long int
            # on the RP2040 (about 129 days at 16 modules).
            self.rx_frames = (self.rx_frames + 1) & 0x3FFFFFFF
            if ctrl.rx_ext or n < 8:
                self.rx_unknown += 1
                continue
            cid = ctrl.rx_id
            if C.ID_CELLS <= cid < C.ID_CELLS + 4 * C.MAX_MODULES:
                k = (cid - C.ID_CELLS) >> 2
                f = cid & 3
                bit = 1 << f
                if k >= n_mod:
                    continue
                if not (self.mod_pending[k] & bit):
                    if self._cell_seen[k] & bit:
                        self._dup(k)    # this sweep's frame f again
                    continue
                self.mod_pending[k] &= ~bit
                self._cell_seen[k] |= bit
                first = self.mod_first[k]
                base = f * C.CELLS_PER_FRAME
                left = self.mod_cells[k] - base
                if left > C.CELLS_PER_FRAME:
                    left = C.CELLS_PER_FRAME
                mv = self.cell_mv
                i = first + base
                for j in range(left):
                    mv[i + j] = b[2 * j] | (b[2 * j + 1] << 8)
                self.frame_ts[k * C.CELL_FRAMES + f] = now
                self.mod_rx_seq[k] = (self.mod_rx_seq[k] + 1) & 0xFF
                if self.mod_pending[k] == 0:
                    self.mod_full_ts[k] = now
                    self.mod_full_seen[k] = 1
                    self.mod_full_ever[k] = 1
            elif C.ID_STATUS <= cid < C.ID_STATUS + C.MAX_MODULES:
                k = cid - C.ID_STATUS
                if k < n_mod:
                    self._on_status(k, b, now)
            elif C.ID_TEMPS <= cid < C.ID_TEMPS + C.MAX_MODULES:
                k = cid - C.ID_TEMPS
                if k >= n_mod or not (self.mod_pending[k] & 0x10):
                    continue
                self.mod_pending[k] &= ~0x10
                t = self.temp_dc
                o = k * C.MAX_MODULE_TEMPS
                for j in range(C.MAX_MODULE_TEMPS):
                    t[o + j] = C.i16(b, 2 * j)
                if self.mod_pending[k] == 0:
                    self.mod_full_ts[k] = now
                    self.mod_full_seen[k] = 1
                    self.mod_full_ever[k] = 1
            elif C.ID_VERSION <= cid < C.ID_VERSION + C.MAX_MODULES:
                k = cid - C.ID_VERSION
                if k < n_mod:
                    for j in range(4):
                        self.mod_version[4 * k + j] = b[j]
            elif cid == C.ID_ANNOUNCE:
                self._on_announce(C.uid48(b, 0))
            elif C.ID_FWACK <= cid < C.ID_FWACK + C.MAX_MODULES:
                if self.fw is not None:
                    self.fw.on_ack(cid - C.ID_FWACK, b, now)
            else:
                self.rx_unknown += 1

    def _on_status(self, k, b, now):
        e = b[2]
        last = self._st_echo[k]
        if e == last:
            # A second STATUS for this sweep: another module answers at this
            # address, or the controller took one frame twice (an error in
            # its last bit makes the sender repeat it: once, not every sweep).
            self._dup(k)
        else:
            if self._dup_echo[k] != last:
                self.mod_dup[k] = 0       # the sweep before had no second frame
            self._st_echo[k] = e
        if self.mod_state[k] in (MS_ABSENT, MS_LOST):
            self.mod_cfg_sweep[k] = _NEVER   # (re)discovered: configure, ask its version
            self.mod_version[4 * k + 3] = 0
        self.mod_slave_state[k] = b[0]
        cells = b[1]
        self.mod_rep_cells[k] = cells
        faults = b[3]
        self.mod_faults[k] = faults
        self.mod_bal[k] = C.u16(b, 4)
        nt = b[6]
        self.mod_n_temps[k] = nt if nt <= C.MAX_MODULE_TEMPS else C.MAX_MODULE_TEMPS
        age = b[7] * C.AGE_UNIT_MS
        self.mod_age[k] = age
        self.mod_status_ts[k] = now
        why = 0
        if cells != self.mod_cells[k]:
            why |= W_COUNT
        if faults & (C.LF_AFE | C.LF_WIRING) or age > self.timeout:
            # (LF_WIRING: cells wired beyond its count, nobody reads them)
            why |= W_AFE
        if e != (self.sweep & 0xFF):
            why |= W_ECHO
        if self.mod_dup[k] >= DUP_SWEEPS:
            why |= W_DUP      # whose cells would it be: take none of them
        if why:
            self.mod_pending[k] = 0
        else:
            nf = (cells + C.CELLS_PER_FRAME - 1) // C.CELLS_PER_FRAME
            self.mod_pending[k] = ((1 << nf) - 1) | 0x10
        self.mod_why_status[k] = why
        if self.mod_state[k] != MS_OK:
            self.mod_state[k] = MS_BAD   # until a full sweep arrives
        if faults & C.LF_HARD:
            self.hard_latch |= faults & C.LF_HARD

    def _dup(self, k):
        """A frame of module ``k`` came twice in one sweep: a STATUS, or a
        cell frame (two modules whose STATUS frames are bit for bit alike
        and sent together make one frame on the wire; their cells differ)."""
        e = self._st_echo[k]
        if self._dup_echo[k] != e:
            self._dup_echo[k] = e
            if self.mod_dup[k] < 255:
                self.mod_dup[k] += 1

    def _on_announce(self, uid):
        addr = 0
        n = self.n_modules
        st = self.mod_state
        uids = self.uids
        for k in range(n):
            if uids[k] == uid:
                addr = k + 1
                break
        if not addr:
            # Never an address whose module is talking: after a master restart
            # the table is empty while the modules keep their addresses.  One
            # nobody took first; then one whose module was lost (a module
            # replaced by a new one, which the table would otherwise never
            # address until a restart).
            for k in range(n):
                if uids[k] == 0 and st[k] == MS_ABSENT:
                    addr = k + 1
                    break
            if not addr:
                for k in range(n):
                    if st[k] == MS_LOST:
                        addr = k + 1
                        break
            if addr:
                uids[addr - 1] = uid
        if not addr:
            return  # more modules than configured: leave it unaddressed
        b = self._scratch
        C.assign_pack(b, uid, addr)
        self._queue(C.ID_ASSIGN, b, 8)

    # ---- health -----------------------------------------------------------
    def _check(self, now):
        # Arrays bound to locals: this runs every CHECK_MS over every module,
        # and each attribute lookup costs on an RP2040.
        to = self.timeout
        if self.sleep:
            # Silent because we asked (SYNC sleep flag): nothing is lost, the
            # verdicts hold; after the wake each module has `to` to answer.
            self._wake_by = ticks_add(now, to)
            return
        wake_by = self._wake_by
        if wake_by is not None and ticks_diff(now, wake_by) > 0:
            self._wake_by = wake_by = None
        cfg_ok = self.config_ok
        fault = not cfg_ok
        hard = 0
        state = self.mod_state
        why_status = self.mod_why_status
        status_ts = self.mod_status_ts
        full_seen = self.mod_full_seen
        full_ts = self.mod_full_ts
        mod_why = self.mod_why
        faults = self.mod_faults
        for k in range(self.n_modules):
            st = state[k]
            if st == MS_ABSENT:
                fault = True
                continue
            if wake_by is not None and ticks_diff(now, status_ts[k]) > to:
                # Not heard since before the sleep, its time to answer not
                # over: its verdict from before the sleep holds.
                if st != MS_OK:
                    fault = True
                    if st != MS_LOST:
                        hard |= faults[k] & C.LF_HARD
                continue
            why = why_status[k]
            if not cfg_ok:
                why |= W_CONFIG
            if ticks_diff(now, status_ts[k]) > to:
                if st != MS_LOST:
                    self.mod_lost_count[k] += 1
                st = MS_LOST
                self.mod_pending[k] = 0
                full_seen[k] = 0
            else:
                if not (full_seen[k] and ticks_diff(now, full_ts[k]) <= to):
                    why |= W_FRAMES
                    # Until the next complete sweep: a stamp days old would
                    # read as recent once its tick difference wraps (6.2 days).
                    full_seen[k] = 0
                st = MS_OK if why == 0 else MS_BAD
                hard |= faults[k] & C.LF_HARD
            state[k] = st
            mod_why[k] = why
            if st != MS_OK:
                fault = True
        self.hard_now = hard
        self.comm_fault = fault

    # ---- snapshot -----------------------------------------------------------
    def fill_cells(self, m, now):
        """Copy module cells into the core snapshot with validity and age.

        Frame by frame (age and state checked once per frame, the snapshot's
        arrays in locals): on an RP2040 a 256S copy took 12.8 ms cell by cell,
        longer than the 12 ms in which the master must read the controller."""
        n = m.n_cells
        to = self.timeout
        mv = self.cell_mv
        ts = self.frame_ts
        cmv = m.cell_mv
        cts = m.cell_ts
        cok = m.cell_ok
        per = C.CELLS_PER_FRAME
        seq = self.mod_rx_seq
        fseq = self._fill_seq
        fstate = self._fill_state
        foldest = self._fill_oldest
        ffresh = self._fill_fresh
        same_n = n == self._fill_n
        self._fill_n = n
        for k in range(self.n_modules):
            st = self.mod_state[k]
            if same_n and seq[k] == fseq[k] and st == fstate[k] and not (
                    ffresh[k] and ticks_diff(now, foldest[k]) > to):
                continue    # nothing it would copy has changed
            fseq[k] = seq[k]
            fstate[k] = st
            ffresh[k] = 0
            good = st == MS_OK
            first = self.mod_first[k]
            end = first + self.mod_cells[k]
            if end > n:
                end = n
            fk = k * C.CELL_FRAMES
            i = first
            while i < end:
                t = ts[fk + (i - first) // per]
                fresh = good and ticks_diff(now, t) <= to
                if fresh and (not ffresh[k] or ticks_diff(foldest[k], t) > 0):
                    foldest[k] = t
                    ffresh[k] = 1
                stop = i + per
                if stop > end:
                    stop = end
                while i < stop:
                    v = mv[i]
                    cts[i] = t
                    if v == 0 or v > CELL_MV_MAX:   # 0 mV, out of range (0xFFFF too): invalid, as put_cell
                        cmv[i] = 0
                        cok[i] = 0
                    else:
                        cmv[i] = v
                        cok[i] = 1 if fresh else 0
                    i += 1
        for i in range(self.total_cells, n):
            cok[i] = 0

    def quiet_ms(self, now):
        """How long the bus stays free of module frames (the time after the
        last slot until the next SYNC), 0 inside the sweep's slots: the main
        loop puts its garbage collection (16 ms on an RP2040, longer than the
        12 ms in which two RX buffers fill) there.  0 during a slave update."""
        if self.fw is not None and self.fw.busy():
            return 0
        to_sync = ticks_diff(self._next_sync, now)
        if to_sync <= 0:
            return 0
        since = self.period - to_sync   # time since the last SYNC
        if since < (self.n_modules + 1) * self.slot + self.gap:
            return 0
        return to_sync

    def fill_temps(self, m, first, per_module):
        """Module temperatures into ``m.temp_dc[first:]``, ``per_module`` each."""
        t = self.temp_dc
        for k in range(self.n_modules):
            if self.mod_state[k] != MS_OK:
                # Silent or inconsistent module: the comm fault already opens
                # the relays; its sensors hold their last reading instead of
                # adding a sensor fault whose slower recovery would override
                # the comm fault's rule.  Never heard: no data.
                if not self.mod_temp_seen[k]:
                    for j in range(per_module):
                        m.temp_status[first + k * per_module + j] = T_NO_DATA
                continue
            self.mod_temp_seen[k] = 1
            nt = self.mod_n_temps[k]
            for j in range(per_module):
                i = first + k * per_module + j
                if j >= nt:
                    m.temp_status[i] = T_NO_DATA
                    continue
                v = t[k * C.MAX_MODULE_TEMPS + j]
                if v == C.TEMP_OPEN:
                    m.temp_status[i] = T_OPEN
                elif v == C.TEMP_SHORT:
                    m.temp_status[i] = T_SHORT
                elif v == C.TEMP_ABSENT:
                    m.temp_status[i] = T_NO_DATA
                else:
                    m.temp_dc[i] = v
                    m.temp_status[i] = T_OK


_FORWARD = ("relay_faults", "charger_present", "charger_in", "sleep_key", "set_rtc",
            "voltage_response")


class MasterBoard:
    """The core's board interface for a master with CAN slave modules.

    ``cell_ms``: the core's cell sweep runs every 500 ms here, not 250: the
    modules report once per TDMA sweep (1000 ms), so a faster copy repeats
    most of its work (30 ms for 256S on an RP2040), and cell data reaches
    the core at most 250 ms later than it would (docs/can_internal.md).

    ``base`` supplies current, the master's own temperatures, relays,
    buzzer and key (any board object).  Call ``bind(bms)`` once the Bms
    exists, and ``poll(now)`` from the main loop as often as possible.
    """

    def __init__(self, ctrl, base, n_modules, temps_per_module=3, max_cells=256, now=0, **kw):
        self.base = base
        self.cell_ms = MASTER_CELL_MS
        self._base_volts = getattr(base, "read_volts", None)
        self._ticks = None
        self.master = CanMaster(ctrl, n_modules, max_cells, temps_per_module, now=now, **kw)
        self.max_cells = max_cells
        self.temps_per_module = temps_per_module
        self.n_base_temps = len(base.temp_roles)
        self.temp_roles = tuple(base.temp_roles) + (ROLE_CELL,) * (n_modules * temps_per_module)
        self.balance_no_adjacent = getattr(base, "balance_no_adjacent", True)
        self.bms = None
        self.prot = None
        self._pver = -1
        self._rd_faults = getattr(base, "read_faults", None)   # bound once: no per-call allocation
        # The master's own shunt monitor and its over-current comparator
        # (bms.protection "Onset") are the base board's.
        self.alert_in = getattr(base, "alert_in", None)
        # The optional parts of the core's board interface (bms.core) that
        # the base has: relay readback (relay_weld, level 2), charge-port
        # sense, sleep button, clock chip.  Bound as they are, and absent
        # where the base lacks them: the core looks each up once.
        for name in _FORWARD:
            f = getattr(base, name, None)
            if f is not None:
                setattr(self, name, f)

    def wake_ms(self):
        """After the master's sleep the modules have this long to answer
        (bms.core holds the relays open meanwhile, then the comm rules apply)."""
        return self.master.timeout + CHECK_MS + self.cell_ms

    def bind(self, bms):
        self.bms = bms
        self.prot = bms.prot
        self._ticks = bms.clock.ticks_ms
        self._reconfigure()

    def service(self):
        """The CAN protocol between the steps of a long core task (the core
        calls it inside the cell sweep): a 256S sweep is ~25 ms of work on an
        RP2040, and the controller's two RX buffers fill in 12 ms."""
        if self._ticks is not None:
            self.poll(self._ticks())

    def due(self):
        return self._ticks is None or self.master.due(self._ticks())

    def quiet_ms(self):
        """ms before the next module frame is due (see CanMaster.quiet_ms)."""
        return self.master.quiet_ms(self._ticks()) if self._ticks is not None else 0

    def _reconfigure(self):
        p = self.bms.params
        self._pver = p.version
        self.master.configure_from(p)

    def poll(self, now):
        bms = self.bms
        ms = self.master
        if bms is not None:
            if bms.params.version != self._pver:
                self._reconfigure()
            ms.sleep = bms.sleep_requested
        ms.poll(now)
        if ms.fw is not None:
            ms.fw.poll(now)   # slave firmware update: bounded work per call
        if self.prot is not None:
            self.prot.set_flag(F.SIG_COMM, ms.comm_fault)

    # ---- board interface ----------------------------------------------------
    def read_current(self, m, now):
        self.base.read_current(m, now)

    def set_current_alert(self, over_ma, under_ma):
        return self.base.set_current_alert(over_ma, under_ma)

    def read_volts(self, m, now):
        if self._base_volts is not None:   # else the base's read_current filled them
            self._base_volts(m, now)

    def read_cells(self, m, now):
        self.master.fill_cells(m, now)
        if self.prot is not None:
            self.prot.set_flag(F.SIG_COMM, self.master.comm_fault)
        if self._rd_faults is not None:
            self._rd_faults()   # the local AFE's trips and relay readback (may raise OSError)

    def read_temps(self, m, now):
        self.master.fill_temps(m, self.n_base_temps, self.temps_per_module)
        self.base.read_temps(m, now)

    def set_relays(self, states):
        self.base.set_relays(states)

    def set_balance(self, flags):
        self.master.set_balance(flags)

    def set_buzzer(self, on):
        self.base.set_buzzer(on)

    def key(self):
        return self.base.key()

    def afe_fault(self):
        return self.base.afe_fault() or self.master.hard_latch

    def clear_afe_fault(self):
        clr = getattr(self.base, "clear_afe_fault", None)
        if clr is not None:
            clr()
        self.master.clear_hard()
