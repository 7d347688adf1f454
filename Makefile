# Two quick-start commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-scale gpu-wheels gpu-check clean-demo

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
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

# Benchmarks (not tests), figures in bench/results/; docs/benchmarks.md says how to read them.
# CPU: our loader and epoch vs the study's at 256 px (and 64 px), about 10 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.epoch

# Preprocess at 1k, 4k and 16k synthetic films (made once in /tmp/cxr4-scale, ~3.5 GB), fitted to 100k.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# The wheels a CUDA machine without a registry lacks (Python 3.12, manylinux x86_64) -> .whl/ (git-ignored).
gpu-wheels: $(STAMP)
	$(BIN)/python -m bench.wheels

# On that machine, with .whl/ carried: the pipeline on the GPU end to end, then bench.gpu (<= 8 min).
# No venv there: its own python3 has torch.
gpu-check:
	$(PYTHON) -m bench.gpu_check

# Back to what was cloned: the demo's untracked files removed (data, cache, models, checkpoints), its
# committed results restored.
clean-demo:
	rm -rf demo/data demo/cache demo/models demo/checkpoints
	git checkout -- demo
	git clean -fdq -- demo
