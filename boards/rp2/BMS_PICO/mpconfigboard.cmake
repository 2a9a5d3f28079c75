# The BMS master / slave-module board: a Raspberry Pi Pico (RP2040, 2 MB flash)
# with the project's flash layout (mpconfigboard.h).  Built by tools/fwbuild.py.
set(PICO_BOARD "pico")
set(PICO_PLATFORM "rp2040")
