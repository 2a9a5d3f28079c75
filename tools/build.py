"""Compile every firmware file with mpy-cross.

``--check`` compiles into a scratch directory and fails on the first error
(used by ``make test``); ``--out DIR`` keeps the .mpy tree for deployment.
The architecture flag is per board family (armv6m for RP2040, xtensawin for
ESP32), so code using ``@micropython.native``/``viper`` is compiled for the
right emitter.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "firmware"), os.path.join(ROOT, "boards")]
ARCH = {"pico": "armv6m", "pico_w": "armv6m", "slave": "armv6m", "esp32": "xtensawin"}
# main.py / boot.py must stay source: MicroPython only runs them as .py.
KEEP_SOURCE = ("main.py", "boot.py")


def mpy_cross():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return cand if os.path.exists(cand) else "mpy-cross"


def sources():
    for base in SOURCES:
        for dirpath, _dirs, files in os.walk(base):
            for f in sorted(files):
                if f.endswith(".py"):
                    full = os.path.join(dirpath, f)
                    # boards/ files land at the filesystem root next to firmware/
                    rel = os.path.relpath(full, base)
                    if base.endswith("boards"):
                        rel = os.path.join("boards", rel)
                    yield full, rel


def compile_all(out, arch="armv6m", verbose=False):
    """Compile every firmware file into ``out``; [(rel, dst or None if kept as source)]
    in source order.  mpy-cross runs in parallel (one process per file)."""
    from concurrent.futures import ThreadPoolExecutor
    exe = mpy_cross()
    jobs = []
    for full, rel in sources():
        if os.path.basename(rel) in KEEP_SOURCE and os.path.dirname(rel) == "":
            jobs.append((full, rel, None))
            continue
        dst = os.path.join(out, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        jobs.append((full, rel, dst))

    def run(job):
        full, rel, dst = job
        if dst is None:
            return None
        return subprocess.run([exe, "-march=" + arch, "-o", dst, "-s", rel, full],
                              capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        done = list(ex.map(run, jobs))
    results = []
    for (full, rel, dst), r in zip(jobs, done):
        if r is not None and r.returncode != 0:
            raise SystemExit("mpy-cross failed on %s:\n%s%s" % (rel, r.stdout, r.stderr))
        results.append((rel, dst))
        if verbose and dst is not None:
            print("  %-40s %6d bytes" % (rel, os.path.getsize(dst)))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--board", default="pico")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    archs = [a.arch] if a.arch else sorted(set(ARCH.values())) if a.check else [ARCH[a.board]]
    for arch in archs:
        out = a.out or tempfile.mkdtemp(prefix="mpy-")
        res = compile_all(out, arch, a.verbose)
        n = sum(1 for _r, d in res if d)
        print("mpy-cross -march=%s: %d files compiled, %d kept as source" % (arch, n, len(res) - n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
