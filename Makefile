# bnnflow: the user's commands. Everything runs inside .venv, built on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?= tfc
BOARD ?= Pynq-Z2
RUN ?= runs/$(MODEL)
EPOCHS ?= 10

.PHONY: install board-env demo test lint bench bitstream clean

install: $(VENV)/.installed $(VENV)/.bnncpu $(VENV)/.host_driver

$(VENV)/.installed: pyproject.toml setup.py requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps -r requirements/lock.txt
	$(PIP) install --quiet --no-deps brevitas==0.13.0 finn-plus==1.6.1
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import bnnflow, brevitas, finn, qonnx; print('bnnflow', bnnflow.__version__, 'installed')"
	touch $@ $(VENV)/.bnncpu

# The C engine inside the package (bnnflow.bnncpu, built by setup.py): rebuilt when its sources change.
CPU_SOURCES := $(wildcard cpu/include/*.h cpu/src/*.[ch] cpu/src/*/*.[ch])
$(VENV)/.bnncpu: $(CPU_SOURCES) | $(VENV)/.installed
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

# bnnflow-board (host_driver/) in .venv too: the host reads and writes the deployment format
# through its numpy-free bnnflow_board.deployformat, the one definition both sides share.
$(VENV)/.host_driver: host_driver/pyproject.toml | $(VENV)/.installed
	$(PIP) install --quiet --no-deps --no-build-isolation -e host_driver
	touch $@

# The simulated board's environment: the board-side stack (pynq, finn-plus-driver,
# numpy 1.x, bnnflow-board) apart from .venv, whose numpy 2 finn-plus needs.
BOARD_VENV ?= .venv-board
board-env: $(BOARD_VENV)/.installed

$(BOARD_VENV)/.installed: requirements/board-lock.txt host_driver/pyproject.toml
	$(PYTHON) -m venv $(BOARD_VENV)
	$(BOARD_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/board-lock.txt
	$(BOARD_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e host_driver
	$(BOARD_VENV)/bin/python -c "import numpy, pynq, finn_plus_driver, bnnflow_board; print('board env: numpy', numpy.__version__, 'pynq', pynq.__version__)"
	touch $@

# The demo ends on the simulated board (.venv-board); where that environment cannot be
# built the demo says so and runs everything else.
demo: install
	@$(MAKE) --no-print-directory board-env || echo "make demo: $(BOARD_VENV) could not be built: the demo runs without the simulated board"
	$(VENV)/bin/bnnflow demo --board-cli $(BOARD_VENV)/bin/bnnflow-board

test: install board-env
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=25
	cd host_driver && ../$(BOARD_VENV)/bin/python -m pytest -q --durations=10

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	cd host_driver && ../$(VENV)/bin/ruff check . && ../$(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/train_mnist.py --models sfc --epochs $(EPOCHS)

# train (if no checkpoint) -> export -> compile -> FINN builder with Vivado -> deployment
# package in bitstreams/<model>-<board>/deploy. Where Vivado is not installed: exits 2
# after code generation, with instructions, having written the package without bitfile.
bitstream: install
	@test -f $(RUN)/best.pt || test -f $(RUN)/checkpoint.pt || $(VENV)/bin/bnnflow train --model $(MODEL) --run $(RUN) --epochs $(EPOCHS) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(VENV)/bin/bnnflow export $(RUN) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(VENV)/bin/bnnflow compile $(RUN) --board $(BOARD) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(COMPILE_ARGS)
	$(VENV)/bin/bnnflow bitstream $(RUN)/compile/$(BOARD) --out bitstreams/$(notdir $(RUN))-$(BOARD) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) || { \
	  code=$$?; test $$code -eq 2 && $(VENV)/bin/bnnflow package $(RUN)/compile/$(BOARD) \
	    --out bitstreams/$(notdir $(RUN))-$(BOARD)/deploy $(if $(DATA_DIR),--data-dir $(DATA_DIR)); exit $$code; }

clean:
	rm -rf $(VENV) $(BOARD_VENV) FINN_TMP .pytest_cache
