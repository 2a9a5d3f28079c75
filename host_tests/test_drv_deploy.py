# tools/deploy: the dry-run plan builds real .mpy files and lists exactly
# what goes where; the mpremote commands copy that list and nothing else.
import os

from tools import deploy


def test_pico_plan_lists_every_module_once(tmp_path):
    out = str(tmp_path / "pico")
    files = deploy.plan("pico", out)
    remote = [r for _l, r in files]
    assert len(remote) == len(set(remote))
    assert remote[-1] == "main.py"                       # source, copied last
    assert "config.py" in remote and "diag.mpy" in remote
    assert not [r for r in remote if r.startswith("manifest")]
    assert "boards/pico.mpy" in remote and "boards/common.mpy" in remote
    assert "boards/esp32_devkit.mpy" not in remote and "boards/pico_w.mpy" not in remote
    for sub in ("bms", "drivers", "slave"):
        for f in os.listdir(os.path.join(deploy.ROOT, "firmware", sub)):
            if f.endswith(".py"):
                rel = "%s/%s" % (sub, f)
                assert (rel[:-3] + ".mpy" in remote) == (rel not in deploy.NOT_ON_BOARDS), f
    # What is left out really is wired by no board: nothing a board runs imports it.
    for rel in deploy.NOT_ON_BOARDS:
        mod = rel[:-3].replace("/", ".")
        for root, _dirs, fs in os.walk(os.path.join(deploy.ROOT, "firmware")):
            for f in fs:
                if f.endswith(".py") and os.path.join(root, f) != os.path.join(
                        deploy.ROOT, "firmware", rel):
                    with open(os.path.join(root, f)) as fh:
                        assert mod not in fh.read(), (f, mod)
        for f in os.listdir(os.path.join(deploy.ROOT, "boards")):
            if f.endswith(".py"):
                with open(os.path.join(deploy.ROOT, "boards", f)) as fh:
                    assert mod not in fh.read(), (f, mod)
    for local, r in files:
        assert os.path.exists(local)
        if r.endswith(".mpy"):
            with open(local, "rb") as fh:
                head = fh.read(2)
            assert head == b"M\x06"                      # mpy v6 header
    with open(os.path.join(out, "config.py")) as fh:
        assert 'BOARD = "pico"' in fh.read()


def test_pico_w_pulls_in_the_pico_pin_table(tmp_path):
    remote = [r for _l, r in deploy.plan("pico_w", str(tmp_path / "w"))]
    assert "boards/pico.mpy" in remote and "boards/pico_w.mpy" in remote


def test_commands_copy_exactly_the_plan(tmp_path):
    files = deploy.plan("slave_module", str(tmp_path / "s"))
    cmds = deploy.commands("/dev/ttyACM0", files)
    assert all(c[1:3] == ["connect", "/dev/ttyACM0"] for c in cmds)
    assert cmds[0][3] == "exec" and "os.remove" in cmds[0][4]
    cp = cmds[1]
    pairs = [(cp[i + 2], cp[i + 3]) for i in range(3, len(cp), 5)]
    assert pairs == [(loc, ":" + r) for loc, r in files]
    assert cmds[2][3:] == ["reset"]
    # .py twins of the installed .mpy files are removed first (they would shadow them)
    assert "'drivers/mcp2515.py'" in cmds[0][4]


def test_dry_run_main_prints_plan(tmp_path, capsys):
    assert deploy.main(["--board", "pico", "--dry-run", "--out", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert ":drivers/ina228.mpy" in text and "dry run: would run" in text


ROM_BOOT = """
import sys, vfs
img = open(sys.argv[1], 'rb').read()
vfs.mount(vfs.VfsRom(img), '/rom')
sys.path.insert(0, '/rom')
from drv_fakemachine import FakeMachine
from bms.ticks import VirtualClock
import app
fm = FakeMachine([3300 + i for i in range(16)])
clock = VirtualClock(0)
a = app.build('pico', machine=fm, clock=clock)
for _ in range(3000):
    w = a.step()
    clock.advance(w if w > 0 else 1)
print('from', app.__file__, sys.modules['bms.core'].__file__, sys.modules['boards.pico'].__file__)
print('running', a.bms.running, 'failed', len(a.failed))
"""


def test_romfs_image_boots_the_pico_app_under_micropython(tmp_path):
    """The --romfs image (armv6m .mpy; comms.crc16_viper is native armv6m code, which the
    x64 unix port refuses, so comms.crc16 falls back to bytecode) mounted with VfsRom on the
    real unix port: every module comes from the image and the app reaches running."""
    import subprocess
    from tools.bench.common import find_micropython
    files = deploy.plan("pico", str(tmp_path / "p"))
    img = str(tmp_path / "bms.romfs")
    size, fs_files = deploy.romfs_image(files, img)
    assert sorted(r for _l, r in fs_files) == ["boot.py", "config.py", "main.py"]
    with open(img, "rb") as fh:
        assert fh.read(3) == b"\xd2\xcd\x31" and size > 50000   # ROMFS header
    cmds = deploy.commands("/dev/ttyACM0", fs_files, in_rom=["bms/core.mpy"])
    assert "'bms/core.mpy'" in cmds[0][4] and "'bms/core.py'" in cmds[0][4]
    script = tmp_path / "rom_boot.py"
    script.write_text(ROM_BOOT)
    env = dict(os.environ, MICROPYPATH=os.path.join(deploy.ROOT, "host_tests", "upy"))
    r = subprocess.run([find_micropython(), "-X", "heapsize=4M", str(script), img],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from /rom/app.mpy /rom/bms/core.mpy /rom/boards/pico.mpy" in r.stdout
    assert "running True failed 0" in r.stdout
