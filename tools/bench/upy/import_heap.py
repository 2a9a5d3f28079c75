# Heap taken by importing the master's core modules (source or .mpy, per MICROPYPATH).
import gc
gc.collect()
m0 = gc.mem_alloc()
import bms.core  # noqa: E402,F401
import bms.store  # noqa: E402,F401
import bms.persistlog  # noqa: E402,F401
import comms.modbus_rtu  # noqa: E402,F401
import comms.registers  # noqa: E402,F401
import comms.inverter_can  # noqa: E402,F401
import drivers.bq76952  # noqa: E402,F401
import drivers.ina228  # noqa: E402,F401
gc.collect()
print("import_heap", gc.mem_alloc() - m0)
