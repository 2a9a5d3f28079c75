"""The GATT glue (comms.ble_aioble) against a fake aioble: what a flaky phone
link does to it (docs/ble_protocol.md, "Radio failures").

aioble and the ``bluetooth`` module exist only on a board; the fake below
behaves as micropython-lib's aioble does where it matters here:
``DeviceConnection.exchange_mtu`` raises ``DeviceDisconnectedError`` when
the central drops during the exchange, ``Characteristic.notify`` passes
the connection's handle to ``gatts_notify``, which is None from the moment
the disconnect IRQ was handled (a TypeError on the board), and a capture
characteristic's ``written()`` hands out queued (connection, value) pairs
after that connection has gone.
"""
import asyncio
import sys
import types

import pytest

from bms.ticks import VirtualClock
from comms import ble_link as BL
from ble_peer import chunks, message, reassemble


class DeviceDisconnectedError(Exception):
    pass


class Conn:
    def __init__(self, mtu_error=None, mtu=185):
        self._conn_handle = 1
        self.mtu = None
        self._mtu = mtu
        self._mtu_error = mtu_error
        self._gone = asyncio.Event()
        self.sent = []

    async def exchange_mtu(self, mtu=None, timeout_ms=1000):
        await asyncio.sleep(0)
        if self._mtu_error is not None:
            self._conn_handle = None
            self._gone.set()
            raise self._mtu_error
        self.mtu = self._mtu
        return self.mtu

    async def disconnected(self, timeout_ms=60000, disconnect=False):
        await self._gone.wait()

    def drop(self):
        """The disconnect IRQ: the handle goes at once, the waiters wake later."""
        self._conn_handle = None

    def gone(self):
        self._gone.set()


def fake_aioble(conns):
    """Modules ``aioble`` and ``bluetooth``; ``conns`` are handed out by advertise."""
    ab = types.ModuleType("aioble")
    ab.DeviceDisconnectedError = DeviceDisconnectedError
    ab.adverts = 0
    ab.writes = []

    class Service:
        def __init__(self, uuid):
            self.uuid = uuid

    class Characteristic:
        def __init__(self, service, uuid, **kw):
            self.uuid = uuid

        async def written(self, timeout_ms=None):
            while not ab.writes:
                await asyncio.sleep(0.001)
            return ab.writes.pop(0)

        def notify(self, conn, data=None):
            if conn._conn_handle is None:
                raise TypeError("can't convert NoneType to int")   # gatts_notify(None, ...)
            conn.sent.append(bytes(data))

    async def advertise(interval_us, name=None, services=None):
        ab.adverts += 1
        while not conns:
            await asyncio.sleep(0.001)
        return conns.pop(0)

    ab.Service = Service
    ab.Characteristic = Characteristic
    ab.advertise = advertise
    ab.register_services = lambda *s: None
    ab.config = lambda **kw: None
    bt = types.ModuleType("bluetooth")
    bt.UUID = lambda s: s
    return ab, bt


@pytest.fixture
def glue(monkeypatch):
    conns = []
    ab, bt = fake_aioble(conns)
    monkeypatch.setitem(sys.modules, "aioble", ab)
    monkeypatch.setitem(sys.modules, "bluetooth", bt)
    monkeypatch.delitem(sys.modules, "comms.ble_aioble", raising=False)
    if not hasattr(asyncio, "sleep_ms"):
        monkeypatch.setattr(asyncio, "sleep_ms", lambda ms: asyncio.sleep(ms / 1000.0),
                            raising=False)
    import importlib
    import comms
    monkeypatch.delattr(comms, "ble_aioble", raising=False)
    mod = importlib.import_module("comms.ble_aioble")
    yield mod, ab, conns
    # Gone again: the app must not find the glue built on this fake (without
    # aioble its ``ble_radio`` part is skipped).
    sys.modules.pop("comms.ble_aioble", None)
    if getattr(comms, "ble_aioble", None) is mod:
        delattr(comms, "ble_aioble")


class Link(BL.BleLink):
    """The real framing; counts the resets (each one locks the BLE session)."""

    def __init__(self):
        BL.BleLink.__init__(self, None, VirtualClock(0))
        self.resets = 0

    def reset(self):
        self.resets = getattr(self, "resets", 0) + 1
        BL.BleLink.reset(self)


def subscribe(conn, seq):
    """The chunks of a live subscription (its answer is a short 0x83)."""
    return [(conn, c) for c in chunks(seq, message(BL.T_SUBSCRIBE, b"\xe8\x03"), 185)]


async def settle(ms=60):
    await asyncio.sleep(ms / 1000.0)


def test_a_central_dropping_during_the_mtu_exchange_does_not_end_bluetooth(glue):
    g, ab, conns = glue
    link = Link()

    async def main():
        task = asyncio.ensure_future(g.run(link))
        conns.append(Conn(mtu_error=DeviceDisconnectedError()))   # drops at once
        await settle()
        assert not task.done(), task.exception()
        assert ab.adverts >= 2                       # advertising again
        c2 = Conn()
        conns.append(c2)
        await settle()
        for w in subscribe(c2, 5):
            ab.writes.append(w)
        await settle()
        task.cancel()
        return c2

    c2 = asyncio.run(main())
    assert reassemble(c2.sent) == [(5, 0x83, b"\x00\xe8\x03")]   # the next central is served
    assert link.resets >= 3                           # connect, drop, connect: locked each time


def test_a_notification_to_a_central_that_has_gone_does_not_end_bluetooth(glue):
    g, ab, conns = glue
    link = Link()

    async def main():
        task = asyncio.ensure_future(g.run(link))
        c1 = Conn()
        conns.append(c1)
        await settle()
        c1.drop()                                    # the disconnect IRQ ...
        for w in subscribe(c1, 1):                   # ... with its last request queued
            ab.writes.append(w)
        await settle()
        assert not task.done(), task.exception()
        c1.gone()                                    # ... and the waiters wake
        c2 = Conn()
        conns.append(c2)
        await settle()
        for w in subscribe(c2, 2):
            ab.writes.append(w)
        await settle()
        assert not task.done(), task.exception()
        task.cancel()
        return c2

    c2 = asyncio.run(main())
    assert reassemble(c2.sent) == [(2, 0x83, b"\x00\xe8\x03")]


def test_writes_queued_from_an_earlier_connection_are_not_served_on_the_next(glue):
    g, ab, conns = glue
    link = Link()

    async def main():
        task = asyncio.ensure_future(g.run(link))
        c1 = Conn()
        conns.append(c1)
        await settle()
        c1.drop()
        c1.gone()
        c2 = Conn()
        conns.append(c2)
        await settle()
        # The capture queue hands out what the first central wrote late
        # (aioble: its connection object, or None once it left the table).
        for w in subscribe(c1, 1):
            ab.writes.append(w)
        for _c, data in subscribe(None, 3):
            ab.writes.append((None, data))
        await settle()
        assert c2.sent == [] and link.live_ms == 0
        for w in subscribe(c2, 2):
            ab.writes.append(w)
        await settle()
        task.cancel()
        return c2

    c2 = asyncio.run(main())
    assert reassemble(c2.sent) == [(2, 0x83, b"\x00\xe8\x03")]
