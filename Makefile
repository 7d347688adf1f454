# Two quick-start commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-demo

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tools.demo

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests

# CPU benchmarks (not tests): our loader and epoch vs the study's, figures in bench/results/.
# bench.gpu needs a CUDA machine: `.venv/bin/python -m bench.gpu`.
bench: $(STAMP)
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.epoch

# Remove the demo's data and outputs (not your own data: only a folder marked SYNTHETIC).
clean-demo:
	test ! -d data || test -f data/SYNTHETIC
	rm -rf data cache models dvclive predictions
