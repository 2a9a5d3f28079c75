"""SPI bus and chip-select pin objects for the byte-level SPI chip emulators.

They stand in for machine.SPI and machine.Pin: a falling CS starts a
transaction (``emu._begin()``), a rising CS ends it (``emu._end()``), and
every byte clocked goes through ``emu._byte(mosi)`` which returns MISO.  An
emulator may define ``_check_spi()`` to inject bus faults before each call.
MicroPython-compatible (the driver tests run under the unix port).
"""


class CsPin:
    def __init__(self, emu):
        self.emu = emu
        self.level = 1

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.level = v
            if v:
                self.emu._end()
            else:
                self.emu._begin()
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def init(self, *args, **kw):
        pass


class SpiPort:
    def __init__(self, emu, fill):
        self.emu = emu
        self.fill = fill  # what MOSI carries while the driver only reads

    def _check(self):
        check = getattr(self.emu, "_check_spi", None)
        if check is not None:
            check()

    def write(self, buf):
        self._check()
        for b in bytes(buf):
            self.emu._byte(b)

    def write_readinto(self, wbuf, rbuf):
        self._check()
        w = bytes(wbuf)
        for i in range(len(rbuf)):
            rbuf[i] = self.emu._byte(w[i])

    def readinto(self, buf, write=None):
        self._check()
        if write is None:
            write = self.fill
        for i in range(len(buf)):
            buf[i] = self.emu._byte(write)

    def read(self, n, write=None):
        b = bytearray(n)
        self.readinto(b, write)
        return bytes(b)
