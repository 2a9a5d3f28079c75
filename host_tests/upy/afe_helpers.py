# Shared by the AFE tests (CPython and the MicroPython unix port): puts
# tools/sim on the path so the chip emulators import as top-level modules.
import sys


def _root():
    f = __file__
    for _ in range(3):  # host_tests/upy/afe_helpers.py -> repo root
        i = f.rfind("/")
        f = f[:i] if i > 0 else "."
    return f


_SIM = _root() + "/tools/sim"
if _SIM not in sys.path:
    sys.path.append(_SIM)


def crc8_ref(data, crc=0):
    """Bitwise CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), MSB first."""
    for b in data:
        for bit in range(7, -1, -1):
            fb = ((crc >> 7) & 1) ^ ((b >> bit) & 1)
            crc = (crc << 1) & 0xFF
            if fb:
                crc ^= 0x07
    return crc


def pec15_ref(data):
    """LTC681x PEC: CRC-15, polynomial 0x4599, seed 16, result shifted left
    once (bit 0 is always 0).  Bitwise, as in the datasheet's flow chart."""
    rem = 16
    for b in data:
        for bit in range(7, -1, -1):
            din = (b >> bit) & 1
            in0 = din ^ ((rem >> 14) & 1)
            rem = (rem << 1) & 0x7FFF
            if in0:
                rem ^= 0x4599
    return (rem << 1) & 0xFFFF
