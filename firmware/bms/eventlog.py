"""Event log: a fixed-size ring of (seq, time, kind, a, b) records in RAM.

Storage-agnostic: an optional ``sink`` (the persistent log) receives every
record as it is appended; this RAM ring is what comms read.  ``append``
allocates nothing.

Each record also keeps its wall-clock time (seconds since 2020, see
``bms.wallclock``) when a ``wall`` clock is attached and has been set; 0
otherwise.  The tick stamp stays the primary one: it orders events within
a boot whatever the clock did.
"""
from array import array

from micropython import const

EV_BOOT = const(0)
EV_FAULT_SET = const(1)
EV_FAULT_CLEAR = const(2)
EV_RELAY = const(3)
EV_DSG_STATE = const(4)
EV_PARAM = const(5)
EV_COMMAND = const(6)
EV_EXCEPTION = const(7)
EV_SOC_CAL = const(8)
_EV_CLEARED = const(9)
EV_FAULT_RECOVERY = const(10)  # a=fault id, b=signal value: latched fault in its recovery path
EV_CAL = const(11)             # a=command (3 gain, 4 zero), b=new value, or -1 refused
# a=wall-clock seconds since 2020 at this record's ticks, b=0 set by a client,
# 1 the daily mark: a reader of the flash log (ticks only) converts every
# record of the same boot from the nearest mark before it.
EV_CLOCK = const(12)
KIND_NAMES = ("boot", "fault_set", "fault_clear", "relay", "dsg_state", "param",
              "command", "exception", "soc_cal", "log_cleared", "fault_recovery", "calibration",
              "clock")


class EventLog:
    def __init__(self, capacity=128, sink=None):
        self.capacity = capacity
        self.ts = array("i", [0] * capacity)
        self.kind = bytearray(capacity)
        self.a = array("i", [0] * capacity)
        self.b = array("i", [0] * capacity)
        self.wall_s = array("i", [0] * capacity)
        self.wall = None   # bms.wallclock.WallClock, attached by the Bms
        self.next_seq = 1
        self.count = 0
        self._head = 0
        self.sink = sink

    def append(self, now, kind, a, b):
        h = self._head
        self.ts[h] = now
        self.kind[h] = kind
        self.a[h] = a
        self.b[h] = b
        w = self.wall
        self.wall_s[h] = w.at(now) if w is not None else 0
        self._head = h + 1 if h + 1 < self.capacity else 0
        if self.count < self.capacity:
            self.count += 1
        if self.sink is not None:
            self.sink(self.next_seq, now, kind, a, b)
        self.next_seq += 1

    def __len__(self):
        return self.count

    def get(self, i):
        """Record ``i`` (0 = oldest kept) as a tuple; for comms, not the loop."""
        if i < 0 or i >= self.count:
            raise IndexError("event")
        j = (self._head - self.count + i) % self.capacity
        # Kept records are consecutive: no per-record sequence array needed.
        return (self.next_seq - self.count + i, self.ts[j], self.kind[j], self.a[j], self.b[j])

    def wall_at(self, i):
        """Wall-clock seconds since 2020 of record ``i``; 0 if the clock was not set."""
        if i < 0 or i >= self.count:
            raise IndexError("event")
        return self.wall_s[(self._head - self.count + i) % self.capacity]

    def find(self, kind, a=None):
        """Records of ``kind`` (and ``a``), oldest first: a test/diagnostic helper."""
        out = []
        for i in range(self.count):
            r = self.get(i)
            if r[2] == kind and (a is None or r[3] == a):
                out.append(r)
        return out

    def clear(self, now):
        self.count = 0
        self._head = 0
        self.append(now, _EV_CLEARED, 0, 0)
