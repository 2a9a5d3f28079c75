import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import tools  # noqa: E402,F401  (puts firmware/ and the CPython shims on sys.path)

for d in ("core", "upy"):
    p = os.path.join(HERE, d)
    if p not in sys.path:
        sys.path.insert(0, p)
