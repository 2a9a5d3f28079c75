"""Modbus PDUs without the RTU framing: what BLE (and any other packet link) carries.

A PDU handler is any callable ``handler(pdu, n, out) -> m``: ``pdu[:n]`` is
the request (function code first, no address, no CRC), the answer (normal or
exception response) is written to ``out`` and its length returned; 0 means
"no answer".  Because the PDU is the one the RTU server answers, one
register map (``comms.registers``) serves RS485, BLE and the PC tool alike,
and so does its password gate: the register map is built with the link's
own auth channel (``CH_BLE``), so unlocking RS485 does not unlock Bluetooth.

``ModbusPdu`` reuses ``ModbusRTU``'s request dispatcher instead of a second
copy of the function-code logic: it places the PDU behind a dummy address in
the server's receive buffer and captures the reply the server "writes".
This relies on ``ModbusRTU._handle(n, t0)`` (n = address + PDU + 2 CRC
bytes, CRC not rechecked there).  The clean version is a public
``ModbusRTU.handle_pdu``; until the Modbus module has one, this is the only
place that knows.
"""
from micropython import const

from comms.modbus_rtu import ModbusRTU

ADDRESS = const(1)
_MAX_PDU = const(253)


class _Capture:
    """A write-only 'port' that remembers the last frame written."""

    def __init__(self):
        self.frame = None
        self.n = 0

    def any(self):
        return 0

    def readinto(self, buf):
        return None

    def write(self, buf):
        self.frame = buf
        self.n = len(buf)
        return self.n

    def flush(self):
        pass


class ModbusPdu:
    def __init__(self, regmap, clock):
        self._cap = _Capture()
        self.rtu = ModbusRTU(self._cap, regmap, clock, address=ADDRESS)
        self.requests = 0

    def __call__(self, pdu, n, out):
        if n < 1 or n > _MAX_PDU:
            return 0
        rtu = self.rtu
        rx = rtu.rx
        rx[0] = ADDRESS
        for i in range(n):
            rx[1 + i] = pdu[i]
        cap = self._cap
        cap.n = 0
        self.requests += 1
        rtu._handle(n + 3, 0)
        m = cap.n - 3  # strip address and CRC
        if m <= 0:
            return 0
        f = cap.frame
        for i in range(m):
            out[i] = f[1 + i]
        return m
