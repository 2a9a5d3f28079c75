"""tools/upy32 turns the board manifest into a unix-port one; it must keep
freezing exactly what the board freezes."""
import os

from tools import upy32


def test_unix_manifest_freezes_the_board_packages(tmp_path):
    out = tmp_path / "m.py"
    upy32.unix_manifest(str(out))
    text = out.read_text()
    assert upy32.PORT_LINE not in text
    assert 'include("$(MPY_DIR)/extmod/asyncio")' in text
    fw = os.path.join(upy32.ROOT, "firmware")
    for pkg in ("bms", "drivers", "comms", "slave"):
        assert 'package("%s", base_path="%s"' % (pkg, fw) in text
    assert 'module("app.py", base_path="%s"' % fw in text
    assert 'package("boards", base_path="%s"' % upy32.ROOT in text
    assert 'base_path="."' not in text and 'base_path=".."' not in text


def test_sources_are_pinned():
    for ver, name, sha in upy32.SOURCES:
        assert name.startswith("micropython_" + ver) and len(sha) == 64
