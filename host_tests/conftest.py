import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import tools  # noqa: E402,F401  (puts firmware/ and the CPython shims on sys.path)

for d in ("core", "upy"):
    p = os.path.join(HERE, d)
    if p not in sys.path:
        sys.path.insert(0, p)

# Property tests draw the same examples on every run (the suite must be
# deterministic for CI); HYPOTHESIS_PROFILE=explore searches afresh.
try:
    from hypothesis import settings as _hs
    _hs.register_profile("ci", derandomize=True, database=None)
    _hs.register_profile("explore", derandomize=False)
    _hs.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in requirements.txt
    pass
