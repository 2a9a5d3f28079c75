"""Host-side tools. Importing this package makes the firmware importable.

The firmware is laid out as it will be on the board's filesystem root
(``bms``, ``drivers``, ``comms`` as top-level packages), so host code puts
``firmware/`` and the CPython shims on ``sys.path`` instead of packaging them.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
SHIMS = os.path.join(ROOT, "tools", "shims")
BOARDS = os.path.join(ROOT, "boards")

for _p in (SHIMS, FIRMWARE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
