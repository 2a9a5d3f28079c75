"""tools/flash: how the UF2 gets onto a Pico (no hardware here: a BOOTSEL
drive is a folder with the INFO_UF2.TXT the bootrom serves)."""
import pytest

from tools import flash

BOOTROM_INFO = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"


def _drive(tmp_path, info=BOOTROM_INFO):
    d = tmp_path / "media" / "user" / "RPI-RP2"
    d.mkdir(parents=True)
    (d / "INFO_UF2.TXT").write_text(info)
    return d


def test_a_mounted_bootsel_drive_is_found_and_gets_the_image(tmp_path):
    d = _drive(tmp_path)
    assert flash.find_drive((str(tmp_path / "media" / "*" / "RPI-RP2"),)) == str(d)
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(b"\x55\x46\x32\x0a" + bytes(508))
    out = flash.copy_to_drive(str(uf2), str(d))
    assert open(out, "rb").read() == uf2.read_bytes()


def test_a_folder_that_is_not_a_bootsel_drive_is_refused(tmp_path):
    assert flash.find_drive((str(tmp_path / "nothing" / "*"),)) is None
    d = _drive(tmp_path, "UF2 Bootloader v1\nModel: Adafruit Feather M0\n")
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(bytes(512))
    with pytest.raises(flash.FlashError, match="not an RP2040"):
        flash.copy_to_drive(str(uf2), str(d))


def test_plan_prefers_the_drive_then_picotool_then_the_port():
    _uf2, steps = flash.plan("pico", port="/dev/ttyACM0", drive="/media/u/RPI-RP2",
                             have_picotool=True)
    assert [s[0] for s in steps] == ["build", "copy", "config"]
    _uf2, steps = flash.plan("pico", port=None, drive=None, have_picotool=True)
    assert [s[0] for s in steps] == ["build", "picotool"]
    assert steps[1][1][:2] == ["picotool", "load"] and "-f" in steps[1][1]
    _uf2, steps = flash.plan("pico", port="/dev/ttyACM0", drive=None, have_picotool=False)
    assert [s[0] for s in steps] == ["build", "bootloader", "copy", "config"]
    assert steps[1][1][-1] == "bootloader"


def test_no_way_to_reach_the_chip_says_what_to_do():
    with pytest.raises(flash.FlashError, match="BOOTSEL"):
        flash.plan("pico", port=None, drive=None, have_picotool=False)


def test_config_names_the_board():
    ns = {}
    exec(flash.config_text("pico32", {"cells": 24}), ns)
    assert ns["BOARD"] == "pico32" and ns["OPTS"] == {"cells": 24}


def test_dry_run_prints_the_steps(capsys, monkeypatch):
    monkeypatch.setattr(flash, "find_drive", lambda *a: None)
    monkeypatch.setattr(flash.shutil, "which", lambda name: None)
    assert flash.run("pico", port="/dev/ttyACM0", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "bootloader" in out and "config" in out


def test_config_py_is_not_replaced_when_the_board_did_not_answer(tmp_path, monkeypatch):
    # The module doc: config.py goes onto the board "unless the board has one
    # already".  Its OPTS hold the board's hardware (shunt_uohm, cells, NTCs):
    # written over by the defaults, a 50 uOhm shunt reads half the current.
    # A check that failed (mpremote could not reach the board just after the
    # reboot) says nothing about config.py: nothing may be written then.
    d = _drive(tmp_path)
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(bytes(512))
    monkeypatch.setattr(flash.fwbuild, "build", lambda board: str(uf2))
    monkeypatch.setattr(flash, "ROOT", str(tmp_path))
    (tmp_path / "build" / "pico").mkdir(parents=True)
    port = tmp_path / "ttyACM0"   # the board's USB serial port, back after the reboot
    port.write_text("")
    ran = []

    class Done:
        def __init__(self, rc, out=""):
            self.returncode, self.stdout, self.stderr = rc, out, "could not enter raw repl"

    def fake_run(argv, **kw):
        ran.append(argv)
        if "exec" in argv:
            return Done(1)
        return Done(0)
    monkeypatch.setattr(flash.subprocess, "run", fake_run)
    with pytest.raises(flash.FlashError, match="config.py"):
        flash.run("pico", port=str(port), drive=str(d))
    assert not any("cp" in argv for argv in ran), ran
    # The board answering: "keep" keeps it, "write" writes one.
    for answer, copied in (("keep\n", False), ("write\n", True)):
        ran.clear()
        monkeypatch.setattr(flash.subprocess, "run", lambda argv, **kw: (
            ran.append(argv), Done(0, answer if "exec" in argv else ""))[1])
        assert flash.run("pico", port=str(port), drive=str(d)) == 0
        assert any("cp" in argv for argv in ran) == copied, ran


def test_a_kept_config_py_for_another_board_is_an_error(tmp_path, monkeypatch):
    # app.board_name: config.py's BOARD wins over the board the image was
    # built for.  Flashing the pico32 (17-32S) image onto a board whose kept
    # config.py says BOARD = 'pico' runs it as the 16S board: the tool must say
    # so, not print "config.py on the board kept".
    d = _drive(tmp_path)
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(bytes(512))
    monkeypatch.setattr(flash.fwbuild, "build", lambda board: str(uf2))
    port = tmp_path / "ttyACM0"
    port.write_text("")

    class Done:
        returncode, stderr = 0, ""

        def __init__(self, out):
            self.stdout = out
    for answer, ok in (("keep pico\n", False), ("keep pico32\n", True), ("keep\n", True)):
        monkeypatch.setattr(flash.subprocess, "run", lambda argv, **kw: Done(
            answer if "exec" in argv else ""))
        if ok:
            assert flash.run("pico32", port=str(port), drive=str(d)) == 0
        else:
            with pytest.raises(flash.FlashError, match="BOARD = 'pico'"):
                flash.run("pico32", port=str(port), drive=str(d))
