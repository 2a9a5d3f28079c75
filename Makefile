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

.PHONY: all sim test test-cpython test-upy test-mpy bench upy32 flash flash-dry clean venv docs

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
	@echo "== [1/3] pytest under CPython =="
	$(VPY) -m pytest host_tests
	@echo "== [2/3] firmware tests under the MicroPython unix port =="
	$(VPY) host_tests/upy_run.py
	@echo "== [3/3] mpy-cross compile of every firmware file =="
	$(VPY) tools/build.py --check

test-cpython: $(STAMP)
	$(VPY) -m pytest host_tests

test-upy: $(STAMP)
	$(VPY) host_tests/upy_run.py

test-mpy: $(STAMP)
	$(VPY) tools/build.py --check

bench: $(STAMP)
	$(VPY) -m tools.bench $(ARGS)

# 32-bit MicroPython with the firmware frozen in (make bench builds it too)
upy32: $(STAMP)
	$(VPY) -m tools.upy32

docs: $(STAMP)
	$(VPY) -m tools.gendocs

flash: $(STAMP)
	$(VPY) -m tools.deploy --board $(BOARD) --port $(PORT) $(ARGS)

flash-dry: $(STAMP)
	$(VPY) -m tools.deploy --board $(BOARD) --dry-run $(ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis
