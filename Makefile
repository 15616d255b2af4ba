# bnnflow: the user's commands. Everything runs inside .venv, built on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?= tfc
BOARD ?= Pynq-Z2
RUN ?= runs/$(MODEL)
EPOCHS ?= 10

.PHONY: install demo test lint bench bitstream clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps -r requirements/lock.txt
	$(PIP) install --quiet --no-deps brevitas==0.13.0 finn-plus==1.6.1
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import bnnflow, brevitas, finn, qonnx; print('bnnflow', bnnflow.__version__, 'installed')"
	touch $@

demo: install
	$(VENV)/bin/bnnflow demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(PY) benchmarks/train_mnist.py --models sfc --epochs $(EPOCHS)

# train (if no checkpoint) -> export -> compile -> FINN builder with Vivado; exits 2
# after code generation, with instructions, where Vivado is not installed.
bitstream: install
	@test -f $(RUN)/best.pt || test -f $(RUN)/checkpoint.pt || $(VENV)/bin/bnnflow train --model $(MODEL) --run $(RUN) --epochs $(EPOCHS) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(VENV)/bin/bnnflow export $(RUN) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(VENV)/bin/bnnflow compile $(RUN) --board $(BOARD) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(COMPILE_ARGS)
	$(VENV)/bin/bnnflow bitstream $(RUN)/compile/$(BOARD) --out bitstreams/$(notdir $(RUN))-$(BOARD)

clean:
	rm -rf $(VENV) FINN_TMP .pytest_cache
