# Runs under the micropython unix port: server CPU time and allocation per request.
import gc
import sys
import time

from comms.registers import A_CELLS, A_MON
from comms.regs.monitor import SIZE as MON_SIZE
from modbus_rig import ModbusRig, with_crc

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
r = ModbusRig(cells=256)
r.run(1500)


def measure(req):
    r.send_raw(req)  # warm-up: caches the reply view
    total = 0
    alloc = 0
    for _ in range(n):
        r.port.feed(req)
        r.server.poll()          # reads the bytes
        for _ in range(5):       # 5 ms of silence, the last poll answers
            r.clock.advance(1)
            gc.collect()
            a0 = gc.mem_alloc()
            t0 = time.ticks_us()
            r.server.poll()
            total += time.ticks_diff(time.ticks_us(), t0)
            alloc += gc.mem_alloc() - a0
        r.port.take()
    return total / n, alloc / n


us, al = measure(with_crc(bytes((1, 3, A_CELLS >> 8, A_CELLS & 0xFF, 0, 125))))
print("cells125_us %.1f" % us)
print("cells125_alloc %.1f" % al)
us, al = measure(with_crc(bytes((1, 3, A_MON >> 8, A_MON & 0xFF, 0, MON_SIZE))))
print("monitor_us %.1f" % us)
print("monitor_alloc %.1f" % al)
