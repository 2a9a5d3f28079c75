"""Driver figures: hot-path cost and allocation under the MicroPython unix
port, SPI traffic per CAN frame (for the 256-cell sweep budget)."""
from tools.bench.common import Row, parse_kv

AREA = "drivers"


def run(ctx):
    n = 500 if ctx.quick else 3000
    kv = parse_kv(ctx.upy("tools/bench/upy/drivers_bench.py", n))
    rows = []
    for key in ("mcp2515_send", "mcp2515_recv", "ina228_current", "ntc_read"):
        rows.append(Row(AREA, key + " time", kv[key + "_us"], "us/call", "",
                        "unix port on the host CPU, not an RP2040 figure"))
        rows.append(Row(AREA, key + " alloc", kv[key + "_alloc"], "B/call", "0"))
    rows.append(Row(AREA, "mcp2515 init waits", kv["mcp2515_init_wait_us"], "us", "",
                    "128 us after RESET (oscillator start-up timer); none in send/recv"))
    for key in ("can_tx_spi_bytes", "can_rx_spi_bytes"):
        rows.append(Row(AREA, key, kv[key], "B/frame", "",
                        "8-byte frame; at 8 MHz SPI 1 us per byte plus CS overhead"))
    return rows
