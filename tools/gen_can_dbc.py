"""Writes docs/bms_internal.dbc, the reference for the internal CAN protocol.

The DBC is what tools, loggers and reviewers read; ``host_tests/test_can_dbc.py``
checks the firmware's ids and byte packing against it with cantools,
independently of this script.  This script exists so that adding a signal
is one edit (``firmware/comms/can_ids.py`` LAYOUT plus the texts below)
instead of 160 hand-edited messages; re-run it and commit the DBC:

    .venv/bin/python -m tools.gen_can_dbc
"""
import os
import sys

import tools  # noqa: F401
from comms import can_ids as C

OUT = os.path.join(tools.ROOT, "docs", "bms_internal.dbc")

MSG_TEXT = {
    "SYNC": "Start of a sweep; carries the TDMA schedule. Slaves sample their AFE on it and "
            "transmit in slot <addr> (slot 0 is the master's).",
    "ASSIGN": "Auto-addressing: gives address Addr to the slave whose 48-bit uid matches.",
    "REQUEST": "Asks module Addr (0 = all) for a frame: What 1 = VERSION, 2 = ANNOUNCE.",
    "BAL": "Balancing command for one module. The slave bleeds Mask until TimeoutMs passes "
           "without a new command or SYNC, then stops on its own.",
    "CONFIG": "Local hard limits (second line of defence) and expected cell/temperature count.",
    "STATUS": "Heartbeat, first frame of the module's slot every sweep.",
    "CELLS": "Four cell voltages; frame index = id & 3, cells 4*index+1 .. 4*index+4 of the "
             "module. 65535 = not fitted / not measured.",
    "TEMPS": "Module temperatures. 32767 open, 32766 short, -32768 absent (raw values).",
    "VERSION": "Firmware and protocol version, low 32 bits of the uid; on REQUEST or after "
               "address assignment.",
    "ANNOUNCE": "An unaddressed slave whose chain input is active asks for an address.",
    "FWCTL": "Slave firmware update, control. Op 1 BEGIN (Arg = package size, P1 bit0 signed, "
             "P2 = segments per acknowledged block), 2 FINISH, 3 ABORT, 4 APPLY (reboot into "
             "the new slot), 5 QUERY.",
    "FWACK": "Slave firmware update, answer to FWCTL and acknowledgement of data blocks. "
             "Next = stream bytes the slave holds (resume from here).",
    "FWDATA": "Slave firmware update, one 7-byte segment of the stream (SHA-256, signature if "
              "signed, package); segment i has Seq = i mod 256, the last one may be shorter "
              "(DLC 2..8).",
}
SIG_TEXT = {
    ("SYNC", "Flags"): "bit0 sleep, bit1 balancing allowed, bit2 forget auto addresses",
    ("SYNC", "Sweep"): "sweep counter, wraps at 65536",
    ("STATUS", "Faults"): "bit0 OV, bit1 UV, bit2 OT (local hard limits), bit3 NTC fault, "
                          "bit4 AFE not answering, bit5 master lost, bit6 running on defaults",
    ("STATUS", "SweepEcho"): "low byte of the SYNC sweep the data was sampled at",
    ("STATUS", "AgeMs"): "age of the AFE sample when sent (saturates at 2550 ms)",
    ("STATUS", "BalMask"): "bleeders actually on",
    ("CONFIG", "CfgFlags"): "bit0 apply Cells (ignored while the slave's cell count is locked)",
    ("FWCTL", "Session"): "transfer id chosen by the master; echoed in FWACK",
    ("FWACK", "Result"): "0 ok, 1-7 refused by the slave's updater (bms.update E_*: 1 state, "
                         "2 signature, 3 size, 4 offset, 5 sha256, 6 format, 7 flash), "
                         "16 unknown session, 17 out of order, 32 busy, 33 transfer open",
    ("FWACK", "FwSlot"): "running slot + 1: 0 factory (root), 1 a, 2 b",
    ("FWACK", "FwTries"): "boots of the slot on trial (saturates at 15)",
    ("FWDATA", "Data"): "stream bytes 7*i .. 7*i+6, first byte in the low byte",
}
VAL_TABLES = {
    ("STATUS", "State"): ((0, "boot"), (1, "run"), (2, "sleep"), (3, "fault")),
    ("REQUEST", "What"): ((1, "version"), (2, "announce")),
    ("FWCTL", "Op"): ((1, "begin"), (2, "finish"), (3, "abort"), (4, "apply"), (5, "query")),
    ("FWACK", "Op"): ((1, "begin"), (2, "finish"), (3, "abort"), (4, "apply"), (5, "query"),
                      (6, "data")),
    ("FWACK", "FwMarker"): ((0, "ok"), (1, "pending"), (2, "trial"), (3, "staged")),
}
CYCLE = {"SYNC": C.SWEEP_MS, "STATUS": C.SWEEP_MS, "CELLS": C.SWEEP_MS, "TEMPS": C.SWEEP_MS,
         "BAL": C.SWEEP_MS}


def fmt_num(v):
    if isinstance(v, float):
        return ("%.6f" % v).rstrip("0").rstrip(".")
    return str(v)


def sig_range(length, signed, scale, offset):
    if signed:
        lo, hi = -(1 << (length - 1)), (1 << (length - 1)) - 1
    else:
        lo, hi = 0, (1 << length) - 1
    return lo * scale + offset, hi * scale + offset


def instances(name, base, count, stride):
    if count == 1:
        yield name, base, 0, 0
        return
    for k in range(count):
        if name == "CELLS":
            addr, frame = k // C.CELL_FRAMES + 1, k % C.CELL_FRAMES
            yield "M%02d_CELLS_%d" % (addr, frame), base + k, addr, frame
        else:
            yield "M%02d_%s" % (k + 1, name), base + k * stride, k + 1, 0


def build():
    out = ['VERSION "bms-internal %d"' % C.PROTO_VERSION, "", "NS_ :", "", "BS_:", "",
           "BU_: Master Slave", ""]
    comments = ['CM_ "Internal master/slave BMS bus, %d bit/s, 11-bit ids, little-endian. '
                'See docs/can_internal.md for the sweep timing.";' % C.BITRATE]
    vals = []
    attrs = []
    for name, base, count, stride, dlc, sender, sigs in C.LAYOUT:
        for mname, fid, addr, frame in instances(name, base, count, stride):
            out.append("BO_ %d %s: %d %s" % (fid, mname, dlc, sender))
            recv = "Slave" if sender == "Master" else "Master"
            for sname, start, length, signed, scale, offset, unit in sigs:
                sn = sname
                if name == "CELLS":
                    sn = "Cell%02d" % (frame * 4 + "ABCD".index(sname[-1]) + 1)
                lo, hi = sig_range(length, signed, scale, offset)
                out.append(' SG_ %s : %d|%d@1%s (%s,%s) [%s|%s] "%s" %s' % (
                    sn, start, length, "-" if signed else "+", fmt_num(scale), fmt_num(offset),
                    fmt_num(lo), fmt_num(hi), unit, recv))
                t = SIG_TEXT.get((name, sname))
                if t:
                    comments.append('CM_ SG_ %d %s "%s";' % (fid, sn, t))
                vt = VAL_TABLES.get((name, sname))
                if vt:
                    vals.append("VAL_ %d %s %s ;" % (fid, sn, " ".join('%d "%s"' % v for v in vt)))
            out.append("")
            text = MSG_TEXT[name]
            if addr:
                text = "Module %d. %s" % (addr, text)
            comments.append('CM_ BO_ %d "%s";' % (fid, text))
            if name in CYCLE:
                attrs.append('BA_ "GenMsgCycleTime" BO_ %d %d;' % (fid, CYCLE[name]))
    out += comments
    out += ['BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;', 'BA_DEF_ "Baudrate" INT 0 1000000;',
            'BA_DEF_DEF_ "GenMsgCycleTime" 0;', 'BA_DEF_DEF_ "Baudrate" 500000;',
            'BA_ "Baudrate" %d;' % C.BITRATE]
    out += attrs
    out += vals
    return "\n".join(out) + "\n"


def main():
    text = build()
    with open(OUT, "w") as f:
        f.write(text)
    import cantools
    db = cantools.database.load_file(OUT)
    print("wrote %s: %d messages" % (OUT, len(db.messages)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
