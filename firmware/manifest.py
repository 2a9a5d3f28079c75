# MicroPython manifest: freeze the BMS into a custom firmware image, so the
# bytecode (about 190 KB), qstrs and constants stay in flash instead of the
# heap; the whole master does not fit an RP2040 heap otherwise (figures and
# recipe in docs/deploy.md, measured by `make bench`).
#
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/path/to/firmware/manifest.py
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/firmware/manifest.py
#
# Relative base paths resolve against this file's directory.  main.py and
# config.py stay on the filesystem (editable; MicroPython runs main.py only
# as a file); everything else is frozen.  The filesystem root comes before
# .frozen on sys.path, so remove old copies from the board after flashing.
# This file is not part of the board image (tools/deploy.py skips it).

include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules

package("bms", base_path=".", opt=2)
package("drivers", base_path=".", opt=2)
package("slave", base_path=".", opt=2)    # slave-module logic (slave_main.py runs it)
try:
    package("comms", base_path=".", opt=2)  # Modbus, CAN, BLE (when present)
except Exception:  # noqa: BLE001
    pass
module("diag.py", base_path=".", opt=2)
module("app.py", base_path=".", opt=2)
module("slave_main.py", base_path=".", opt=2)  # a slave module's main.py imports it
package("boards", base_path="..", opt=2)
