# Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The default config end to end (digits, paper_cnn, uSF, BN+BM, SGD): about half a minute on 2 cores.
run: $(STAMP)
	$(BIN)/asymbp-train

test: $(STAMP)
	$(BIN)/ruff check asymbp tests benchmarks scripts hydra_plugins
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check asymbp tests benchmarks scripts hydra_plugins

bench: $(STAMP)
	$(BIN)/python benchmarks/feedback_overhead.py
	$(BIN)/python benchmarks/epoch_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
