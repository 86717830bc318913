# Two commands do the main work, each setting itself up on a fresh machine:
#   make demo   the main job end to end: simulate drives, quantize, replay FP32 vs INT8, write a report
#   make test   run the test suite (CI runs exactly this)
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: demo test test-all reliability bench lint setup setup-dev clean package

$(VENV)/.runtime: pyproject.toml setup.py scripts/setup-env.sh
	scripts/setup-env.sh $(VENV) quantize
	touch $@

$(VENV)/.dev: pyproject.toml setup.py scripts/setup-env.sh
	scripts/setup-env.sh $(VENV) dev,train
	touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

demo: $(VENV)/.runtime
	$(VENV)/bin/fusion-rt demo --out $(OUT)/demo

# Rebuild the shipped FP32 package (fusion_rt/packages/fusion-attention) from scratch: train the
# default attention model (DEPLOY_MODEL, ~35 min on 2 idle cores), export it with parity on a held-out drive.
package: $(VENV)/.dev
	@mkdir -p $(OUT)
	$(VENV)/bin/fusion-rt train --out $(OUT)/default-attention --config default --head attention --seed 0 --threads 2
	$(VENV)/bin/fusion-rt simulate $(OUT)/parity_drive.mcap --seconds 6 --seed 424242 --quiet
	$(VENV)/bin/fusion-rt export $(OUT)/default-attention --out fusion_rt/packages/fusion-attention \
	  --parity-log $(OUT)/parity_drive.mcap --name fusion-attention --overwrite

# What CI runs (.ci/run): the tests, then the enforced ratio budgets of bench/budgets.toml (quick).
test: $(VENV)/.dev
	$(PY) -m pytest -m "not slow" -q
	$(MAKE) --no-print-directory bench-quick

test-all: $(VENV)/.dev
	$(PY) -m pytest -q

# The reliability battery (tests/reliability, issue #8) with its full counts (the slow variants too),
# writing what it measured to $(OUT)/reliability/figures.json (README: Reliability).
reliability: $(VENV)/.dev
	FUSION_RT_RELIABILITY_FIGURES=$(OUT)/reliability/figures.json $(PY) -m pytest tests/reliability -q

bench: $(VENV)/.dev
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=median,iqr,min,max,rounds

# The enforced ratio budgets of bench/budgets.toml on the shipped package, in well under 3 minutes
# (part of `make test`); the [targets] are printed beside them.
.PHONY: bench-quick
bench-quick: $(VENV)/.dev
	FUSION_RT_BENCH_QUICK=1 $(PY) -m pytest bench/test_bench_budgets.py -q --benchmark-only \
	  --benchmark-columns=median,iqr,rounds

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check fusion_rt export calibration tests bench

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .benchmarks
