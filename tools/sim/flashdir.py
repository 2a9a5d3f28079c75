"""The simulated board's flash filesystem: a host directory behind absolute paths.

Firmware code opens ``/data/log/log.0`` or ``/fw/a/...``; ``FlashDir`` maps
those onto a host directory (a temp dir by default) with the subset of
MicroPython's ``os`` that ``bms.store.BoardFs`` exposes.

Without a path the directory is a temporary one that is removed when the
FlashDir is collected or the interpreter exits (tests used to leave one
behind per run, hundreds of them); ``make sim`` passes its named state
folder under ``build/sim/`` instead, which stays.
"""
import os
import shutil
import tempfile
import weakref


class FlashDir:
    def __init__(self, path=None):
        self.temporary = not path
        self.path = path or tempfile.mkdtemp(prefix="bms-flash-")
        os.makedirs(self.path, exist_ok=True)
        if self.temporary:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, True)

    def _p(self, p):
        return os.path.join(self.path, p.lstrip("/"))

    def open(self, p, mode="r"):
        return open(self._p(p), mode)

    def rename(self, a, b):
        os.replace(self._p(a), self._p(b))

    def remove(self, p):
        os.remove(self._p(p))

    def mkdir(self, p):
        os.mkdir(self._p(p))

    def rmdir(self, p):
        os.rmdir(self._p(p))

    def listdir(self, p="/"):
        return sorted(os.listdir(self._p(p)))

    def stat(self, p):
        return tuple(os.stat(self._p(p)))
