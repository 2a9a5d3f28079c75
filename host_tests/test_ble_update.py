"""Firmware update over Bluetooth against the whole simulated app.

``app.build("pico_w")`` on the fake machine and fake flash: the board has a
radio, so the app serves the register map over the BLE framing as well.
The central is ``tools.bleclient`` (its own chunker, reassembler and CRC)
carrying bmsctl's ``BmsClient`` and the update transport, exactly as
``bmsctl --ble ADDRESS update PKG`` does, with a loopback instead of the
radio (no aioble, no bleak on the host: the ``ble_radio`` part is skipped
and the product runs without it).
"""
import pytest

from bms import update as U
from bms.auth import CH_BLE, CH_MODBUS, ROLE_USER
from bms.contactors import RELAY_DSG
from bms.eventlog import EV_RELAY
from comms.regs import update as RU
from comms.registers import A_AUTH, A_UPDATE
from modbus_rig import ascii_regs
from test_app_wiring import Rig, write_regs
from test_fwupdate_modbus import FILES, make_pkg
from tools.bleclient import BleModbusClient, LoopbackTransport
from tools.bmsctl import update_cmd
from tools.bmsctl.cli import main
from tools.bmsctl.client import BmsClient, BmsError

FAST = 1   # bms.sched task index of the fast control task


@pytest.fixture
def rig():
    r = Rig(board="pico_w")
    r.run(3000)      # relays closed, the BMS armed
    # Bluetooth refuses writes while the published default password is set:
    # the owner changed it (over RS485) before using the radio.
    from bms.auth import ROLE_USER as USER
    a = r.app.parts["auth"]
    assert a.unlock(CH_MODBUS, b"123456") == 0
    assert a.change(CH_MODBUS, USER, PW.encode()) == 0
    a.lock(CH_MODBUS)
    return r


PW = "secret77"


def central(rig, mtu=185):
    t = LoopbackTransport(rig.app.parts["ble"], mtu=mtu,
                          wait=lambda s: rig.run(max(1, int(s * 1000))))
    return t, BmsClient("ble", client=BleModbusClient(t)).connect()


def test_ble_is_a_part_of_the_radio_boards_only(rig):
    app = rig.app
    assert "ble" in app.parts and app.failed == ["ble_radio"]    # no aioble on the host
    assert app.parts["ble"].auth is app.parts["auth"]           # one Auth for all channels
    assert "ble" not in Rig().app.parts                          # plain pico: no radio

    class NoBle:
        BLE = False
    assert "ble" not in Rig(board="pico_w", cfg=NoBle).app.parts
    assert app.bms.running and app.poll_errors == 0


def test_a_crashing_radio_task_never_stops_the_loop(rig, monkeypatch):
    """On a board the radio glue runs as an asyncio task beside the loop."""
    import asyncio

    import app as main
    monkeypatch.setattr(main, "IDLE_MAX_MS", 0)   # no idle sleeps on the host
    app = rig.app
    calls = []

    async def radio():
        calls.append(1)
        await asyncio.sleep(0)
        raise RuntimeError("radio glue bug")
    app.tasks.append(("ble_radio", radio))
    loops = app.loops
    asyncio.run(app.run_async(loops=200))
    assert calls == [1] and app.loops == loops + 200
    assert app.failed.count("ble_radio") == 2 and app.bms.running and app.bms.exceptions == 0


@pytest.mark.parametrize("mtu", [23, 185])
def test_complete_update_over_ble(rig, tmp_path, mtu):
    app = rig.app
    up = app.updater()
    t, c = central(rig, mtu)
    c.unlock(PW)
    assert app.parts["auth"].role(CH_BLE) == ROLE_USER
    assert app.parts["auth"].role(CH_MODBUS) == 0                # RS485 stays locked
    path, pkg = make_pkg(tmp_path)
    tr = update_cmd.ModbusTransport(c, sleep=t.wait, interval=0.001)   # 1 loop pass per poll
    seen = []
    finish = tr.finish
    runs = []

    def watched_finish(progress=None):
        runs.append((app.bms.sched.runs[FAST], rig.clock.elapsed_ms))
        r = finish(lambda ph, pm: seen.append((ph, pm)))
        runs.append((app.bms.sched.runs[FAST], rig.clock.elapsed_ms))
        return r
    up.step_bytes = 128     # more, smaller steps: a finish that spans several control cycles
    tr.finish = watched_finish
    msg = update_cmd.main(str(path), tr, quiet=True)
    assert "staged" in msg
    assert up.state == U.ST_PENDING and up.phase == U.PH_NONE
    # The finish ran in steps while the control loop kept running.
    assert {"verifying", "unpacking"} <= {ph for ph, _pm in seen}, seen
    elapsed = runs[1][1] - runs[0][1]
    assert elapsed > 100 and up.steps > 100, (elapsed, up.steps)
    assert runs[1][0] - runs[0][0] >= elapsed // 50 - 1       # every 50 ms cycle ran
    assert app.bms.sched.overruns[FAST] == 0
    assert app.bms.exceptions == 0 and app.poll_errors == 0
    # The load kept its power: no relay opened during the transfer or the finish.
    assert not [e for e in app.bms.log.find(EV_RELAY, RELAY_DSG) if e[4] == 0]
    assert app.bms.contactors.state[RELAY_DSG]
    with rig.fs.open("/fw/a/bms/version.py", "rb") as f:
        assert f.read() == FILES["bms/version.py"]
    assert "/fw/stage.pkg" not in rig.fs.files
    # The persistent log has the staged event.
    from bms.persistlog import PK_UPDATE
    app.parts["persistlog"].flush()
    assert [r for r in app.parts["persistlog"].records()
            if r[2] == PK_UPDATE and r[4] == U.U_STAGED]
    # Status over BLE, then restart into it: the next boot selects slot a.
    st = tr.status()
    assert st["status"] == "staged" and st["fw_state"] == "pending" and st["finish_pm"] == 1000
    assert U.Updater(rig.fs).select_at_boot() == "/fw/a"


def test_unauthenticated_ble_client_is_refused_the_update(rig, tmp_path):
    app = rig.app
    up = app.updater()
    # RS485 unlocked: that session does not unlock Bluetooth.
    r = write_regs(rig, A_AUTH, ascii_regs(PW.encode(), 8))
    assert r[1] == 16, r.hex()
    assert app.parts["auth"].role(CH_MODBUS) == ROLE_USER
    t, c = central(rig)
    path, _pkg = make_pkg(tmp_path)
    with pytest.raises(BmsError) as e:
        update_cmd.main(str(path), update_cmd.ModbusTransport(c, sleep=t.wait), quiet=True)
    assert e.value.code == 1 and "locked" in str(e.value), str(e.value)
    assert up._f is None and up.phase == U.PH_NONE and up.state == U.ST_OK
    for cmd in (RU.UC_FINISH, RU.UC_ABORT, RU.UC_RESTART):
        with pytest.raises(BmsError) as e:
            c.write(A_UPDATE + RU.UP_CMD, [cmd])
        assert e.value.code == 1
    assert "/fw/stage.pkg" not in rig.fs.files and "/fw/a" not in rig.fs.dirs
    assert not app.bms.restart_requested


def test_ble_lock_mid_transfer_stops_the_update(rig, tmp_path):
    """A disconnect locks the BLE session: the rest of the transfer is refused."""
    up = rig.app.updater()
    t, c = central(rig)
    c.unlock(PW)
    path, pkg = make_pkg(tmp_path)
    tr = update_cmd.ModbusTransport(c, sleep=t.wait)
    tr.begin(len(pkg), __import__("hashlib").sha256(pkg).digest(), None)
    assert tr.chunk(0, pkg[:240]) == 240
    rig.app.parts["ble"].reset()              # the central went away
    with pytest.raises(BmsError) as e:
        tr.chunk(240, pkg[240:480])
    assert e.value.code == 1 and up.offset == 240


def test_bmsctl_ble_option_runs_the_update(rig, tmp_path, capsys):
    path, _pkg = make_pkg(tmp_path)
    made = []

    def transport(address, timeout):
        t = LoopbackTransport(rig.app.parts["ble"], mtu=185,
                              wait=lambda s: rig.run(max(1, int(s * 1000))))
        made.append((address, t))
        return t
    rc = main(["--ble", "AA:BB:CC:DD:EE:FF", "--password", PW, "update", str(path)],
              ble_transport=transport)
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert "staged" in out and made[0][0] == "AA:BB:CC:DD:EE:FF"
    assert rig.app.updater().state == U.ST_PENDING
    rc = main(["--ble", "AA:BB:CC:DD:EE:FF", "update", "x", "--status"], ble_transport=transport)
    assert rc == 0 and "pending" in capsys.readouterr().out
