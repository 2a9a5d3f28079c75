# Runs inside the MicroPython unix port: a minimal test collector.
# Usage: micropython upy_main.py DIR [name-filter]
import os
import sys

d = sys.argv[1]
flt = sys.argv[2] if len(sys.argv) > 2 else ""
passed = 0
failed = 0
names = sorted(n for n in os.listdir(d) if n.startswith("test_") and n.endswith(".py"))
for fname in names:
    modname = fname[:-3]
    try:
        mod = __import__(modname)
    except Exception as e:  # noqa: BLE001
        print("IMPORT FAIL", modname, repr(e))
        sys.print_exception(e)
        failed += 1
        continue
    # Table-driven modules also list generated tests in TESTS: the unix port
    # does not see names added to globals() while the module is importing.
    tests = [(a, getattr(mod, a)) for a in sorted(dir(mod)) if a.startswith("test_")]
    seen = [t[0] for t in tests]
    for t in getattr(mod, "TESTS", ()):
        if t[0] not in seen:
            tests.append(t)
    for attr, fn in tests:
        if flt not in modname + "." + attr or not callable(fn):
            continue
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001
            failed += 1
            print("FAIL", modname + "." + attr, repr(e))
            sys.print_exception(e)
print("micropython: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
