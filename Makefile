# Set-up is part of every target: .venv is created if missing and the package installed into it.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.clipshift-installed
# The report tests open report.html in headless Chromium (Debian's package; playwright drives it).
CHROMIUM ?= /usr/bin/chromium
APT_GET ?= apt-get
# The plan.slurm test starts a one-node Slurm (tests/slurm_helpers.py) from Debian's slurm-wlm and munge.
SLURM_BINARIES ?= /usr/bin/sbatch /usr/bin/squeue /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged

.PHONY: quickstart test test-slow install browser slurm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

# Idempotent: installs Debian's chromium only when it is missing, apt-get exists and we are root;
# otherwise one note, and the browser tests skip themselves.
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif command -v $(APT_GET) >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the report tests ($(APT_GET) install chromium)"; \
	  { DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium >/dev/null; } || \
	  echo "note: $(APT_GET) install chromium failed; the tests that open report.html in a browser will be skipped"; \
	else \
	  echo "note: $(CHROMIUM) is missing (as root: apt-get install chromium); the browser tests will be skipped"; \
	fi

# Idempotent, as browser: Debian's slurm-wlm and munge only when one of their binaries is missing,
# apt-get exists and we are root; otherwise one note, and the Slurm test skips itself.
slurm:
	@missing=; for b in $(SLURM_BINARIES); do [ -x "$$b" ] || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v $(APT_GET) >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's slurm-wlm and munge for the Slurm test ($(APT_GET) install slurm-wlm munge)"; \
	  { DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq slurm-wlm munge >/dev/null; } || \
	  echo "note: $(APT_GET) install slurm-wlm munge failed; the Slurm test will be skipped"; \
	else \
	  echo "note:$$missing missing (as root: apt-get install slurm-wlm munge); the Slurm test will be skipped"; \
	fi

install: $(STAMP) browser slurm

quickstart: $(STAMP)
	$(BIN)/clipshift quickstart --out runs/quickstart

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf runs .pytest_cache
