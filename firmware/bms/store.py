"""Power-safe settings store on the board's flash filesystem.

Every record lives in two slot files, ``NAME.a`` and ``NAME.b``, written
alternately.  A slot holds one record:

    magic "BMSR" | kind u8 | fmt u8 | length u16 | seq u32 | payload | crc32 u32
    (little-endian; the CRC covers header and payload)

``save`` always overwrites the slot that does *not* hold the newest valid
record, with ``seq + 1``.  A power cut at any byte of that write leaves a
slot whose CRC (or length) fails, and ``load`` falls back to the other slot:
the last committed record.  A record counts as committed when ``save``
returned (the file is closed).  A record whose ``fmt`` this firmware does not
know (written by a newer firmware before a rollback) is skipped like a
corrupt one, so the older slot is used.

Records:
  params  every ParamSet value by *name* (u8 length, name, i32 value), so a
          later parameter table can migrate it: unknown names are dropped,
          new names get their default, out-of-range values and values that
          break a cross-parameter rule are replaced by defaults; every change
          is reported as ``(name, stored, used, reason)``.
  state   SOC, learned capacity, cycles, operating time and lease state
          (``State``); saved by the services poller at a bounded rate, see
          docs/storage.md for write rate and flash endurance.
  latch   the latched faults, by name (comma-separated ASCII), written by
          the services poller whenever the set changes (a fault latches or a
          reset clears one: rare), read at boot before the Bms exists so that
          a restart never clears a latch.  An unknown name (a later table,
          before a rollback) comes back as ``internal`` latched.

Filesystem access goes through an injected ``fs`` object with the calls of
MicroPython's ``os`` plus ``open`` (``BoardFs`` below on a board, a fake
flash in tests).
"""
import struct

from micropython import const

from bms import params as P
from bms.digest import crc32

MAGIC = b"BMSR"
HDR = "<4sBBHI"
_HDR_LEN = const(12)
_CRC_LEN = const(4)
MAX_PAYLOAD = const(4096)
_ENOENT = const(2)

KIND_PARAMS = const(1)
_KIND_STATE = const(2)
KIND_MARKER = const(3)  # firmware update marker (bms.update)
_KIND_LATCH = const(5)  # 4 is bms.kvstore
_KIND_OCV = const(6)    # the SOC estimator's learned OCV points

_PARAMS_FMT = const(1)
_STATE_FMT = const(1)


class BoardFs:
    """The real filesystem: MicroPython's ``os`` plus the builtin ``open``."""

    def __init__(self, os_module=None):
        if os_module is None:
            import os as os_module
        self._os = os_module

    def open(self, path, mode="r"):
        return open(path, mode)

    def rename(self, a, b):
        self._os.rename(a, b)

    def remove(self, path):
        self._os.remove(path)

    def mkdir(self, path):
        self._os.mkdir(path)

    def rmdir(self, path):
        self._os.rmdir(path)

    def listdir(self, path="/"):
        return self._os.listdir(path)

    def stat(self, path):
        return self._os.stat(path)


# Where the BMS keeps its data on the flash filesystem.  Not "/bms": on the
# board image the code is the frozen package ``bms``, and a directory of that
# name at the filesystem root ('' comes before .frozen on sys.path) would
# shadow it, so the next boot could not import bms.core (found on the
# emulated RP2040).
DATA_DIR = "/data"
_LEGACY_DIR = "/bms"


def move_legacy_data(fs):
    """Move data an older firmware kept in /bms into DATA_DIR, once.

    Only data moves: .py/.mpy files of an old file-based install stay, and
    an empty /bms is removed.  Returns the number of entries moved."""
    try:
        names = fs.listdir(_LEGACY_DIR)
    except OSError:
        return 0
    moved = 0
    code = False
    for n in names:
        if n.endswith(".py") or n.endswith(".mpy"):
            code = True
            continue
        if not exists(fs, DATA_DIR):
            fs.mkdir(DATA_DIR)
        dst = DATA_DIR + "/" + n
        if exists(fs, dst):
            continue   # newer data already there: keep it
        fs.rename(_LEGACY_DIR + "/" + n, dst)
        moved += 1
    if not code:
        try:
            if not fs.listdir(_LEGACY_DIR):
                fs.rmdir(_LEGACY_DIR)
        except OSError:
            pass
    return moved


def makedirs(fs, path):
    """mkdir -p; ignores existing directories."""
    cur = ""
    for part in path.split("/"):
        if not part:
            continue
        cur += "/" + part
        try:
            fs.stat(cur)
        except OSError:
            fs.mkdir(cur)


def exists(fs, path):
    try:
        fs.stat(path)
        return True
    except OSError:
        return False


def read_file(fs, path):
    """Whole file as bytes, or None if missing/unreadable."""
    return _read(fs, path)[0]


def _read(fs, path):
    """(whole file as bytes or None, there): ``there`` is False only when the
    file does not exist (ENOENT).  Any other error - the flash does not read
    back (EIO), littlefs finds its metadata corrupt - is a file that is there
    but cannot be read, not one that never was."""
    try:
        f = fs.open(path, "rb")
    except OSError as e:
        return None, not e.args or e.args[0] != _ENOENT
    try:
        return f.read(), True
    except OSError:
        return None, True
    finally:
        f.close()


def _newer(a, b):
    """Serial-number comparison of u32 sequence numbers (wrap-safe)."""
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


def encode_record(kind, fmt, seq, payload):
    n = len(payload)
    buf = bytearray(_HDR_LEN + n + _CRC_LEN)
    struct.pack_into(HDR, buf, 0, MAGIC, kind, fmt, n, seq & 0xFFFFFFFF)
    buf[_HDR_LEN:_HDR_LEN + n] = payload
    struct.pack_into("<I", buf, _HDR_LEN + n, crc32(memoryview(buf)[:_HDR_LEN + n]))
    return buf


def decode_record(data, kind, fmts):
    """(fmt, seq, payload) if ``data`` is one intact record of ``kind``, else None."""
    if data is None or len(data) < _HDR_LEN + _CRC_LEN:
        return None
    magic, k, fmt, n, seq = struct.unpack_from(HDR, data, 0)
    if magic != MAGIC or k != kind or fmt not in fmts or n > MAX_PAYLOAD:
        return None
    if len(data) != _HDR_LEN + n + _CRC_LEN:
        return None
    mv = memoryview(data)
    if struct.unpack_from("<I", data, _HDR_LEN + n)[0] != crc32(mv[:_HDR_LEN + n]):
        return None
    return fmt, seq, bytes(mv[_HDR_LEN:_HDR_LEN + n])


class ABRecord:
    """One record kept in two alternately written slot files."""

    def __init__(self, fs, base, kind, fmts=(1,)):
        self.fs = fs
        self.paths = (base + ".a", base + ".b")
        self.kind = kind
        self.fmts = fmts
        self.seq = 0
        self.slot = -1   # slot holding the newest valid record, -1 none
        self.damaged = False   # see load()
        self.writes = 0
        self.bytes = 0
        self._loaded = False
        i = base.rfind("/")
        self._dir = base[:i] if i > 0 else ""

    def load(self):
        """(fmt, payload) of the newest intact record, or None.  ``damaged``:
        None although a slot file exists (both copies unreadable, or a read
        that fails: only a file that does not exist counts as none)."""
        best = None
        self.slot = -1
        self._loaded = True
        found = False
        for s in (0, 1):
            data, there = _read(self.fs, self.paths[s])
            found = found or there
            r = decode_record(data, self.kind, self.fmts)
            if r is not None and (best is None or _newer(r[1], best[1])):
                best = r
                self.slot = s
        self.damaged = best is None and found
        if best is None:
            return None
        self.seq = best[1]
        return best[0], best[2]

    def save(self, fmt, payload):
        """Commit a new record; returns only once it is on flash."""
        if not self._loaded:
            self.load()  # never overwrite the newest slot of a record not yet read
        if self._dir:
            makedirs(self.fs, self._dir)
        s = 1 if self.slot == 0 else 0
        buf = encode_record(self.kind, fmt, self.seq + 1, payload)
        f = self.fs.open(self.paths[s], "wb")
        try:
            f.write(buf)
        finally:
            f.close()
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.slot = s
        self.writes += 1
        self.bytes += len(buf)

    def erase(self):
        for p in self.paths:
            try:
                self.fs.remove(p)
            except OSError:
                pass
        self.slot = -1


# ---- parameters ---------------------------------------------------------
def encode_params(values):
    out = bytearray(struct.pack("<H", P.N_PARAMS))
    for i in range(P.N_PARAMS):
        name = P.TABLE[i][0].encode()
        out.append(len(name))
        out.extend(name)
        out.extend(struct.pack("<i", values[i]))
    return out


def decode_params(payload):
    """List of (name, value) pairs; ValueError if malformed."""
    if len(payload) < 2:
        raise ValueError("params: short")
    n = struct.unpack_from("<H", payload, 0)[0]
    pos = 2
    pairs = []
    for _ in range(n):
        if pos >= len(payload):
            raise ValueError("params: truncated")
        ln = payload[pos]
        pos += 1
        if pos + ln + 4 > len(payload):
            raise ValueError("params: truncated")
        name = bytes(payload[pos:pos + ln]).decode()
        pos += ln
        pairs.append((name, struct.unpack_from("<i", payload, pos)[0]))
        pos += 4
    if pos != len(payload):
        raise ValueError("params: trailing bytes")
    return pairs


def migrate(pairs, max_cells=256, fallback_chem=P.CHEM_LFP, board_rule=None):
    """Map stored ``(name, value)`` pairs onto this firmware's table.

    Returns ``(values, report)``; ``values`` always passes ``params.check``
    (with ``board_rule``: a set this board cannot measure has its cell
    layout reset, never the board left without a core).
    """
    report = []
    stored = {}
    for name, v in pairs:
        stored[name] = v
    chem = stored.get("chemistry", fallback_chem)
    if chem < 0 or chem > 3:
        report.append(("chemistry", chem, fallback_chem, "out of range"))
        chem = fallback_chem
    d = P.fit_defaults(P.defaults(chem), board_rule)
    if d[P.P_CELL_COUNT] > max_cells:
        d[P.P_CELL_COUNT] = max_cells
    values = P.defaults(chem)
    for i in range(P.N_PARAMS):
        values[i] = d[i]
    for i in range(P.N_PARAMS):
        row = P.TABLE[i]
        name = row[0]
        if name not in stored:
            report.append((name, None, d[i], "new parameter"))
            continue
        v = stored[name]
        hi = row[3]
        if i == P.P_CELL_COUNT and hi > max_cells:
            hi = max_cells
        if v < row[2] or v > hi:
            report.append((name, v, d[i], "out of range"))
            v = d[i]
        elif i == P.P_CHEMISTRY:
            v = chem
        values[i] = v
    for name in stored:
        if P.index(name) < 0:
            report.append((name, stored[name], None, "dropped"))
    # Cross-parameter rules: reset the offending parameter, then its partner.
    for _ in range(2 * len(P.RULES) + 2):
        bad = P.check(values, max_cells, board_rule)
        if bad is None:
            break
        i = bad[0]
        if values[i] == d[i]:
            i = _rule_partner(values, i, d)
        if i < 0:
            # A board rule: the layout parameters are what it can be.
            for j in (P.P_MODULE_CELLS, P.P_CELL_COUNT):
                if values[j] != d[j]:
                    i = j
                    break
        if i < 0:
            break
        report.append((P.TABLE[i][0], values[i], d[i], "rule: " + bad[1]))
        values[i] = d[i]
    if P.check(values, max_cells, board_rule) is not None:
        for i in range(P.N_PARAMS):
            if values[i] != d[i]:
                report.append((P.TABLE[i][0], values[i], d[i], "rules unsatisfiable: defaults"))
        values = d
    return values, report


def _rule_partner(values, i, d):
    for a, op, b, _r in P.RULES:
        va = values[a]
        vb = values[b]
        ok = va > vb if op == P.OP_GT else va < vb
        if not ok and (a == i or b == i):
            j = b if a == i else a
            if values[j] != d[j]:
                return j
    if i in P.OC_SERIES:   # the over-current retry window (params.check)
        for j in P.OC_SERIES:
            if values[j] != d[j]:
                return j
    return -1


# ---- runtime state ------------------------------------------------------
_STATE = "<HIIIIIIIBBI"
F_LEASE = const(1)   # a lease is set
F_CLEAN = const(2)   # written by an orderly shutdown
# Watchdog boots in a row (0..3), bits 2-3: bms.services latches internal on
# the third (a hang raises nothing, so nothing else stops the relay cycling).
F_WDT_SHIFT = const(2)
F_WDT_MASK = const(0x0C)


class State:
    """What the BMS must not forget across a power cut besides its settings."""

    def __init__(self):
        self.soc_pm = 500
        self.remaining_mah = 0
        self.capacity_mah = 0     # learned capacity, 0 = not learned yet
        self.cycles = 0
        self.throughput_mah = 0
        self.op_s = 0             # operating seconds, never decreases
        self.lease_end_s = 0      # operating second at which the lease ends
        self.lease_counter = 0    # highest accepted renewal token counter
        self.lease_flags = 0
        self.flags = 0
        self.boots = 0

    def pack(self):
        return struct.pack(_STATE, self.soc_pm, self.remaining_mah, self.capacity_mah,
                           self.cycles, self.throughput_mah, self.op_s, self.lease_end_s,
                           self.lease_counter, self.lease_flags, self.flags, self.boots)

    def unpack(self, payload):
        if len(payload) != struct.calcsize(_STATE):
            raise ValueError("state: %d bytes" % len(payload))
        (self.soc_pm, self.remaining_mah, self.capacity_mah, self.cycles,
         self.throughput_mah, self.op_s, self.lease_end_s, self.lease_counter,
         self.lease_flags, self.flags, self.boots) = struct.unpack(_STATE, payload)
        if self.soc_pm > 1000:
            self.soc_pm = 1000
        return self

    def same(self, other):
        return self.pack() == other.pack()

    def copy(self):
        return State().unpack(self.pack())


class SettingsStore:
    def __init__(self, fs, root=DATA_DIR):
        self.fs = fs
        self.root = root
        self.params_rec = ABRecord(fs, root + "/params", KIND_PARAMS, (_PARAMS_FMT,))
        self.state_rec = ABRecord(fs, root + "/state", _KIND_STATE, (_STATE_FMT,))
        self.latch_rec = ABRecord(fs, root + "/latch", _KIND_LATCH, (1,))
        self.ocv_rec = ABRecord(fs, root + "/ocvpts", _KIND_OCV, (1,))
        self.report = []
        self.loaded = False
        self.lost = False   # stored settings unreadable: see _lost
        self.state_lost = False   # see load_state

    # parameters
    def load_params(self, params):
        """Load the stored settings into ``params``; returns the migration report.

        With nothing stored the ParamSet keeps its defaults and the report
        says so.  A migrated set is written back at once, so the report is
        produced once per table change.
        """
        r = self.params_rec.load()
        if r is None:
            if self.params_rec.damaged:
                return self._lost(params, "damaged settings: defaults")
            self.report = [("*", None, None, "no stored settings: defaults")]
            self.loaded = False
            return self.report
        try:
            pairs = decode_params(r[1])
        except (ValueError, UnicodeError):
            return self._lost(params, "unreadable settings: defaults")
        values, report = migrate(pairs, params.max_cells, params[P.P_CHEMISTRY],
                                 params.board_rule)
        params.replace(values)
        self.report = report
        self.loaded = True
        if report:
            self.save_params(params)
        return report

    def _lost(self, params, why):
        """Settings that are there but cannot be read: the pack ran with a set
        nobody knows now (chemistry, cell count, thresholds), so the defaults
        it falls back to may not fit its cells.  Like an unreadable latch
        record, ``internal`` is latched (saved before the defaults are
        written back, so a power cycle in between cannot lose it; and by
        ``load_latches`` at this boot if flash writes fail): nothing closes
        until someone has checked the settings and resets."""
        from bms import faults as F
        self.report = [("*", None, None, why)]
        self.loaded = False
        self.lost = False
        try:
            ids = self.load_latches()
            if F.INTERNAL not in ids:
                self.save_latches(ids + [F.INTERNAL])
            self.save_params(params)
        except OSError:
            pass
        self.lost = True
        return self.report

    def save_params(self, params):
        self.params_rec.save(_PARAMS_FMT, encode_params(params.values))

    def factory_reset(self, params, chem=P.CHEM_LFP):
        """Every parameter to ``chem``'s defaults (cell count capped to the board), saved."""
        d = P.fit_defaults(P.defaults(chem), params.board_rule)
        if d[P.P_CELL_COUNT] > params.max_cells:
            d[P.P_CELL_COUNT] = params.max_cells
        params.replace(d)
        self.save_params(params)

    # state
    def load_state(self):
        """The stored State, or None.  ``state_lost``: None although a record
        is there (both copies unreadable, or one that does not decode)."""
        r = self.state_rec.load()
        self.state_lost = r is None and self.state_rec.damaged
        if r is None:
            return None
        try:
            return State().unpack(r[1])
        except (ValueError, TypeError):
            self.state_lost = True
            return None

    def save_state(self, state):
        self.state_rec.save(_STATE_FMT, state.pack())

    # latched faults
    def load_latches(self):
        """Fault ids latched at the last save (names mapped onto this table).

        A record that is there but unreadable (both copies damaged) may have
        held a critical latch: ``internal`` comes back latched instead, so
        nothing closes until someone resets it."""
        from bms import faults as F
        r = self.latch_rec.load()
        if r is None:
            return [F.INTERNAL] if self.latch_rec.damaged or self.lost else []
        ids = []
        try:
            text = bytes(r[1]).decode()
        except UnicodeError:
            return [F.INTERNAL]
        for name in text.split(","):
            i = F.index(name) if name else -1
            if i < 0 and name:
                # A fault this firmware's table lacks (a newer firmware's,
                # before a rollback): a latch it cannot hold, so ``internal``
                # holds instead - a restart never clears a latch.
                i = F.INTERNAL
            if i >= 0 and i not in ids:
                ids.append(i)
        if self.lost and F.INTERNAL not in ids:
            ids.append(F.INTERNAL)
        return ids

    def save_latches(self, ids):
        from bms import faults as F
        self.latch_rec.save(1, ",".join([F.TABLE[i][F.F_NAME] for i in ids]).encode())

    # learned OCV points (bms.soc)
    def load_ocv_points(self):
        """(chemistry, offsets, stds) as stored, or None: nothing stored, both
        copies damaged or a record that does not decode all give the bare
        table (``Soc.set_ocv_points`` checks the values themselves)."""
        r = self.ocv_rec.load()
        if r is None:
            return None
        b = r[1]
        if len(b) < 2 or len(b) != 2 + 8 * b[1]:
            return None
        n = b[1]
        v = struct.unpack("<%di" % (2 * n), bytes(b[2:]))
        return b[0], v[:n], v[n:]

    def save_ocv_points(self, chem, offs, sds, n):
        """Commit the first ``n`` learned points (offsets and stds, W)."""
        buf = bytearray(2 + 8 * n)
        buf[0] = chem
        buf[1] = n
        for j in range(n):
            struct.pack_into("<i", buf, 2 + 4 * j, offs[j])
            struct.pack_into("<i", buf, 2 + 4 * (n + j), sds[j])
        self.ocv_rec.save(1, buf)

    @property
    def writes(self):
        return self.params_rec.writes + self.state_rec.writes + self.latch_rec.writes + \
            self.ocv_rec.writes

    @property
    def bytes_written(self):
        return self.params_rec.bytes + self.state_rec.bytes + self.latch_rec.bytes + \
            self.ocv_rec.bytes
