# mmlab: two commands do all the set-up on a fresh machine with python3 and make.
#   make stress   run the default stress suites (the main job)
#   make test     run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all test stress bench demo lint clean venv

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,plot]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

stress: $(STAMP)
	$(PY) -m mmlab stress

bench: $(STAMP)
	$(PY) -m mmlab bench

demo: $(STAMP)
	$(PY) -m mmlab demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
