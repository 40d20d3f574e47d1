# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run train test lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The paper's experiments on the embedded digits data (demo profile), with the report: ~1 minute.
run: $(STAMP)
	$(BIN)/python scripts/reproduce_paper.py --profile demo

# One run of the default config (digits, paper_cnn, uSF, BN+BM, SGD): ~20 seconds.
train: $(STAMP)
	$(BIN)/asymbp-train

test: $(STAMP)
	$(BIN)/ruff check asymbp tests benchmarks scripts hydra_plugins
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check asymbp tests benchmarks scripts hydra_plugins

bench: $(STAMP)
	$(BIN)/python benchmarks/feedback_overhead.py
	$(BIN)/python benchmarks/epoch_overhead.py
	$(BIN)/python benchmarks/sweep_scaling.py
	$(BIN)/python benchmarks/long_run_stability.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
