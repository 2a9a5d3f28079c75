# Board entry point. The application is in app.py so that it ships as
# precompiled .mpy (or frozen): a .py here is compiled in RAM at every boot.
# First the relay pins to off (boards.relays_off): an ESP32 keeps its GPIO
# levels through a watchdog reset, and the application's imports take the
# longest part of the boot.  Never allowed to stop the boot.
try:
    import boards
    boards.relays_off()
except Exception:  # noqa: BLE001 - the board build drives them again
    pass
import app

app.main()
