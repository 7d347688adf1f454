# Two quick-start commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-demo

# requirements.txt is the hash-pinned lock of every package (README "Dependencies"); the project itself
# goes in editable, without dependencies of its own, so nothing outside the lock is ever installed.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The demo is its own DVC pipeline in demo/ (demo/dvc.yaml, demo/params.yaml, demo/dvc.lock): it never
# touches the top-level params.yaml or dvc.lock.
demo: $(STAMP)
	cd demo && PATH="$(BIN):$$PATH" dvc repro
	@echo && cat demo/metrics/summary.md
	@echo "Headline: cd demo && dvc metrics show   Detail: demo/metrics/   Figures: demo/plots/   Page: cd demo && dvc plots show"

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q tests

# CPU benchmarks (not tests): our loader and epoch vs the study's, figures in bench/results/.
# bench.gpu needs a CUDA machine: `.venv/bin/python -m bench.gpu`.
bench: $(STAMP)
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.epoch

# Back to what was cloned: every file in demo/ that git does not track goes, ignored ones included
# (synthetic data, cache, models, checkpoints, metrics, plots, predictions, DVCLive logs, DVC's cache and
# tmp, and dvc.lock unless committed); tracked ones the demo changed (demo/.gitignore, params from
# `dvc exp run`) are restored from HEAD. Nothing outside demo/ is touched.
clean-demo:
	git restore --source=HEAD --staged --worktree -- demo
	git clean -ffdxq -- demo
