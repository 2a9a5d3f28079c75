"""Persistent event log: a ring of fixed-size binary records in segment files.

Plugs into the RAM ``EventLog`` as its ``sink``: the core stays
storage-agnostic and the control cycle never touches flash.  ``sink`` only
packs the record (with a snapshot of the key values at that moment) into a
preallocated RAM queue; ``flush`` (called by the services poller between
control cycles) appends the queue to flash.  An RP2040 sector erase stalls
both cores for ~45 ms, so flash work must never sit inside the fast task.

Layout: ``SEGMENTS`` files ``log.0`` .. ``log.N-1``, each up to
``PER_SEG`` records, appended in order; when the active segment is full the
next one is truncated and reused, so the oldest ``PER_SEG`` records go at
once (a ring with segment granularity).  Record, 40 bytes little-endian:

    seq u32 | boot u16 | kind u8 | magic 0xA5 | t_ms u32 | a i32 | b i32 |
    current_ma i32 | vmax u16 | vmin u16 | vmax_idx u8 | vmin_idx u8 |
    tmax i16 (0.1 degC) | tmin i16 | soc_pm u16 | crc32 u32

Power-cut safety: a torn append leaves at most one partial record at the end
of the active segment.  Readers accept only whole records with a valid CRC,
counted from the start of each segment; at start-up a segment with a torn
tail is never appended to again (the log moves on to the next segment), so
every later record stays aligned.  Records appended after a flush returned
survive any later cut (until the ring overwrites them).

Kinds below 16 are the RAM log's EV_*; the persistent-only kinds are listed
here (reset cause, settings migration, update/lease events).
"""
import struct

from micropython import const

from bms.digest import crc32
from bms.store import makedirs

REC = const(40)
_FMT = "<IHBBIiiiHHBBhhH"
_BODY = const(36)
MAGIC = const(0xA5)
SEGMENTS = const(8)
PER_SEG = const(64)

# Persistent-only kinds.
PK_RESET = const(16)      # a: reset cause (bms.watchdog R_*), b: machine code
PK_MIGRATE = const(17)    # a: parameter index (-1 = all), b: value now used
PK_UPDATE = const(18)     # a: update event (bms.update U_*), b: detail
PK_LEASE = const(19)      # a: lease event (bms.lease LE_*), b: detail
PK_SLEEP = const(20)      # a: 1 sleep, 0 wake, b: cause
_PK_DROPPED = const(21)    # a: records lost to a full queue
PK_PART = const(22)       # a: app part (app.PART_NAMES, -1 other), b: PART_OOM / PART_ERROR
PK_CLEARED = const(23)    # the log was erased on request (first record after the erase)
PK_NAMES = ("reset", "settings_migrated", "update", "lease", "sleep", "dropped", "part_failed",
            "log_cleared")
PART_OOM = const(1)       # the part did not build for lack of memory
PART_ERROR = const(2)     # any other error (hardware absent, bad configuration)

_I32 = 0x7FFFFFFF


def _u32(v):
    # A mask with 0xFFFFFFFF is a long-int operation on a 32-bit port (small
    # ints end at 2**30): it allocates, on the path that logs a fault.
    return v if 0 <= v <= 0x3FFFFFFF else v & 0xFFFFFFFF


def _clamp32(v):
    if -0x3FFFFFFF <= v <= 0x3FFFFFFF:
        return v
    if v > _I32:
        return _I32
    if v < -_I32 - 1:
        return -_I32 - 1
    return v


def decode(buf):
    """Record tuple from 40 bytes, or None if torn/corrupt.

    (seq, boot, kind, t_ms, a, b, current_ma, vmax, vmin, vmax_idx, vmin_idx,
     tmax, tmin, soc_pm)
    """
    if len(buf) < REC:
        return None
    if buf[7] != MAGIC:
        return None
    if struct.unpack_from("<I", buf, _BODY)[0] != crc32(memoryview(buf)[:_BODY]):
        return None
    (seq, boot, kind, _m, t, a, b, cur, vmax, vmin, imax, imin, tmax, tmin,
     soc) = struct.unpack_from(_FMT, buf, 0)
    return (seq, boot, kind, t, a, b, cur, vmax, vmin, imax, imin, tmax, tmin, soc)


FIELDS = ("seq", "boot", "kind", "t_ms", "a", "b", "current_ma", "vmax_mv", "vmin_mv",
          "vmax_idx", "vmin_idx", "tmax_dc", "tmin_dc", "soc_pm")


class PersistLog:
    def __init__(self, fs, root="/data/log", segments=SEGMENTS, per_seg=PER_SEG, queue=32):
        self.fs = fs
        self.root = root
        self.segments = segments
        self.per_seg = per_seg
        self._q = bytearray(queue * REC)
        self._qmv = memoryview(self._q)
        self._qcap = queue
        # One view per queue slot, made now: slicing in ``append`` would allocate.
        self._body = [self._qmv[k * REC:k * REC + _BODY] for k in range(queue)]
        self.pending = 0
        self.urgent = False
        self.dropped = 0
        self._dropped_logged = 0
        self.meas = None
        self.soc = None
        self.next_seq = 1
        self.boot = 0
        self.flushes = 0
        self.bytes_written = 0
        # Per segment: number of valid leading records and first seq.
        self.count = bytearray(segments) if per_seg < 256 else [0] * segments
        self.first = [0] * segments
        self.active = 0
        self._rbuf = bytearray(REC)
        self.scan()

    # ---- start-up ----------------------------------------------------------
    def _path(self, s):
        return "%s/log.%d" % (self.root, s)

    def _read_segment(self, s):
        """The complete records of segment ``s`` (OSError if unreadable)."""
        f = self.fs.open(self._path(s), "rb")
        try:
            return f.read(self.count[s] * REC)
        finally:
            f.close()

    def _scan_seg(self, s):
        """(valid leading records, first seq, last seq, last boot, torn)."""
        try:
            f = self.fs.open(self._path(s), "rb")
        except OSError:
            return 0, 0, 0, 0, False
        n = 0
        first = last = boot = 0
        torn = False
        buf = self._rbuf
        try:
            while n < self.per_seg:
                got = f.readinto(buf)
                if not got:
                    break
                r = decode(buf) if got == REC else None
                if r is None or (n and r[0] != last + 1):
                    torn = True
                    break
                if n == 0:
                    first = r[0]
                last = r[0]
                boot = r[1]
                n += 1
            else:
                if f.readinto(buf):
                    torn = True
        finally:
            f.close()
        return n, first, last, boot, torn

    def scan(self):
        """Rebuild the index from flash (after a boot)."""
        best_last = 0
        best = -1
        torn_active = False
        boot = 0
        for s in range(self.segments):
            n, first, last, b, torn = self._scan_seg(s)
            self.count[s] = n
            self.first[s] = first
            if n and (best < 0 or last > best_last):
                best_last = last
                best = s
                boot = b
                torn_active = torn
        if best < 0:
            self.active = 0
            self.next_seq = 1
            self.boot = 1
            self._fresh = True
        else:
            self.active = best
            self.next_seq = best_last + 1
            self.boot = (boot + 1) & 0xFFFF
            ok = self._repair(best) if torn_active else True
            self._fresh = (not ok) or self.count[best] >= self.per_seg
        return self.boot

    def _repair(self, s):
        """Cut a torn tail off segment ``s``: copy its valid records, rename over.

        rename is atomic on littlefs, so a cut here leaves either the torn
        segment (repaired again next boot) or the clean one.  If the repair
        itself fails the log just moves on to the next segment.
        """
        tmp = self.root + "/log.tmp"
        try:
            data = self._read_segment(s)
            f = self.fs.open(tmp, "wb")
            try:
                f.write(data)
            finally:
                f.close()
            self.fs.rename(tmp, self._path(s))
        except OSError:
            return False
        return True

    # ---- producer (control cycle) ---------------------------------------
    def attach(self, meas=None, soc=None):
        """Where snapshots come from (the Bms's Measurements and Soc)."""
        self.meas = meas
        self.soc = soc

    def sink(self, _seq, now, kind, a, b):
        """EventLog sink: queue one record; allocation-free."""
        self.append(now, kind, a, b)

    def append(self, now, kind, a, b, urgent=False):
        n = self.pending
        # The queue's last slot is kept for the record of what was dropped
        # (``flush``): a storm that fills the queue between flushes is logged.
        if n >= self._qcap or (n + 1 >= self._qcap and kind != _PK_DROPPED):
            self.dropped += 1
            return False
        off = self.pending * REC
        m = self.meas
        if m is not None:
            cur = m.current_ma
            vmax = m.max_mv
            vmin = m.min_mv
            imax = m.max_idx
            imin = m.min_idx
            tmax = m.tmax[2]   # ROLE_CELL
            tmin = m.tmin[2]
        else:
            cur = vmax = vmin = imax = imin = tmax = tmin = 0
        soc = self.soc.soc_pm if self.soc is not None else 0
        struct.pack_into(_FMT, self._q, off, _u32(self.next_seq), self.boot, kind & 0xFF,
                         MAGIC, _u32(now), _clamp32(a), _clamp32(b), _clamp32(cur),
                         vmax & 0xFFFF, vmin & 0xFFFF, imax & 0xFF, imin & 0xFF,
                         tmax, tmin, soc & 0xFFFF)
        struct.pack_into("<I", self._q, off + _BODY, crc32(self._body[self.pending]))
        self.next_seq += 1
        self.pending += 1
        if urgent or kind <= 1 or kind == 7 or kind >= 16:  # boot, fault set, exception, ours
            self.urgent = True
        return True

    # ---- writer (between cycles) ----------------------------------------
    def flush(self):
        """Append every queued record to flash; returns how many were written."""
        if self.dropped != self._dropped_logged and self.pending < self._qcap:
            n = self.dropped - self._dropped_logged
            self._dropped_logged = self.dropped
            self.append(0, _PK_DROPPED, n, 0)
        done = 0
        total = self.pending
        if not total:
            return 0
        makedirs(self.fs, self.root)
        while done < total:
            s = self.active
            if self._fresh:
                s = (s + 1) % self.segments if self.count[s] or self.first[s] else s
                f = self.fs.open(self._path(s), "wb")
                self.active = s
                self.count[s] = 0
                self.first[s] = 0
                self._fresh = False
            else:
                f = self.fs.open(self._path(s), "ab")
            room = self.per_seg - self.count[s]
            k = total - done if total - done < room else room
            try:
                f.write(self._qmv[done * REC:(done + k) * REC])
            except OSError:
                self._fresh = True  # maybe a partial record: never append after it
                raise
            finally:
                f.close()
            if self.count[s] == 0:
                self.first[s] = struct.unpack_from("<I", self._q, done * REC)[0]
            self.count[s] += k
            self.bytes_written += k * REC
            done += k
            if self.count[s] >= self.per_seg:
                self._fresh = True
        self.pending = 0
        self.urgent = False
        self.flushes += 1
        return done

    # ---- readers (comms, tools) --------------------------------------------
    def _order(self):
        segs = [s for s in range(self.segments) if self.count[s]]
        segs.sort(key=lambda s: self.first[s])
        return segs

    def __len__(self):
        n = 0
        for s in range(self.segments):
            n += self.count[s]
        return n

    def get(self, i):
        """Record ``i`` (0 = oldest on flash) as a tuple; IndexError if none."""
        if i < 0:
            raise IndexError("log")
        for s in self._order():
            c = self.count[s]
            if i < c:
                f = self.fs.open(self._path(s), "rb")
                try:
                    f.seek(i * REC)
                    buf = bytearray(REC)
                    f.readinto(buf)
                finally:
                    f.close()
                r = decode(buf)
                if r is None:
                    raise OSError(5)  # flash changed under us
                return r
            i -= c
        raise IndexError("log")

    def window(self, i, n):
        """Records ``i .. i+n-1`` (0 = oldest on flash), a list of ``n``
        tuples or None where there is none; each segment file is opened
        once (an open costs milliseconds on a board's flash)."""
        out = [None] * n
        if i < 0 or n <= 0:
            return out
        k = 0          # index of the first record of segment s
        for s in self._order():
            c = self.count[s]
            lo = i if i > k else k
            hi = i + n if i + n < k + c else k + c
            if lo < hi:
                buf = bytearray((hi - lo) * REC)
                f = self.fs.open(self._path(s), "rb")
                try:
                    f.seek((lo - k) * REC)
                    f.readinto(buf)
                finally:
                    f.close()
                for j in range(hi - lo):
                    out[lo - i + j] = decode(memoryview(buf)[j * REC:(j + 1) * REC])
            k += c
            if k >= i + n:
                break
        return out

    def records(self):
        """Every record on flash, oldest first (reads each segment once)."""
        out = []
        for s in self._order():
            data = None
            try:
                data = self._read_segment(s)
            except OSError:
                continue
            for k in range(len(data) // REC):
                r = decode(memoryview(data)[k * REC:(k + 1) * REC])
                if r is not None:
                    out.append(r)
        return out

    def clear(self):
        """Erase the persistent log (factory reset)."""
        for s in range(self.segments):
            try:
                self.fs.remove(self._path(s))
            except OSError:
                pass
            self.count[s] = 0
            self.first[s] = 0
        self.active = 0
        self._fresh = True
