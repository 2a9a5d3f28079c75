"""Shared pieces for the benchmark modules."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Row:
    __slots__ = ("area", "name", "value", "unit", "goal", "note")

    def __init__(self, area, name, value, unit="", goal="", note=""):
        self.area = area
        self.name = name
        self.value = value
        self.unit = unit
        self.goal = goal
        self.note = note

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Ctx:
    def __init__(self, quick=False):
        self.quick = quick
        self.root = ROOT
        self.micropython = find_micropython()
        self._pico = None

    def pico_image(self):
        """The pico build ``make flash`` makes (tools/deploy.py), once per run:
        (directory of its .mpy tree, its files, ROMFS image path, image size).

        Mounted with VfsRom on the unix port the image is a measured stand-in
        for frozen code: bytecode stays in the image (flash on a board) and off
        the heap, while qstrs, raw-code descriptors and constant tuples are
        still created in RAM (a frozen build keeps those in flash too)."""
        if self._pico is None:
            import tempfile
            from tools import deploy
            self._tmp = tempfile.TemporaryDirectory()
            out = os.path.join(self._tmp.name, "pico")
            files = deploy.plan("pico", out)
            img = os.path.join(self._tmp.name, "pico.romfs")
            size, _fs_files = deploy.romfs_image(files, img)
            self._pico = (out, files, img, size)
        return self._pico

    def upy(self, script, *args, heap="4M", timeout=600):
        """Run a MicroPython script (path relative to repo root) and return stdout."""
        path = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "boards"),
                os.path.join(ROOT, "host_tests", "core"), os.path.join(ROOT, "host_tests", "upy"),
                os.path.join(ROOT, "tools", "bench", "upy")]
        env = dict(os.environ, MICROPYPATH=":".join(path))
        r = subprocess.run([self.micropython, "-X", "heapsize=" + heap, os.path.join(ROOT, script)]
                           + [str(a) for a in args], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("micropython %s failed:\n%s%s" % (script, r.stdout, r.stderr))
        return r.stdout


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    return shutil.which("micropython")


def parse_kv(out):
    """Lines 'key value' printed by a MicroPython bench script -> dict of numbers."""
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                res[parts[0]] = float(parts[1]) if "." in parts[1] else int(parts[1])
            except ValueError:
                pass
    return res


def qstr_bytes(out, tag):
    """n_total_bytes of the qstr_info() line printed after the line ``tag``."""
    lines = out.splitlines()
    i = lines.index(tag)
    for part in lines[i + 1].replace(",", " ").split():
        if part.startswith("n_total_bytes="):
            return int(part.split("=")[1])
    raise ValueError("no qstr_info after " + tag)
