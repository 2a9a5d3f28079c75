"""A slave module's application updated through the master, on emulated
chips: the master (pico image) and one slave module (slave_module image),
each its own emulated RP2040, on one simulated CAN bus.  The operator's
side is bmsctl's slave transport over the master's RS485 port
(comms.regs.slave_update); the master forwards the package over CAN
(comms.slave_update); the slave writes it into its inactive ROMFS slot
(bms.romupdate), reboots into it on trial and confirms.

The package: a real ROMFS application package for the slave module, but
small - ``slave_main`` compiled from this tree plus a label file; the rest
of the slave's modules come from its frozen image (a ROMFS holding no
``slave/`` or ``bms/`` package leaves them to .frozen).  The full slave
application (``fwpkg --romfs --board slave_module``: slave_main's import
closure, ~90 KB) moves at the same rate per byte; its forwarding time is
``make bench`` (area romfs), computed from the rate measured here.

A bad hash: one data frame is altered on the bus after the CAN checks (as
corrupt RAM or flash on the master would), so the slave's SHA-256 of the
package fails and it refuses; the master reports the slave's reason.
"""
import pytest

from rp2_rig import uf2

import tools  # noqa: F401
from comms import can_ids as C
from tools.bmsctl.client import BmsError
from tools.bmsctl.update_cmd import SlaveModbusTransport
from tools.rp2emu.rack import entry_package, master_and_slave, master_client
from tools.rp2emu.repl import Repl

MASTER_CONFIG = "MODULES = True\nOPTS = {'modbus_baud': 115200}\n"


def _wait(r, t, until_ms):
    waited = 0
    while waited < until_ms:
        r.run_ms(250)
        waited += 250
        st = t.status()
        if st["phase"] in ("done", "error"):
            return st
    raise AssertionError("slave update did not end in %d ms: %r" % (until_ms, t.status()))


def _start_when_ok(r, t, tries=40):
    """Start the forward once the master sees the slave ok again (after a
    refused transfer the slave may miss a sweep while it drops its state)."""
    for _i in range(tries):
        try:
            t.start(1)
            return
        except BmsError as e:
            if "is not ok" not in str(e):
                raise
        r.run_ms(500)
    raise AssertionError("slave 1 never came back ok on the master")


@pytest.mark.timeout(1500)   # minutes of emulation: two chips in lockstep
def test_slave_rom_update_through_the_master_refuses_bad_hash_then_applies_and_confirms(
        tmp_path):
    r, bus = master_and_slave(uf2("pico"), uf2("slave_module"))
    slave = r.boards[1]
    spoil = [0]
    sent = [0]
    orig = bus.transmit

    def transmit(node, can_id, data, ext=False):
        if can_id == C.ID_FWDATA:
            sent[0] += 1
            if spoil[0] and sent[0] == spoil[0]:
                data = bytearray(data)
                data[3] ^= 0x20
                spoil[0] = 0
        return orig(node, can_id, data, ext)
    bus.transmit = transmit
    try:
        c = master_client(r, MASTER_CONFIG)   # unlocked, relays open
        pkg, digest = entry_package(str(tmp_path), "slave-2")
        t = SlaveModbusTransport(c)
        t.begin(len(pkg), digest, None)
        off = 0
        while off < len(pkg):
            off = t.chunk(off, pkg[off:off + 240])
        t.finish()
        st = t.status()
        assert st["status"] == "staged", st

        # 1. One data frame altered in transit: the slave refuses, keeps its firmware.
        spoil[0] = sent[0] + 40
        t.start(1)
        st = _wait(r, t, 120000)
        assert st["phase"] == "error" and st["results"][0] == "refused", st
        assert "slave 1 refused the update (sha256 mismatch" in st["fwd_text"], st

        # 2. The same package again: applied, rebooted into, confirmed.
        resets = len(slave.chip.resets)
        t0 = slave.chip.t_ns
        f0 = sent[0]
        _start_when_ok(r, t)
        st = _wait(r, t, 180000)
        t_total = (slave.chip.t_ns - t0) / 1e9
        assert st["phase"] == "done" and st["results"][0] == "updated", st
        assert len(slave.chip.resets) > resets, "the slave never rebooted"
        # Off the slave chip itself: the new slave_main runs from ROMFS slot A, confirmed.
        sr = Repl(slave)
        sr.enter()
        who = sr.eval("(lambda m, R: (m.__file__, open('/rom/fwinfo.txt').read(), "
                      "(lambda s: (s.active, s.state))(R.slots("
                      "__import__('bms.store').store.BoardFs())), "
                      "R.valid(R.partition()[1], 0)))"
                      "(__import__('slave_main'), __import__('bms.romslot').romslot)")
    finally:
        r.close()
    print("slave package %d B: forwarded, applied and confirmed in %.1f s emulated "
          "(%d data frames)" % (len(pkg), t_total, sent[0] - f0))
    assert who[0].startswith("/rom/") and who[1] == "slave-2", who
    assert tuple(who[2]) == (0, 0) and who[3], who        # slot A, marker ok, whole
