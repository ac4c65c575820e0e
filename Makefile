# One command each for setting up, the main job and the tests (see README.md).
# Every target creates .venv when it is missing and installs what it needs into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test lint format bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel

# Stamp files re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/prompt-tuning demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check prompt_tuning tests scripts benchmarks
	$(VENV)/bin/ruff format --check prompt_tuning tests scripts benchmarks

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff check --fix prompt_tuning tests scripts benchmarks
	$(VENV)/bin/ruff format prompt_tuning tests scripts benchmarks

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/load_checkpoint.py
	$(PY) benchmarks/peft_compare.py $(BENCH_ARGS)
	$(PY) benchmarks/real_lengths.py

clean:
	rm -rf $(VENV) build *.egg-info
