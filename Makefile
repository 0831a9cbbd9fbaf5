# The two commands a newcomer needs:  `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NL     := $(VENV)/bin/newsletter

.PHONY: install system-deps demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Debian's chromium and CJK fonts for the browser test (apt-get, as root; nothing when present).
system-deps:
	bash scripts/system-deps

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo

test: $(VENV)/.installed system-deps
	$(PY) -m pytest

bench: $(VENV)/.installed
	bash bench/run-all

clean:
	rm -rf build outbox .pytest_cache test-artifacts
