"""GATT glue for ESP32 / Pico W with aioble (micropython-lib): radio only.

Everything testable lives in ``comms.ble_link.BleLink``; this file only
moves bytes between it and the radio, so it stays a few lines that cannot be
run on the host (it still compiles with mpy-cross).

Service (128-bit UUIDs, ours):
  SERVICE  6e9c0001-5a4d-4f42-8c2e-4d5059424d53
  RX       6e9c0002-...  write / write-without-response: chunks to the BMS
  TX       6e9c0003-...  notify: chunks from the BMS

One central at a time.  On every (dis)connection the link is reset, which
also locks the BLE password session.  The advertised name is ``link.name``;
after a ChangeBlueName the new name is used from the next advertisement
(i.e. after the central disconnects).

Usage on a board: ``app.start_ble`` builds the link (and polls it from the
main loop: timeouts, live notifications), ``app.start_ble_radio`` adds
``run(link)`` as an asyncio task next to the control loop.  Everything here
runs between control steps (cooperative), never inside one.
"""
import asyncio

import aioble
import bluetooth
from micropython import const

SERVICE_UUID = bluetooth.UUID("6e9c0001-5a4d-4f42-8c2e-4d5059424d53")
RX_UUID = bluetooth.UUID("6e9c0002-5a4d-4f42-8c2e-4d5059424d53")
TX_UUID = bluetooth.UUID("6e9c0003-5a4d-4f42-8c2e-4d5059424d53")
_ADV_INTERVAL_US = const(250000)
_PREFERRED_MTU = const(247)
_POLL_MS = const(10)

_service = aioble.Service(SERVICE_UUID)
_rx = aioble.Characteristic(_service, RX_UUID, write=True, write_no_response=True, capture=True)
_tx = aioble.Characteristic(_service, TX_UUID, notify=True)
aioble.register_services(_service)

_conn = None


async def _advertise(link):
    global _conn
    while True:
        name = link.name.decode()
        link.name_changed = False
        try:
            aioble.config(gap_name=name)
        except (AttributeError, ValueError, OSError):
            pass
        conn = await aioble.advertise(_ADV_INTERVAL_US, name=name, services=[SERVICE_UUID])
        link.reset()
        try:
            await conn.exchange_mtu(_PREFERRED_MTU)
        except (AttributeError, ValueError, OSError, asyncio.TimeoutError):
            pass
        link.set_mtu(getattr(conn, "mtu", None) or 23)
        _conn = conn
        await conn.disconnected(timeout_ms=None)
        _conn = None
        link.reset()


async def _receive(link):
    while True:
        _c, data = await _rx.written()
        link.on_write(data)


async def _transmit(link):
    buf = bytearray(_PREFERRED_MTU)
    view = memoryview(buf)
    while True:
        conn = _conn
        n = link.next_chunk(buf)
        while n:
            if conn is not None:
                try:
                    _tx.notify(conn, view[:n])
                except (OSError, ValueError):
                    pass  # the central went away; reset follows on disconnect
            n = link.next_chunk(buf)
        await asyncio.sleep_ms(_POLL_MS)


async def run(link):
    await asyncio.gather(_advertise(link), _receive(link), _transmit(link))
