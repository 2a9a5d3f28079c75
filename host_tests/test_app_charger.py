"""The special charger on the board build (issue 16, item 7): on the CAN bus
(config CHARGER_CAN, Elcon 29-bit frames), and on a second RS485 at the same
time as the display on the TTL port."""
from test_app_wiring import Rig

from bms import params as P
from comms.crc16 import crc16

CMD_ID = 0x1806E5F4      # Elcon / TC charger: BMS -> charger
STATUS_ID = 0x18FF50E5   # charger -> BMS


class CanCfg:
    CHARGER_CAN = True


def test_charger_on_can_sends_targets_and_hears_the_charger():
    rig = Rig(cfg=CanCfg)
    app = rig.app
    assert "charger_can" in app.parts and "inverter" not in app.parts, app.failed
    rig.run(2000)
    # Parameter off: the command is "stop" (byte 4 = 1) with 0 V / 0 A.
    stops = [bytes(d) for cid, d, ext in rig.peer.inbox if cid == CMD_ID and ext]
    assert stops and stops[-1][4] == 1 and stops[-1][:4] == b"\0\0\0\0"
    app.bms.params.set_many(((P.P_SPECIAL_CHARGER, 1),))
    rig.peer.inbox.clear()
    for _ in range(3):
        # The charger answers every second: 54.0 V, 10.0 A, no fault (big-endian).
        rig.peer.send(STATUS_ID, bytes((0x02, 0x1C, 0x00, 0x64, 0, 0, 0, 0)), True)
        rig.run(1000)
    cmds = [bytes(d) for cid, d, ext in rig.peer.inbox if cid == CMD_ID and ext]
    assert cmds, [hex(c) for c, _d, _e in rig.peer.inbox]
    last = cmds[-1]
    assert last[4] == 0   # charge
    cvl_dv = (last[0] << 8) | last[1]
    assert cvl_dv == app.bms.limits.cvl_mv // 100 and cvl_dv > 0
    chg = app.parts["charger"]
    assert chg.present and chg.out_dv == 540 and chg.out_da == 100
    assert app.poll_errors == 0


def test_charger_on_its_own_rs485_runs_beside_the_display(monkeypatch):
    import boards.pico as pico
    monkeypatch.setitem(pico.PINS, "charger_rs485", (2, 6, 7, 3))
    rig = Rig()
    app = rig.app
    app.bms.params.set_many(((P.P_SPECIAL_CHARGER, 1),))
    rig.run(1000)
    ttl = rig.uarts[1]
    chg_uart = rig.uarts[2]
    assert app.parts["charger"].port is not None
    assert len(chg_uart.tx) >= 14 and chg_uart.tx[:2] == b"\xA5\x5A"
    f = bytes(chg_uart.tx[:14])
    assert f[3] == 0x10 and crc16(f, 2, 12) == f[12] | (f[13] << 8)
    # The display still answers on the TTL port: summary request 0x01.
    req = bytearray(b"\xA5\x5A\x00\x01")
    c = crc16(req, 2, 4)
    req += bytes((c & 0xFF, c >> 8))
    ttl.tx[:] = b""
    ttl.rx += req
    rig.run(200)
    assert ttl.tx[:2] == b"\xA5\x5A" and ttl.tx[3] == 0x81, bytes(ttl.tx).hex()
