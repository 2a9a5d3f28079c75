"""The raw REPL over the emulated chip's USB-CDC, in emulated time.

The same protocol mpremote speaks (Ctrl-C to stop the program, Ctrl-A for
the raw REPL, code + Ctrl-D, reply ``OK<stdout>\\x04<stderr>\\x04>``), driven
from the emulator loop so that a test or the bench can read state off the
running chip without a pty or the wall clock.
"""


class ReplError(Exception):
    pass


class Repl:
    def __init__(self, board, step_ms=5):
        """``board``: anything with ``chip`` and ``run_ms(ms)`` (EmuBoard)."""
        self.board = board
        self.chip = board.chip
        self.step_ms = step_ms
        self.raw = False

    def _wait_for(self, marker, timeout_ms):
        waited = 0
        while marker not in self.chip.cdc_out:
            if waited >= timeout_ms:
                raise ReplError("no %r within %d ms; got %r" % (
                    marker, timeout_ms, bytes(self.chip.cdc_out[-200:])))
            self.board.run_ms(self.step_ms)
            waited += self.step_ms
        i = self.chip.cdc_out.index(marker) + len(marker)
        out = bytes(self.chip.cdc_out[:i])
        del self.chip.cdc_out[:i]
        return out

    def wait_usb(self, timeout_ms=2000):
        waited = 0
        while not self.chip.cdc_up:
            if waited >= timeout_ms:
                raise ReplError("USB-CDC did not come up")
            self.board.run_ms(self.step_ms)
            waited += self.step_ms

    def enter(self, timeout_ms=3000):
        """Stop the running program and enter the raw REPL."""
        self.wait_usb()
        self.chip.cdc_out.clear()
        self.chip.cdc_send(b"\r\x03\x03")
        self.board.run_ms(50)
        self.chip.cdc_out.clear()
        self.chip.cdc_send(b"\r\x01")
        self._wait_for(b"raw REPL; CTRL-B to exit\r\n>", timeout_ms)
        self.raw = True

    def exec(self, code, timeout_ms=5000):
        """Run code on the chip; returns its stdout, raises with its stderr."""
        if not self.raw:
            self.enter()
        if isinstance(code, str):
            code = code.encode()
        # The raw REPL reads the code in USB packets; send it in pieces.
        for i in range(0, len(code), 256):
            self.chip.cdc_send(code[i:i + 256])
            self.board.run_ms(1)
        self.chip.cdc_send(b"\x04")
        self._wait_for(b"OK", timeout_ms)
        out = self._wait_for(b"\x04", timeout_ms)[:-1]
        err = self._wait_for(b"\x04>", timeout_ms)[:-2]
        if err:
            raise ReplError(err.decode(errors="replace"))
        return out.decode(errors="replace")

    def start(self, code):
        """Start code on the chip without waiting for it (``interrupt`` ends it)."""
        if not self.raw:
            self.enter()
        if isinstance(code, str):
            code = code.encode()
        self.chip.cdc_send(code + b"\x04")
        self._wait_for(b"OK", 2000)

    def interrupt(self, timeout_ms=3000):
        """Ctrl-C the code ``start`` began; back at the raw prompt."""
        self.chip.cdc_send(b"\x03")
        self._wait_for(b"\x04>", timeout_ms)

    def eval(self, expr, timeout_ms=5000):
        import ast
        return ast.literal_eval(self.exec("print(repr(%s))" % expr, timeout_ms).strip())

    def soft_reset(self):
        """Leave the raw REPL with Ctrl-D at the prompt: the board restarts main.py."""
        self.chip.cdc_send(b"\x02\x04")
        self.raw = False
