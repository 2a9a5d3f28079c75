"""Soft interrupt callbacks, and the Ctrl-C that would be lost in one.

MicroPython runs a soft IRQ (a ``Pin.irq`` handler without ``hard=True``,
a ``machine.Timer`` callback) between two bytecodes of whatever the main
loop runs, and runs it "protected" (py/scheduler.c): an exception raised
in it is printed and dropped.  A Ctrl-C that arrives while one runs is
raised inside it, so it was dropped too and the loop ran on: `diag`,
mpremote or the bench had to send it again (seen on the emulated RP2040
in the RS485 timers, then in the shunt ALERT's pin handler).

So every soft callback in the firmware goes through ``Guarded``: a Ctrl-C
is kept here and raised again by ``take``, which the main loop calls each
pass; any other error is counted and dropped, so the IRQ stays armed.
Nothing here allocates, so a guarded callback is heap-lock safe.
"""

_pending = False


def keep():
    """Keep a Ctrl-C caught in a soft callback for the main loop."""
    global _pending
    _pending = True


def take():
    """Raise a kept Ctrl-C, once (the main loop calls this every pass)."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


class Guarded:
    """``fn(arg)`` as a soft-IRQ callback: a Ctrl-C reaches the main loop,
    any other error is counted in ``errors`` (the callback's own cleanup
    belongs in its ``finally``)."""

    def __init__(self, fn):
        self.fn = fn
        self.errors = 0

    def __call__(self, arg=None):
        try:
            self.fn(arg)
        except KeyboardInterrupt:
            keep()
        except Exception:  # noqa: BLE001 - the port would print and drop it
            self.errors += 1
