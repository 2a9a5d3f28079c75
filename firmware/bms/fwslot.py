"""Firmware slots and the boot marker: the part of the updater every boot needs.

boot.py picks the slot to run (``select_at_boot``), the services confirm or
reject a trial firmware, and a reset in the middle of a transfer leaves a
staged file to drop.  None of that needs the transfer and unpack code of
``bms.update``, which is loaded only when an update starts (it and its
buffers are a few KB of heap a pack that is not being updated never holds).

Slots: ``/fw/a`` and ``/fw/b``; "root" (-1) means the factory firmware at
the filesystem root.  The marker is an A/B record (bms.store), so a power
cut while it is written leaves the old marker.  ``select_at_boot`` turns
PENDING into TRIAL and counts boots in TRIAL; after ``max_tries`` boots
without ``confirm()`` (called once the new firmware reached the armed
state) it rolls back to the previous slot.

STAGED: an update whose activation needs a separate request (a slave
module's: the master's APPLY, sent while it holds the relays open).  The
updater commits STAGED instead of PENDING; ``request_apply`` turns it into
PENDING right before the reset it asked for.  A boot that finds STAGED (the
module was reset - watchdog, power cycle - before an APPLY came) never
swaps it in: it runs the current slot and drops the mark (U_DISCARDED).  A
selector that predates STAGED (value 3) leaves it alone and runs the
current slot too: it swaps only PENDING.
"""
import struct

from micropython import const

from bms.store import ABRecord, KIND_MARKER

ST_OK = const(0)
ST_PENDING = const(1)   # staged, swap at the next boot
ST_TRIAL = const(2)     # running the new firmware, not yet confirmed
ST_STAGED = const(3)    # staged, activation not asked for: never swapped in (dropped at boot)
STATE_NAMES = ("ok", "pending", "trial", "staged")
ROOT_SLOT = const(-1)

# Events for the persistent log (PK_UPDATE a=...).
U_STAGED = const(1)
U_SWAPPED = const(2)
U_CONFIRMED = const(3)
U_ROLLED_BACK = const(4)
U_REFUSED = const(5)
U_REJECTED = const(6)   # the trial firmware ran but not whole: roll back at the next boot
U_DISCARDED = const(7)  # a STAGED update dropped unapplied (reset or abort before an APPLY)
EVENT_NAMES = ("", "staged", "swapped", "confirmed", "rolled_back", "refused", "rejected",
               "discarded")

_MARKER = "<bbBB"


class Slots:
    def __init__(self, fs, root="/fw", max_tries=3):
        self.fs = fs
        self.root = root
        self.max_tries = max_tries
        self.marker = ABRecord(fs, root + "/marker", KIND_MARKER)
        self.active = ROOT_SLOT
        self.prev = ROOT_SLOT
        self.state = ST_OK
        self.tries = 0
        self.event = 0
        self.load()

    def load(self):
        r = self.marker.load()
        if r is not None and len(r[1]) == 4:
            self.active, self.prev, self.state, self.tries = struct.unpack(_MARKER, r[1])

    def save(self):
        self.marker.save(1, struct.pack(_MARKER, self.active, self.prev, self.state, self.tries))

    def slot_path(self, slot):
        return "" if slot == ROOT_SLOT else "%s/%s" % (self.root, "ab"[slot])

    @property
    def staged(self):
        return 1 if self.active == 0 else 0

    def drop_stage(self):
        """A staged file left by a reset mid-transfer or mid-finish is garbage
        (up to the package size of flash): remove it at boot."""
        try:
            self.fs.remove(self.root + "/stage.pkg")
        except OSError:
            pass

    def select_at_boot(self):
        """boot.py: returns the directory to put first on sys.path ("" = root)."""
        self.event = 0
        if self.state == ST_PENDING:
            self.prev = self.active
            self.active = self.staged
            self.state = ST_TRIAL
            self.tries = 1
            self.event = U_SWAPPED
            self.save()
        elif self.state == ST_STAGED:
            # Staged but never asked for (reset before the master's APPLY): the
            # current slot runs, and the staged one is no longer a candidate.
            self.state = ST_OK
            self.tries = 0
            self.event = U_DISCARDED
            self.save()
        elif self.state == ST_TRIAL:
            if self.tries >= self.max_tries:
                self.active = self.prev
                self.state = ST_OK
                self.tries = 0
                self.event = U_ROLLED_BACK
            else:
                self.tries += 1
            self.save()
        if self.event:
            self._note_event()
        return self.slot_path(self.active)

    # boot.py runs before the app and its persistent log: a swap or rollback
    # it made is left in a one-byte file for the app to log (``take_boot_event``).
    def _note_event(self):
        try:
            f = self.fs.open(self.root + "/boot_event", "wb")
            try:
                f.write(bytes((self.event,)))
            finally:
                f.close()
        except OSError:
            pass

    def take_boot_event(self):
        """The event of this boot's slot selection (0 if none); read once."""
        try:
            f = self.fs.open(self.root + "/boot_event", "rb")
            try:
                b = f.read(1)
            finally:
                f.close()
            self.fs.remove(self.root + "/boot_event")
        except OSError:
            return 0
        self.event = b[0] if b else 0
        return self.event

    def request_apply(self):
        """The activation of a STAGED update was asked for (the master's APPLY):
        mark it PENDING, the one mark ``select_at_boot`` swaps in.  Written
        before the reset it precedes (A/B record: a power cut leaves STAGED,
        dropped at boot, or PENDING, swapped in).  True if the update is now
        pending (also when it already was: a repeated request)."""
        if self.state == ST_STAGED:
            self.state = ST_PENDING
            try:
                self.save()
            except Exception:
                self.state = ST_STAGED
                raise
        return self.state == ST_PENDING

    def discard(self):
        """Drop a STAGED update unapplied (the master gave up before its APPLY)."""
        if self.state == ST_STAGED:
            self.state = ST_OK
            self.tries = 0
            self.save()
            self.event = U_DISCARDED
            return True
        return False

    def confirm(self):
        """The running firmware reached the armed state: keep it."""
        if self.state == ST_TRIAL:
            self.state = ST_OK
            self.tries = 0
            self.save()
            self.event = U_CONFIRMED
            return True
        return False

    def reject(self):
        """The trial firmware runs but is not whole (a part failed to build, e.g.
        out of memory): make the next boot roll back instead of counting on."""
        if self.state == ST_TRIAL:
            self.tries = self.max_tries
            self.save()
            self.event = U_REJECTED
            return True
        return False
