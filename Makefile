# mmlab: two commands do all the set-up on a fresh machine with python3 and make.
#   make stress   run the default stress suites (the main job)
#   make test     run the whole test suite
#   make test-pythons  the suite under every Python 3.11/3.12/3.13 found here, each in .venv-3.x
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all test test-pythons stress bench demo lint clean venv

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,plot]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

# The supported interpreters (pyproject: >= 3.11). Each is looked for in pyenv
# ($(PYENV_ROOT)/versions/3.x.*/bin/python, the newest patch release) and as python3.x on PATH,
# and must really be that version; each gets its own venv, .venv-3.x, rebuilt when pyproject.toml
# changes. Says which versions passed, failed and were skipped (not on this machine); exit 1 when
# any failed.
PYTHONS    ?= 3.11 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv

test-pythons:
	@passed=""; failed=""; skipped=""; \
	for v in $(PYTHONS); do \
	  py=""; \
	  for c in $$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -n 1) \
	           $$(command -v python$$v 2>/dev/null); do \
	    if "$$c" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$$v')" 2>/dev/null; then \
	      py=$$c; break; \
	    fi; \
	  done; \
	  if [ -z "$$py" ]; then \
	    echo "test-pythons: $$v SKIPPED: no python$$v on PATH or in $(PYENV_ROOT)/versions"; \
	    skipped="$$skipped $$v"; continue; \
	  fi; \
	  venv=$(VENV)-$$v; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "test-pythons: $$v: making $$venv with $$py"; \
	    if ! { "$$py" -m venv $$venv && $$venv/bin/python -m pip install -q --upgrade pip >$$venv/pip.log 2>&1 && \
	           $$venv/bin/python -m pip install -q -e '.[dev,plot]' >>$$venv/pip.log 2>&1 && touch $$venv/.installed; }; then \
	      tail -n 20 $$venv/pip.log 2>/dev/null; \
	      echo "test-pythons: $$v FAILED: could not set up $$venv (pip's output: $$venv/pip.log)"; \
	      failed="$$failed $$v"; continue; \
	    fi; \
	  fi; \
	  echo "test-pythons: $$v: $$($$venv/bin/python -V) -m pytest -q -n 2 tests"; \
	  if $$venv/bin/python -m pytest -q -n 2 tests; then passed="$$passed $$v"; else failed="$$failed $$v"; fi; \
	done; \
	echo "test-pythons: passed:$${passed:- none}; failed:$${failed:- none}; skipped:$${skipped:- none}"; \
	[ -z "$$failed" ]

stress: $(STAMP)
	$(PY) -m mmlab stress

bench: $(STAMP)
	$(PY) -m mmlab bench

demo: $(STAMP)
	$(PY) -m mmlab demo

clean:
	rm -rf $(VENV) $(VENV)-3.* build *.egg-info .pytest_cache
