# Two commands do all the set-up on a fresh machine:
#   make sim    the firmware on a simulated pack (PC port on a pty)
#   make test   every test: CPython, the MicroPython unix port, mpy-cross
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BOARD   ?= pico
PORT    ?= /dev/ttyACM0
ARGS    ?=

.PHONY: all sim test test-cpython test-upy test-mpy bench flash flash-dry flash-mpy clean venv docs firmware

all: test

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q -e . --no-deps
	touch $(STAMP)

venv: $(STAMP)

sim: $(STAMP)
	$(VPY) -m tools.sim $(ARGS)

test: $(STAMP)
	@echo "== [1/4] the board images (UF2, cached in build/): master and slave module =="
	$(VPY) -m tools.fwbuild --board pico
	$(VPY) -m tools.fwbuild --board slave_module
	@echo "== [2/4] pytest under CPython, and the image on the emulated RP2040 =="
	$(VPY) -m pytest host_tests
	@echo "== [3/4] firmware tests under the MicroPython unix port =="
	$(VPY) host_tests/upy_run.py
	@echo "== [4/4] mpy-cross compile of every firmware file =="
	$(VPY) tools/build.py --check

# The UF2 a user flashes: MicroPython v1.27.0 rp2 with the BMS frozen in,
# build/$(BOARD)/firmware.uf2 (BOARD=pico|pico32|slave_module)
firmware: $(STAMP)
	$(VPY) -m tools.fwbuild --board $(BOARD)

test-cpython: $(STAMP)
	$(VPY) -m pytest host_tests

test-upy: $(STAMP)
	$(VPY) host_tests/upy_run.py

test-mpy: $(STAMP)
	$(VPY) tools/build.py --check

bench: $(STAMP)
	$(VPY) -m tools.bench $(ARGS)

docs: $(STAMP)
	$(VPY) -m tools.gendocs

# The product: the UF2 onto the chip (BOOTSEL drive, picotool, or a running
# board's bootloader via PORT), then config.py
flash: $(STAMP)
	$(VPY) -m tools.flash --board $(BOARD) --port $(PORT) $(ARGS)

flash-dry: $(STAMP)
	$(VPY) -m tools.flash --board $(BOARD) --port $(PORT) --dry-run $(ARGS)

# Development: .mpy files onto a stock MicroPython (does not fit the full master)
flash-mpy: $(STAMP)
	$(VPY) -m tools.deploy --board $(BOARD) --port $(PORT) $(ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis
