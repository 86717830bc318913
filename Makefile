# Two commands do the main work, each setting itself up on a fresh machine:
#   make demo   simulate a drive and print its summary
#   make test   run the test suite (CI runs exactly this)
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: demo test test-all bench lint setup setup-dev clean

$(VENV)/.runtime: pyproject.toml setup.py scripts/setup-env.sh
	scripts/setup-env.sh $(VENV)
	touch $@

$(VENV)/.dev: pyproject.toml setup.py scripts/setup-env.sh
	scripts/setup-env.sh $(VENV) dev,train
	touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

demo: $(VENV)/.runtime
	@mkdir -p $(OUT)
	$(VENV)/bin/fusion-rt simulate $(OUT)/demo_drive.mcap --seconds 30 --seed 7 --conditions mixed
	$(VENV)/bin/fusion-rt log info $(OUT)/demo_drive.mcap

test: $(VENV)/.dev
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.dev
	$(PY) -m pytest -q

bench: $(VENV)/.dev
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=median,iqr,min,max,rounds

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check fusion_rt export calibration tests bench

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .benchmarks
