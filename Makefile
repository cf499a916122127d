# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# The real data sets, where this project's machines keep them (beside the checkout). The library
# never looks there by itself: it reads $LINFILT_DATA. A clone without them still tests (data tests skip).
LINFILT_DATA ?= $(wildcard $(abspath ..)/shared/data)
export LINFILT_DATA

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The main job: MNIST, Tables 1, 7 and 8, at 20 models per population (paper: 100).
demo: $(VENV)/.installed
	$(PY) -m linfilt reproduce table1 table7 table8 --models 20 --repeats 3 --print

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
