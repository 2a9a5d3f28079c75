# boot.py: runs before main.py.  Three jobs, none allowed to stop the boot:
# 1. start the hardware watchdog early (8 s: below the RP2040's 8.3 s limit,
#    long enough for the imports; main.py shortens it), unless config.py
#    says WDT_AT_BOOT = False (bench work at the REPL);
# 2. pick the firmware slot (bms.fwslot.Slots.select_at_boot: a pending
#    update becomes a trial, a trial that never armed rolls back, a slave
#    module's package staged without the master's APPLY is dropped): on a
#    board with a ROMFS partition mount that slot's image at /rom
#    (bms.romslot), else put the slot's directory first on sys.path.  Any
#    exception: run the current one.
# 3. on a ROMFS board, erase the inactive slot when no trial or staged update
#    needs it (bms.romslot.prepare): here, before main.py and before any relay
#    can close, because a sector erase stalls the CPU ~45 ms.
import sys

_feed = None
try:
    try:
        import config
        _wdt = getattr(config, "WDT_AT_BOOT", True)
    except ImportError:
        _wdt = True
    if _wdt:
        import machine
        _feed = machine.WDT(timeout=8000).feed
except Exception:  # noqa: BLE001 - no watchdog on this port: boot anyway
    pass

try:
    from bms.store import BoardFs
    from bms import romslot
    _fs = BoardFs()
    # A board with a ROMFS partition runs its application from a ROMFS slot
    # (or the frozen one); others from the file slots /fw/a|b.
    if romslot.boot(_fs, feed=_feed) is None:
        from bms.fwslot import Slots
        _p = Slots(_fs).select_at_boot()
        if _p:
            sys.path.insert(0, _p)
    # The slot's own bms package must be imported from the slot, not reuse
    # the modules the selection itself loaded from the root firmware.
    for _k in list(sys.modules):
        if _k == "bms" or _k.startswith("bms."):
            del sys.modules[_k]
except Exception:  # noqa: BLE001 - never brick: continue with the current firmware
    pass
