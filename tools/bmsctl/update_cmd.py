"""``bmsctl update PKG``: send a firmware package in chunks with a progress bar.

Transport-agnostic: ``transport`` has ``begin(size, sha256, signature)``,
``chunk(offset, data) -> next expected offset``, ``finish() -> str`` and
raises on a refusal (the device's UpdateError text).  ``LocalTransport``
drives a ``bms.update.Updater`` directly (tests, the simulator); a Modbus
transport maps the same calls onto the update register window.

The lead wires it into bmsctl's cli (``sub.add_parser("update")`` ->
``update_cmd.main(args, transport)``).
"""
import json
import os

from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

CHUNK = 200   # bytes per chunk: fits one Modbus write-multiple (123 registers = 246 bytes)
RETRIES = 3


class LocalTransport:
    def __init__(self, updater):
        self.up = updater

    def begin(self, size, digest, signature):
        return self.up.begin(size, digest, signature)

    def chunk(self, offset, data):
        return self.up.chunk(offset, data)

    def finish(self):
        return self.up.finish()


def load(path):
    with open(path, "rb") as f:
        pkg = f.read()
    meta = {}
    if os.path.exists(path + ".sig"):
        with open(path + ".sig") as f:
            meta = json.load(f)
    return pkg, meta


def send(transport, pkg, digest, signature=None, chunk=CHUNK, console=None, quiet=False):
    """Send ``pkg``; resumes from the offset the device reports after a gap."""
    transport.begin(len(pkg), digest, signature)
    off = 0
    with Progress("[bold]update", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, disable=quiet) as prog:
        task = prog.add_task("send", total=len(pkg))
        while off < len(pkg):
            for attempt in range(RETRIES):
                try:
                    off = transport.chunk(off, pkg[off:off + chunk])
                    break
                except OSError:   # link errors: resend the same chunk
                    if attempt == RETRIES - 1:
                        raise
            prog.update(task, completed=off)
    return transport.finish()


def main(path, transport, console=None, quiet=False):
    import hashlib
    pkg, meta = load(path)
    digest = hashlib.sha256(pkg).digest()
    if meta.get("sha256") and meta["sha256"] != digest.hex():
        raise SystemExit("%s does not match its .sig file" % path)
    sig = bytes.fromhex(meta["signature"]) if meta.get("signature") else None
    where = send(transport, pkg, digest, sig, console=console, quiet=quiet)
    return "staged into %s; restart the BMS to run it (rolls back if it does not arm)" % where
