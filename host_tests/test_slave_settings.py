"""A slave module's settings (slave.json: address, cell count, lock) survive a
power cut at any point of a save (docs/storage.md: a cut leaves the old
settings or the new ones), and a file the module cannot use never stops its
loop from starting (it would reset every 8 s from the boot watchdog)."""
import os

import pytest

import tools  # noqa: F401
from fakeflash import FakeFlash, PowerCut
import slave_main as SM

OLD = {"addr": 16, "cells": 12, "locked": False}
NEW = {"addr": 16, "cells": 10, "locked": True}


@pytest.fixture
def fs(monkeypatch):
    f = FakeFlash()
    monkeypatch.setattr(SM, "open", f.open, raising=False)
    monkeypatch.setattr(os, "rename", f.rename)
    return f


def test_a_power_cut_at_every_point_of_a_save_keeps_the_old_or_the_new(fs):
    SM.save_settings(OLD)
    assert SM.load_settings() == OLD
    u0 = fs.units
    SM.save_settings(NEW)
    units = fs.units - u0
    SM.save_settings(OLD)
    assert units > 2
    for cut in range(units + 1):
        fs.cut_after(cut)
        try:
            SM.save_settings(NEW)
        except PowerCut:
            pass
        fs.reboot()
        got = SM.load_settings()
        assert got in (OLD, NEW), (cut, got)
        SM.save_settings(OLD)


@pytest.mark.parametrize("text,want", [
    (b'{"addr": 5, "ce', {"addr": 0, "cells": 16, "locked": False}),
    (b'{"addr": 40, "cells": 12}', {"addr": 0, "cells": 12, "locked": False}),
    (b'{"addr": 3, "cells": 2}', {"addr": 3, "cells": 16, "locked": False}),
    (b'[1, 2]', {"addr": 0, "cells": 16, "locked": False}),
    (b'{"addr": "x"}', {"addr": 0, "cells": 16, "locked": False}),
])
def test_an_unusable_file_gives_defaults_for_what_is_wrong(fs, text, want):
    f = fs.open(SM.SETTINGS, "wb")
    f.write(text)
    f.close()
    assert SM.load_settings() == want
