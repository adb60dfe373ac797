# Quick start: `make run` (the main job on built-in synthetic faces), `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/sedl
CONFIG  ?= configs/sedl.py
PYTEST_ARGS ?=

.PHONY: run test bench install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) launch.py --config=$(CONFIG) --workdir=$(WORKDIR)

# --no-loadscope-reorder: xdist would otherwise hand out the files with the most
# tests first, which puts the longest files (few, slow tests) last and leaves one
# worker idle at the end; tests/conftest.py orders them longest first instead.
test: install
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: install
	$(PY) bench/contrastive_step.py --out=bench/results
	$(PY) bench/card_sampling.py --out=bench/results
	$(PY) bench/predict.py --out=bench/results
	$(PY) bench/prepare_data.py --out=bench/results
	$(PY) bench/hot_paths.py --out=bench/results
	$(PY) bench/profile_step.py --out=bench/results
	$(PY) bench/layout_transpose.py --out=bench/results
	$(PY) bench/card_activation.py --out=bench/results
	$(PY) bench/device_coupling.py --out=bench/results

clean:
	rm -rf runs .pytest_cache
