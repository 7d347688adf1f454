# Two quick-start commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint study-data pin-sources bench bench-scale quality gpu-wheels gpu-check clean-demo

# requirements.txt is the hash-pinned lock of every package (README "Dependencies"); the project itself
# goes in editable, without dependencies of its own, so nothing outside the lock is ever installed.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The demo is its own DVC pipeline in demo/ (demo/dvc.yaml, demo/params.yaml, demo/dvc.lock): it never
# touches the top-level params.yaml or dvc.lock.
# CPU results depend on the thread count (the order partial sums are added in): the demo and the tests
# run with 2 threads on any machine, so their numbers are the committed ones (stages/__init__.py pins
# the instruction set).
PINNED_THREADS := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

demo: $(STAMP)
	cd demo && $(PINNED_THREADS) PATH="$(BIN):$$PATH" dvc repro
	@echo && cat demo/metrics/summary.md
	@echo "Headline: cd demo && dvc metrics show   Detail: demo/metrics/   Figures: demo/plots/   Report: demo/metrics/report.html   Page: cd demo && dvc plots show"

# The study's data from its two public sources (docs/study-data.md): download the imports that
# sources/*.dvc pin, check each against sources/SHA256SUMS, assemble data/ (manifest layout, with
# SOURCES.csv) and track it as data.dvc, the file your own data would make. Then: dvc repro.
KERMANY := sources/ChestXRay2017.zip
HANNOVER := sources/covid-19-image-repository.tar.gz
study-data: $(STAMP)
	PATH="$(BIN):$$PATH" dvc update $(KERMANY).dvc $(HANNOVER).dvc
	$(BIN)/python -m stages.assemble --kermany $(KERMANY) --hannover $(HANNOVER) --sums sources/SHA256SUMS --out data
	PATH="$(BIN):$$PATH" dvc add data
	@echo "data/ assembled and tracked: git add data.dvc sources && git commit -m 'The study data', then dvc repro"

# Once, by the first person to download a source whose line in sources/SHA256SUMS says UNKNOWN.
pin-sources: $(STAMP)
	$(BIN)/python -m tools.pin_sources sources/SHA256SUMS

# -rs: each skipped test and why (the HTML report's browser check skips without Chromium)
test: $(STAMP)
	$(PINNED_THREADS) PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -rs tests

test-fast: $(STAMP)  # the unit layer, under a minute: no pipeline, benchmark or real backbone run
	$(PINNED_THREADS) PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -rs -m "not slow" tests

# ruff, as pinned in the lock and configured in pyproject.toml: the lint rules and the formatter's layout.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks (not tests), figures in bench/results/; docs/benchmarks.md says how to read them.
# CPU: our loader and epoch vs the study's at 256 px (and 64 px), about 10 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.epoch

# Preprocess at 1k, 4k and 16k synthetic films (made once in /tmp/cxr4-scale, ~3.5 GB), fitted to 100k.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Real films (../shared/data/cxr4), 3 seeds each: the seed spread, the seed ensemble's gain, both
# shortcuts (file metadata; the film outside the lungs) and each model with the lungs hidden beside them
# -> bench/results/quality.json and quality_predictions/ (all four backbones: 19 min on 2 cores).
quality: $(STAMP)
	$(BIN)/python -m bench.quality --backbones resnet18 densenet121 efficientnet_b0 convnext_tiny

# The wheels a CUDA machine without a registry lacks (Python 3.12, manylinux x86_64) -> .whl/ (git-ignored).
gpu-wheels: $(STAMP)
	$(BIN)/python -m tools.gpu.wheels

# On that machine, with .whl/ carried: the pipeline on the GPU end to end, then bench.gpu (<= 8 min).
# No venv there: its own python3 has torch.
gpu-check:
	$(PYTHON) -m tools.gpu.gpu_check

# Back to what was cloned: every file in demo/ that git does not track goes, ignored ones included
# (synthetic data, cache, models, checkpoints, metrics, plots, predictions, DVCLive logs, DVC's cache and
# tmp, and dvc.lock unless committed); tracked ones the demo changed (demo/.gitignore, params from
# `dvc exp run`) are restored from HEAD. Nothing outside demo/ is touched.
clean-demo:
	git restore --source=HEAD --staged --worktree -- demo
	git clean -ffdxq -- demo
