"""Modbus RTU figures: throughput over the simulated 9600-baud link, turnaround, CPU.

* registers/s: a pymodbus client reads 125-register blocks through the pty
  of ``tools.sim.pclink`` while the simulation runs paced at real time, so
  the wire timing (11 bits per character at 9600 baud) is real.  The wire
  limit for 125-register reads is 125 / (263 characters x 1.146 ms + 2 x
  t3.5) = about 404 registers/s.
* turnaround: from the last request byte on the simulated wire to the first
  reply byte, in the link's virtual time (t3.5 detection plus the 1 ms poll).
* server CPU and allocation per request under the MicroPython unix port
  (x86 host; an RP2040 at 125 MHz is roughly 30-60x slower).
"""
import statistics
import threading
import time

import tools  # noqa: F401
from tools.bench.common import Row, parse_kv

AREA = "modbus"


def _wire_limit(regs=125, baud=9600):
    char_ms = 11000.0 / baud
    chars = 8 + 5 + 2 * regs
    return regs / ((chars * char_ms + 2 * 3.5 * char_ms) / 1000.0)


def _link_figures(reads):
    from pymodbus.client import ModbusSerialClient

    from comms.registers import A_CELLS
    from tools.sim.pclink import PcLink, run_realtime
    from tools.sim.simulator import Simulation

    sim = Simulation(chem="LFP", cells=128, soc=0.5)
    link = PcLink(sim)
    sim.run(3)
    stop = threading.Event()
    th = threading.Thread(target=run_realtime, args=(sim,), kwargs={"speed": 1.0, "stop": stop},
                          daemon=True)
    th.start()
    client = ModbusSerialClient(link.path, baudrate=9600, timeout=2, retries=0)
    client.connect()
    try:
        r = client.read_input_registers(A_CELLS, count=125, device_id=1)  # warm-up
        assert not r.isError()
        link.first_reply_delay_ms.clear()
        t0 = time.monotonic()
        v0 = sim.t_ms
        for _ in range(reads):
            r = client.read_input_registers(A_CELLS, count=125, device_id=1)
            assert not r.isError(), r
        wall = time.monotonic() - t0
        virt = (sim.t_ms - v0) / 1000.0
        turn = statistics.median(link.first_reply_delay_ms)
    finally:
        client.close()
        stop.set()
        th.join(5)
        link.close()
    return reads * 125 / wall, reads * 125 / virt, turn


def run(ctx):
    rows = []
    reads = 4 if ctx.quick else 12
    wall_rate, virt_rate, turn = _link_figures(reads)
    limit = _wire_limit()
    rows.append(Row(AREA, "read rate over sim link (wall clock)", round(wall_rate, 1), "reg/s",
                    "~%.0f wire limit" % limit, "pymodbus, 125-reg FC04, 9600 8N1, pty"))
    rows.append(Row(AREA, "read rate over sim link (virtual time)", round(virt_rate, 1), "reg/s",
                    "~%.0f wire limit" % limit, "same run, simulation clock"))
    rows.append(Row(AREA, "turnaround last req byte -> first reply byte", round(turn, 2), "ms",
                    ">= t3.5 = 4.01", "virtual time, 1 ms server poll"))
    kv = parse_kv(ctx.upy("tools/bench/upy/bench_modbus.py", 50 if ctx.quick else 200))
    rows.append(Row(AREA, "server CPU, 125-register read (upy unix)", kv["cells125_us"], "us",
                    "", "x86 host; incl. 4 idle polls"))
    rows.append(Row(AREA, "server CPU, monitor block read (upy unix)", kv["monitor_us"], "us", "",
                    "61 registers, every value recomputed"))
    rows.append(Row(AREA, "heap allocated per read request (upy)",
                    max(kv["cells125_alloc"], kv["monitor_alloc"]), "bytes", "0", "gc.mem_alloc"))
    return rows
