# Two quick-start commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: demo deps test test-fast lint study-data pin-sources bench bench-scale quality gpu-wheels gpu-check clean-demo

# requirements.txt is the hash-pinned lock of every package (README "Dependencies"); the project itself
# goes in editable, without dependencies of its own, so nothing outside the lock is ever installed.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The demo is its own DVC pipeline in demo/ (demo/dvc.yaml, demo/params.yaml, demo/dvc.lock): it never
# touches the top-level params.yaml or dvc.lock. `make demo` is `cd demo && dvc repro` with the venv on
# PATH and nothing else: what its numbers depend on is in demo/params.yaml (train.threads: 2, since CPU
# results depend on the thread count) or pinned by the code (stages/__init__.py: the instruction set).
demo: $(STAMP)
	cd demo && PATH="$(BIN):$$PATH" dvc repro
	@echo && cat demo/metrics/summary.md
	@echo "Headline: cd demo && dvc metrics show   Detail: demo/metrics/   Figures: demo/plots/   Report: demo/metrics/report.html   Page: cd demo && dvc plots show"

# Each stage's code deps in dvc.yaml: exactly the .py files its command imports, directly or not (never a
# folder: Python's __pycache__ would change it). Run after moving code between modules; demo/dvc.yaml follows.
deps: $(STAMP)
	$(BIN)/python -m tools.code_deps --write
	$(BIN)/python -m tools.demo_pipeline

# The study's data from its two public sources (docs/study-data.md): download the imports in sources/
# (Kermany's zip from its URL, checked against its sha256 in sources/SHA256SUMS; the Hannover films
# from their git repository at the commit the .dvc files name), assemble data/ (manifest layout, with
# SOURCES.csv) and track it as data.dvc, the file your own data would make. Then: dvc repro.
# sources/ is a DVC project of its own, as demo/ is: `dvc status` checks a git import for updates by
# cloning its repository, which the top level's `dvc status` must not do (offline, or at every call).
KERMANY := sources/ChestXRay2017.zip
HANNOVER := sources/covid-19-image-repository
study-data: $(STAMP)
	cd sources && PATH="$(BIN):$$PATH" dvc update --recursive .
	$(BIN)/python -m stages.assemble --kermany $(KERMANY) --hannover $(HANNOVER) --sums sources/SHA256SUMS --out data
	PATH="$(BIN):$$PATH" dvc add data
	@echo "data/ assembled and tracked: git add data.dvc sources && git commit -m 'The study data', then dvc repro"

# Only when `make study-data` refused the Kermany download as differing from its pin, and you checked
# the download as the refusal says: its sha256 becomes the pin. Then commit sources/SHA256SUMS.
pin-sources: $(STAMP)
	$(BIN)/python -m tools.pin_sources sources/SHA256SUMS $(KERMANY)

# The tests' own torch runs with 2 threads on any machine (tests/conftest.py sets it too), as the demo does.
PINNED_THREADS := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

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
# CPU: our loader and epoch vs the study's at 256 px (and 64 px): 27 s and 158 s on a 2-core AMD EPYC
# (their elapsed_s).
bench: $(STAMP)
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.epoch

# Preprocess at 1k, 4k and 16k synthetic films (made once in /tmp/cxr4-scale, ~3.5 GB), fitted to 100k.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Real films (../shared/data/cxr4), 3 seeds each: the seed spread, the seed ensemble's gain, both
# shortcuts (file metadata; the film outside the lungs) and each model with the lungs hidden beside them
# -> bench/results/quality.json and quality_predictions/ (all four backbones: 151 min on a 2-core
# AMD EPYC, its wall_s, busy with other jobs).
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
