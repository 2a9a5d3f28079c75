"""GATT glue for ESP32 / Pico W with aioble (micropython-lib): radio only.

Everything testable lives in ``comms.ble_link.BleLink``; this file only
moves bytes between it and the radio, so it stays a few lines (it compiles
with mpy-cross; host_tests/test_ble_radio.py runs it against a fake aioble).

Service (128-bit UUIDs, ours):
  SERVICE  6e9c0001-5a4d-4f42-8c2e-4d5059424d53
  RX       6e9c0002-...  write / write-without-response: chunks to the BMS
  TX       6e9c0003-...  notify: chunks from the BMS

One central at a time.  On every (dis)connection the link is reset, which
also locks the BLE password session.  The advertised name is ``link.name``;
after a ChangeBlueName the new name is used from the next advertisement
(i.e. after the central disconnects).

A flaky link ends one connection, never Bluetooth: a central that drops in
the middle of the MTU exchange (aioble raises ``DeviceDisconnectedError``),
a notification to a central that has just gone (its handle is None:
``gatts_notify`` raises TypeError) or any other error of the stack on one
connection is caught here; the link is reset (the session locked, as on
every disconnect) and advertising resumes, after ``_RETRY_MS`` when
advertising itself failed.  Only a cancellation ends the tasks.  Writes are
served only from the current connection: what an earlier central wrote and
aioble's capture queue hands out late is dropped.

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
_RETRY_MS = const(1000)    # advertising failed: try again after this

_service = aioble.Service(SERVICE_UUID)
_rx = aioble.Characteristic(_service, RX_UUID, write=True, write_no_response=True, capture=True)
_tx = aioble.Characteristic(_service, TX_UUID, notify=True)
aioble.register_services(_service)

_conn = None


async def _advertise(link):
    global _conn
    while True:
        try:
            await _serve_one(link)
        except Exception:  # noqa: BLE001 - one connection's failure never ends Bluetooth
            _conn = None
            link.reset()
            link.internal_errors += 1
            await asyncio.sleep_ms(_RETRY_MS)


async def _serve_one(link):
    """Advertise, serve one central until it disconnects."""
    global _conn
    name = link.name.decode()
    link.name_changed = False
    try:
        aioble.config(gap_name=name)
    except (AttributeError, ValueError, OSError):
        pass
    conn = await aioble.advertise(_ADV_INTERVAL_US, name=name, services=[SERVICE_UUID])
    link.reset()
    link.set_mtu(23)        # until the exchange says more: never the last central's size
    _conn = conn            # its writes are served from now on, no one else's
    try:
        try:
            await conn.exchange_mtu(_PREFERRED_MTU)
        except Exception:  # noqa: BLE001 - gone meanwhile (DeviceDisconnectedError), time-out
            pass
        link.set_mtu(getattr(conn, "mtu", None) or 23)
        await conn.disconnected(timeout_ms=None)
    finally:
        _conn = None
        link.reset()


async def _receive(link):
    while True:
        c, data = await _rx.written()
        # Only the current central's writes: what an earlier one wrote and
        # the capture queue hands out late (its connection, or None once it
        # has gone) would be served on the next connection's session.
        if c is not None and c is _conn:
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
                except Exception:  # noqa: BLE001 - the central went away (TypeError: no
                    pass           # handle any more); reset follows on disconnect
            n = link.next_chunk(buf)
        await asyncio.sleep_ms(_POLL_MS)


async def run(link):
    await asyncio.gather(_advertise(link), _receive(link), _transmit(link))
