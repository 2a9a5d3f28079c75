"""``bmsctl update PKG``: send a firmware package in chunks with a progress bar.

Transport-agnostic: ``transport`` has ``begin(size, sha256, signature)``,
``chunk(offset, data) -> next expected offset``, ``finish(progress) -> str``
and raises on a refusal (the device's UpdateError text).  The BMS verifies
and unpacks in the background after the finish command (bounded steps in its
main loop); ``finish`` polls the status until staged or refused and reports
``progress(phase, per_mille)``, shown as a second bar.  ``LocalTransport``
drives a ``bms.update.Updater`` directly (tests, the simulator); a Modbus
transport maps the same calls onto the update register window.

``ModbusTransport`` maps them onto the update window of the register map
(``comms.regs.update``); ``bmsctl update PKG`` uses it.  Resume: a link error
resends the chunk (the BMS acknowledges what it already has), a gap refusal
continues from the offset the BMS reports, and a transfer left half done by
an earlier run with the same size and SHA-256 continues where it stopped.

Size and SHA-256 come from ``PKG.sig`` (written by tools/fwpkg.py) when it
exists, so the BMS checks the bytes against what was built and signed; a
local check refuses a truncated or corrupt file first unless
``--no-verify`` leaves the decision to the BMS.
"""
import json
import os

from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

CHUNK = 240   # bytes per chunk: offset, count + 120 data registers = one 123-register write
RETRIES = 3


class LocalTransport:
    def __init__(self, updater):
        self.up = updater

    def begin(self, size, digest, signature):
        return self.up.begin(size, digest, signature)

    def chunk(self, offset, data):
        return self.up.chunk(offset, data)

    def finish(self, progress=None):
        from bms import update as U
        r = self.up.finish_start()
        while r == U.FS_BUSY:
            if progress is not None:
                progress(U.PHASE_NAMES[self.up.phase], self.up.finish_pm())
            r = self.up.finish_step()
        if r == U.FS_ERROR:
            raise U.UpdateError(*self.up.last_error)
        return self.up.slot_path(self.up._staged)


def load(path):
    with open(path, "rb") as f:
        pkg = f.read()
    meta = {}
    if os.path.exists(path + ".sig"):
        with open(path + ".sig") as f:
            meta = json.load(f)
    return pkg, meta


def send(transport, pkg, digest, signature=None, chunk=CHUNK, console=None, quiet=False,
         size=None):
    """Send ``pkg``; resumes from the offset the device reports after a gap."""
    if size is None:
        size = len(pkg)
    off = None
    resume = getattr(transport, "resume_offset", None)
    if resume is not None:
        off = resume(size, digest)
        if off is not None and console is not None and not quiet:
            console.print("resuming the transfer at byte %d of %d" % (off, size))
    if off is None:
        transport.begin(size, digest, signature)
        off = 0
    with Progress("[bold]update", "{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  disable=quiet) as prog:
        task = prog.add_task("send", total=size)
        while off < len(pkg):
            for attempt in range(RETRIES):
                try:
                    off = transport.chunk(off, pkg[off:off + chunk])
                    break
                except OSError:   # link errors: resend the same chunk
                    if attempt == RETRIES - 1:
                        raise
            prog.update(task, completed=off)
        fin = prog.add_task("verify", total=size)

        def progress(phase, pm):
            prog.update(fin, description=phase or "finish", completed=size * pm // 1000)
        where = transport.finish(progress)
        prog.update(fin, description="staged", completed=size)
    return where


class LocalRefusal(Exception):
    """The package fails the tool's own check before anything is sent."""


def checked(path, verify=True):
    """(package, size, sha256, signature) of ``path`` and its ``.sig``; with
    ``verify`` a truncated or corrupt file is refused before anything is sent."""
    import hashlib
    pkg, meta = load(path)
    actual = hashlib.sha256(pkg).digest()
    size = int(meta.get("size", len(pkg)))
    digest = bytes.fromhex(meta["sha256"]) if meta.get("sha256") else actual
    if verify:
        if len(pkg) != size:
            raise LocalRefusal("%s is truncated: %d of %d bytes (per %s.sig)"
                               % (path, len(pkg), size, path))
        if actual != digest:
            raise LocalRefusal("%s is corrupt: its SHA-256 does not match %s.sig" % (path, path))
    sig = bytes.fromhex(meta["signature"]) if meta.get("signature") else None
    return pkg, size, digest, sig


def main(path, transport, console=None, quiet=False, verify=True, restart=False):
    pkg, size, digest, sig = checked(path, verify)
    where = send(transport, pkg, digest, sig, console=console, quiet=quiet, size=size)
    if restart:
        transport.restart()
        return "staged into %s; restart requested: the BMS boots it next " \
            "(rolls back if it does not arm)" % where
    return "staged into %s; restart the BMS to run it (rolls back if it does not arm)" % where


class ModbusTransport:
    """The update window of the register map through a ``BmsClient``."""

    def __init__(self, client, sleep=None, interval=0.1, finish_timeout=300.0):
        self.c = client
        import time
        self.sleep = sleep or time.sleep
        self.clock = time.monotonic
        self.interval = interval
        self.finish_timeout = finish_timeout
        from comms import registers as R
        from comms.regs import update as RU
        self.R, self.RU = R, RU

    def _w(self, off, regs):
        from tools.bmsctl.client import BmsError
        try:
            self.c.write(self.R.A_UPDATE + off, regs)
        except BmsError as e:
            if e.code is None:
                raise OSError(str(e))   # link error: the caller resends
            raise

    def status(self):
        R, RU = self.R, self.RU
        from tools.bmsctl.client import ascii_of
        r = self.c.read(R.A_UPDATE, RU.UP_ERR_TEXT + RU.UP_TEXT_REGS)
        from bms.update import ERROR_NAMES, STATE_NAMES
        return {"size_begun": (r[0] << 16) | r[1],
                "sha256": b"".join(bytes((v >> 8, v & 0xFF)) for v in r[2:18]),
                "status": RU.US_NAMES[r[RU.UP_STATUS]] if r[RU.UP_STATUS] < len(RU.US_NAMES)
                else "?",
                "offset": (r[RU.UP_OFFSET] << 16) | r[RU.UP_OFFSET + 1],
                "size": (r[RU.UP_SIZE] << 16) | r[RU.UP_SIZE + 1],
                "progress_pm": r[RU.UP_PROGRESS],
                "error": ERROR_NAMES[r[RU.UP_ERROR]] if r[RU.UP_ERROR] < len(ERROR_NAMES) else "?",
                "fw_state": STATE_NAMES[r[RU.UP_FW_STATE]]
                if r[RU.UP_FW_STATE] < len(STATE_NAMES) else "?",
                "active_slot": r[RU.UP_ACTIVE] - 0x10000 if r[RU.UP_ACTIVE] & 0x8000
                else r[RU.UP_ACTIVE],
                "finish_pm": r[RU.UP_FIN_PM],
                "error_text": ascii_of(r[RU.UP_ERR_TEXT:RU.UP_ERR_TEXT + RU.UP_TEXT_REGS])}

    def resume_offset(self, size, digest):
        st = self.status()
        if st["status"] == "receiving" and st["size_begun"] == size and st["sha256"] == digest \
                and 0 < st["offset"] < size:
            return st["offset"]
        return None

    def begin(self, size, digest, signature):
        regs = [(size >> 16) & 0xFFFF, size & 0xFFFF] + _regs(digest)
        if signature is not None:
            regs += _regs(signature)
        self._w(self.RU.UP_BEGIN, regs)

    def chunk(self, offset, data):
        from tools.bmsctl.client import BmsError
        data = bytes(data)
        regs = [(offset >> 16) & 0xFFFF, offset & 0xFFFF, len(data)] + _regs(data)
        try:
            self._w(self.RU.UP_CHUNK, regs)
        except BmsError as e:
            st = self.status()
            if st["status"] == "receiving" and st["error"] == "offset":
                return st["offset"]   # a gap: continue from what the BMS has
            raise
        return offset + len(data)

    def finish(self, progress=None):
        """Start the finish, then poll the status until staged or refused.

        Lost request or reply: the status says which (still "receiving":
        the command never arrived, send it again; verifying / unpacking /
        staged: it did)."""
        from tools.bmsctl.client import BmsError
        sent = 0
        deadline = None
        st = None
        while True:
            if sent == 0 or (st is not None and st["status"] == "receiving" and sent < RETRIES):
                sent += 1
                try:
                    self._w(self.RU.UP_CMD, [self.RU.UC_FINISH])
                except OSError:
                    pass          # the status below tells whether it arrived
            try:
                st = self.status()
            except BmsError as e:
                if e.code is not None:
                    raise
                st = None         # link error: ask again
            now = self.clock()
            if deadline is None:
                deadline = now + self.finish_timeout
            if st is not None:
                s = st["status"]
                if progress is not None and s in ("verifying", "unpacking"):
                    progress(s, st["finish_pm"])
                if s == "staged":
                    return "the inactive slot"
                if s == "error":
                    raise BmsError(st["error_text"] or "refused: %s" % st["error"], 3)
                if s == "idle":
                    raise BmsError("refused: the BMS has no transfer to finish (aborted or "
                                   "restarted?)", 3)
                if s == "receiving" and sent >= RETRIES:
                    raise OSError("the finish command does not reach the BMS")
            if now > deadline:
                raise OSError("no end of the finish within %.0f s" % self.finish_timeout)
            self.sleep(self.interval)

    def restart(self):
        self._w(self.RU.UP_CMD, [self.RU.UC_RESTART])


def _regs(b):
    b = bytes(b)
    if len(b) & 1:
        b += b"\0"
    return [(b[i] << 8) | b[i + 1] for i in range(0, len(b), 2)]


# ---- slaves updated through the master (comms.regs.slave_update) ----
class SlaveModbusTransport(ModbusTransport):
    """The master's slave update window: upload like a master update, then forward over CAN."""

    def __init__(self, client):
        ModbusTransport.__init__(self, client)
        from comms.regs import slave_update as RSU
        self.RSU = RSU

    def _w(self, off, regs):
        from tools.bmsctl.client import BmsError
        try:
            self.c.write(self.R.A_SLAVE_UPDATE + off, regs)
        except BmsError as e:
            if e.code is None:
                raise OSError(str(e))
            raise

    def status(self):
        from tools.bmsctl.client import ascii_of
        RU, RSU = self.RU, self.RSU
        base = self.R.A_SLAVE_UPDATE
        r = self.c.read(base, RSU.SU_RESULT + 16)
        t = self.c.read(base + RSU.SU_TEXT, RSU.SU_TEXT_REGS)
        from bms.update import ERROR_NAMES

        def name(names, v):
            return names[v] if v < len(names) else "?%d" % v
        return {"size_begun": (r[0] << 16) | r[1],
                "sha256": b"".join(bytes((v >> 8, v & 0xFF)) for v in r[2:18]),
                "status": name(RU.US_NAMES, r[RU.UP_STATUS]),
                "offset": (r[RU.UP_OFFSET] << 16) | r[RU.UP_OFFSET + 1],
                "size": (r[RU.UP_SIZE] << 16) | r[RU.UP_SIZE + 1],
                "progress_pm": r[RU.UP_PROGRESS],
                "error": name(ERROR_NAMES, r[RU.UP_ERROR]),
                "error_text": ascii_of(r[RU.UP_ERR_TEXT:RU.UP_ERR_TEXT + RU.UP_TEXT_REGS]),
                "target": r[RSU.SU_TARGET],
                "phase": name(RSU.PHASE_NAMES, r[RSU.SU_PHASE]),
                "slave": r[RSU.SU_ADDR],
                "slave_progress_pm": r[RSU.SU_PROGRESS],
                "slave_bytes": (r[RSU.SU_BYTES] << 16) | r[RSU.SU_BYTES + 1],
                "retransmits": r[RSU.SU_RETX],
                "fwd_error": r[RSU.SU_ERROR],
                "results": [name(RSU.RESULT_NAMES, v) for v in r[RSU.SU_RESULT:RSU.SU_RESULT + 16]],
                "fwd_text": ascii_of(t)}

    def finish(self, polls=0):
        self._w(self.RU.UP_CMD, [self.RU.UC_FINISH])
        return "the master (verified, not unpacked)"

    def start(self, target):
        self._w(self.RSU.SU_TARGET, [target])
        self._w(self.RU.UP_CMD, [self.RSU.SC_START])


def watch(transport, size, console=None, quiet=False, poll_s=0.2, sleep=None, limit_s=3600):
    """Progress of the forwarding, one bar per slave, until it is done or stopped."""
    import time
    sleep = sleep or time.sleep
    bars = {}
    t0 = time.monotonic()
    with Progress("[bold]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, disable=quiet) as prog:
        while True:
            st = transport.status()
            a = st["slave"]
            if a:
                if a not in bars:
                    bars[a] = prog.add_task("slave %d" % a, total=size)
                done = st["slave_bytes"] if st["phase"] == "sending" else size
                prog.update(bars[a], completed=min(done, size),
                            description="slave %d %s" % (a, st["phase"]))
            if st["phase"] in ("done", "error", "idle"):
                return st
            if time.monotonic() - t0 > limit_s:
                raise OSError("no end of the slave update after %d s" % limit_s)
            sleep(poll_s)


class SlaveUpdateFailed(Exception):
    pass


def main_slave(path, transport, target, console=None, quiet=False, verify=True, poll_s=0.2):
    """Upload ``path`` to the master, forward it to ``target`` (address or 255 = all), watch."""
    pkg, size, digest, sig = checked(path, verify)
    send(transport, pkg, digest, sig, console=console, quiet=quiet, size=size)
    transport.start(target)
    st = watch(transport, size, console=console, quiet=quiet, poll_s=poll_s)
    res = ["slave %d: %s" % (k + 1, r) for k, r in enumerate(st["results"]) if r != "none"]
    if st["phase"] != "done":
        raise SlaveUpdateFailed("slave update stopped: %s (%s)" % (st["fwd_text"], ", ".join(res)))
    return "slave update done: " + ", ".join(res)
