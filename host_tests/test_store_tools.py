"""Host tools for the store area: fwpkg + update_cmd, lease_token, eventlog_csv (CPython)."""
import csv
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

import tools  # noqa: F401
from bms import faults as F
from bms import lease as LS
from bms import persistlog as PL
from bms import update as U
from bms.digest import hmac_sha256
from tools import ROOT, eventlog_csv, fwpkg, lease_token
from tools.bmsctl import update_cmd

sys.path.insert(0, os.path.join(ROOT, "host_tests", "upy"))
from fakeflash import FakeFlash  # noqa: E402

KEY = b"k" * 32


def test_fwpkg_tar_is_standard_and_accepted(tmp_path):
    out = tmp_path / "fw.tar"
    key = tmp_path / "dev.key"
    key.write_bytes(KEY)
    fwpkg.main(["--out", str(out), "--key-file", str(key)])
    with tarfile.open(out) as t:           # a standard tar any tool can list
        names = t.getnames()
    assert "bms/update.py" in names and "bms/core.py" in names
    meta = json.loads((tmp_path / "fw.tar.sig").read_text())
    fs = FakeFlash()
    up = U.Updater(fs, key=KEY, max_size=4 << 20)
    msg = update_cmd.main(str(out), update_cmd.LocalTransport(up), quiet=True)
    assert "/fw/a" in msg and meta["size"] == out.stat().st_size
    src = open(os.path.join(ROOT, "firmware", "bms", "lease.py"), "rb").read()
    assert bytes(fs.files["/fw/a/bms/lease.py"]) == src


def test_update_cmd_refusal_is_clear(tmp_path):
    out = tmp_path / "fw.tar"
    fwpkg.main(["--out", str(out)])       # unsigned
    fs = FakeFlash()
    up = U.Updater(fs, key=KEY, max_size=4 << 20)
    with pytest.raises(U.UpdateError, match="signature required"):
        update_cmd.main(str(out), update_cmd.LocalTransport(up), quiet=True)


def test_update_cmd_retries_link_errors_and_resumes():
    class Flaky(update_cmd.LocalTransport):
        n = 0

        def chunk(self, off, data):
            self.n += 1
            if self.n % 5 == 0:
                raise OSError("timeout")
            return super().chunk(off, data)

    fs = FakeFlash()
    pkg = fwpkg.build_tar()
    import hashlib
    up = U.Updater(fs, max_size=4 << 20)
    update_cmd.send(Flaky(up), pkg, hashlib.sha256(pkg).digest(), quiet=True)
    assert up.state == U.ST_PENDING


def test_lease_token_cli_roundtrip(tmp_path, capsys):
    master = tmp_path / "master.key"
    master.write_bytes(b"vendor master")
    lease_token.main(["--master-key-file", str(master), "--serial", "SN7", "--counter", "3",
                      "--days", "30"])
    code = capsys.readouterr().out.strip()
    secret = hmac_sha256(b"vendor master", b"SN7")
    assert LS.parse_token(secret, "SN7", code) == (3, 30)
    with pytest.raises(LS.LeaseError):
        LS.parse_token(secret, "SN8", code)


def test_eventlog_csv(tmp_path):
    fs = FakeFlash()
    log = PL.PersistLog(fs)
    log.append(100, 1, F.UV1, 2400)
    log.append(200, PL.PK_RESET, 2, 3)
    log.flush()
    d = tmp_path / "log"
    d.mkdir()
    for path, data in fs.files.items():
        (d / os.path.basename(path)).write_bytes(bytes(data))
    buf = io.StringIO()
    eventlog_csv.write_csv(eventlog_csv.read_dir(str(d)), buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0]["kind_name"] == "fault_set" and rows[0]["subject"] == "uv1" and rows[0]["b"] == "2400"
    assert rows[1]["kind_name"] == "reset" and rows[1]["subject"] == "watchdog"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eventlog_csv.py"), str(d)],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.count("\n") == 3, r.stderr
