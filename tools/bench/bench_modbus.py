"""Modbus RTU figures: throughput over the simulated 9600-baud link, turnaround, CPU.

* registers/s: a pymodbus client reads 125-register blocks through the pty
  of ``tools.sim.pclink`` while the simulation runs paced at real time, so
  the wire timing (9600 8N1: 10 bits per character) is real.  The wire
  limit is computed from the line settings (``_wire_limit``): a
  125-register read is an 8-character request and a 255-character reply,
  each followed by t3.5 of silence: 125 / (270 x 1.042 ms) = 444 registers/s.
* turnaround: from the end of the last request byte on the simulated wire to
  the start of the first reply byte, in the link's virtual time.  It cannot
  be below t3.5 (the server must see the silence); the goal is t3.5 + 1 ms
  (the main loop's 1 ms busy poll).  The link polls the server when a byte
  arrives and every 1 ms, as the board's loop does (select.poll wake-up,
  then IDLE_BUSY_MS sleeps); the chip's figure comes from the emulated
  RP2040, not from here.
* server CPU and allocation per request under the MicroPython unix port
  (x86 host; an RP2040 at 125 MHz is roughly 30-60x slower).
"""
import statistics
import threading
import time

import tools  # noqa: F401
from tools.bench.common import Row, parse_kv

AREA = "modbus"


def _line(baud=9600, data=8, parity=None, stop=1):
    """(bits per character, character ms, t3.5 ms) of a line setting, as the firmware computes them."""
    from comms.modbus_rtu import char_times_us
    from drivers.rs485 import char_bits
    bits = char_bits(data, parity, stop)
    return bits, bits * 1000.0 / baud, char_times_us(baud, bits)[1] / 1000.0


def _wire_limit(regs=125, baud=9600, parity=None, stop=1):
    """Registers/s of back-to-back reads: request + t3.5 + reply + t3.5 on the wire."""
    _bits, char_ms, t35 = _line(baud, 8, parity, stop)
    chars = 8 + 5 + 2 * regs
    return regs / ((chars * char_ms + 2 * t35) / 1000.0)


def _master_figures(reads):
    """Back-to-back 125-register reads by a master that obeys the line timing.

    The master sits on the pty's other end in the same thread and steps the
    simulation itself, so its own reaction time is that of a real Modbus
    master (it sees the reply's last byte within the link's 1 ms, waits
    t3.5 and sends), not a Python client's scheduling on a loaded host.
    What is left is the BMS side: the server's turnaround and the link's
    wire timing.
    """
    import os

    from comms import crc16
    from comms.registers import A_CELLS
    from tools.sim.pclink import PcLink
    from tools.sim.simulator import Simulation

    sim = Simulation(chem="LFP", cells=128, soc=0.5)
    link = PcLink(sim)
    sim.run(3)
    _bits, _c, t35 = _line()
    req = bytearray((1, 4, A_CELLS >> 8, A_CELLS & 0xFF, 0, 125))
    c = crc16.crc16(req)
    req += bytes((c & 0xFF, c >> 8))
    fd = link._slave
    os.set_blocking(fd, False)
    t_start = None
    done = 0
    try:
        while done < reads + 1:
            if done == 1:
                t_start = sim.t_ms   # the first read is the warm-up
                link.first_reply_delay_ms.clear()
            os.write(fd, bytes(req))
            got = b""
            limit = sim.t_ms + 2000
            while len(got) < 255 and sim.t_ms < limit:
                sim.busy_until_ms = sim.t_ms + 200
                sim.step()
                try:
                    got += os.read(fd, 4096)
                except BlockingIOError:
                    pass
            if len(got) != 255 or not crc16.check(got, len(got)):
                raise RuntimeError("bad reply (%d bytes)" % len(got))
            t_end = sim.t_ms
            while sim.t_ms - t_end < t35:   # the master's own t3.5 before the next request
                sim.busy_until_ms = sim.t_ms + 200
                sim.step()
            done += 1
        virt = (sim.t_ms - t_start) / 1000.0
        turn = statistics.median(link.first_reply_delay_ms)
    finally:
        link.close()
    return reads * 125 / virt, turn


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
    wall_rate, virt_rate, _turn = _link_figures(reads)
    m_rate, turn = _master_figures(20 if ctx.quick else 60)
    limit = _wire_limit()
    bits, _char_ms, t35 = _line()
    line = "pymodbus, 125-reg FC04, 9600 8N1 (%d bits/char), pty" % bits
    rows.append(Row(AREA, "wire limit, 125-register reads", round(limit, 1), "reg/s", "",
                    "from the line settings: 270 chars + 2 x t3.5 per read"))
    rows.append(Row(AREA, "sustained reads, line-timed master", round(m_rate, 1), "reg/s", "",
                    "back-to-back 125-reg FC04 over the sim link, virtual time"))
    rows.append(Row(AREA, "sustained reads / wire limit", round(m_rate / limit, 3), "",
                    ">= 0.95", "%.1f of %.1f reg/s" % (m_rate, limit)))
    rows.append(Row(AREA, "read rate, pymodbus client (wall clock)", round(wall_rate, 1), "reg/s",
                    "", line))
    rows.append(Row(AREA, "read rate, pymodbus client (virtual time)", round(virt_rate, 1),
                    "reg/s", "", "%.3f of the limit; the client's own latency included"
                    % (virt_rate / limit)))
    rows.append(Row(AREA, "turnaround last req byte -> first reply byte", round(turn, 2), "ms",
                    "<= %.2f" % (t35 + 1.0), "median, virtual time; t3.5 = %.2f ms" % t35))
    rows.append(Row(AREA, "turnaround / (t3.5 + 1 ms)", round(turn / (t35 + 1.0), 3), "",
                    "<= 1", "simulator link (select wake + 1 ms poll)"))
    kv = parse_kv(ctx.upy("tools/bench/upy/bench_modbus.py", 50 if ctx.quick else 200))
    rows.append(Row(AREA, "server CPU, 125-register read (upy unix)", kv["cells125_us"], "us",
                    "", "x86 host; incl. 4 idle polls"))
    rows.append(Row(AREA, "server CPU, monitor block read (upy unix)", kv["monitor_us"], "us", "",
                    "61 registers, every value recomputed"))
    rows.append(Row(AREA, "heap allocated per read request (upy)",
                    max(kv["cells125_alloc"], kv["monitor_alloc"]), "bytes", "0", "gc.mem_alloc"))
    return rows
