# The two commands a newcomer needs:  make demo  and  make test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lock: exact versions the project was tested with. torch/torchvision come from this machine's disk.
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup demo test test-fast lint bench clean

$(BIN)/clearsight: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	$(PIP_INSTALL) torch==2.14.1 torchvision==0.29.1
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@

setup: $(BIN)/clearsight

## Main job end to end on the embedded defaults: synthetic data, SQLite.
demo: setup
	$(BIN)/clearsight demo --out runs/demo

## The whole test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -n 2 --timeout 600

test-fast: setup
	$(BIN)/python -m pytest -n 2 -m "not slow and not browser"

lint: setup
	$(BIN)/ruff check datasets models pipeline serve tests bench

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) runs build *.egg-info
