# Two commands on a fresh machine (Python 3.10+ with venv):
#   make demo   set up .venv and run the demo
#   make test   set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml requirements/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/ci.txt
	@# the distribution was called "edlib" before 0.1.0's rename (PyPI's edlib is another project)
	$(BIN)/python -m pip uninstall -q -y edlib 2>/dev/null || true
	$(BIN)/python -m pip install -q -e ".[dev]" -c requirements/ci.txt
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/edlib demo --out demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

clean:
	rm -rf $(VENV) demo
