"""Run a blocking host-side client (bmsctl, pymodbus) against a simulation.

The client runs in a thread while the test thread steps the simulation, with
simulated time held to ``rate`` times the wall clock so serial timeouts on
the client side stay meaningful.
"""
import threading
import time

from tools.bmsctl.cli import main


def drive(sim, fn, limit_s=30, rate=50000):
    """Run ``fn()`` in a thread while stepping ``sim``; returns its result."""
    res = {}

    def target():
        try:
            res["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            res["e"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    t0 = time.monotonic()
    v0 = sim.t_ms
    while th.is_alive() and time.monotonic() - t0 < limit_s:
        if sim.t_ms - v0 < (time.monotonic() - t0) * rate:
            sim.step()
        else:
            th.join(0.001)
    th.join(5)
    assert not th.is_alive()
    if "e" in res:
        raise res["e"]
    return res["v"]


def with_client(sim, link, fn, rate=50000):
    """``fn(client)`` with bmsctl's BmsClient (pymodbus) on the link's pty,
    closed afterwards (the port is locked exclusively while open)."""
    from tools.bmsctl.client import BmsClient

    def run():
        c = BmsClient(link.path, timeout=2).connect()
        try:
            return fn(c)
        finally:
            c.close()
    return drive(sim, run, rate=rate)


def run_cli(sim, link, *argv, rate=50000):
    """``bmsctl --port <link> argv...`` against the running simulation; its exit code."""
    return drive(sim, lambda: main(["--port", link.path, "--timeout", "2"] + list(argv)),
                 rate=rate)


def spoil_package(path, pkg, case):
    """Damage the package file at ``path`` (bytes ``pkg``) the way ``case`` says:
    "corrupt" (one bit flipped), "truncated" (last 1000 bytes gone), "unsigned"
    (its .sig removed); any other case ("wrong_key") leaves it as built."""
    import os
    if case == "corrupt":
        bad = bytearray(pkg)
        bad[700] ^= 0x20
        path.write_bytes(bytes(bad))
    elif case == "truncated":
        path.write_bytes(pkg[:len(pkg) - 1000])
    elif case == "unsigned":
        os.remove(str(path) + ".sig")
