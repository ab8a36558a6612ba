# Two entry points (see README): `make figures` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
# torch is installed first; on a machine that already has a CUDA torch (>= 2.11) use `TORCH= CONSTRAINTS=`
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup setup-all figures figures-quick bridge bridge-quick sweep test test-fast proofs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first (the constraints file pins it), then the package: pip then finds torch satisfied.
$(VENV)/.core-installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(if $(TORCH),$(PIP) "$(TORCH)")
	$(PIP) -e .
	touch $@

$(VENV)/.all-installed: $(VENV)/.core-installed
	$(PIP) -e ".[all]"
	touch $@

setup: $(VENV)/.core-installed
setup-all: $(VENV)/.all-installed

figures: setup            ## regenerate the default figures into figures/ (about 1.5 minutes on 2 cores)
	$(BIN)/python -m hybridtheory.figures --out figures

figures-quick: setup      ## small settings, for CI and smoke tests
	$(BIN)/python -m hybridtheory.figures --quick --out figures-quick

bridge: setup-all         ## offline bridge benchmark + probe -> figures/bridge (pretrained LM cached in ~/.cache/hybridtheory)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m llm_experiments.offline_bench --out figures/bridge

bridge-quick: setup-all   ## the CI-sized bridge benchmark
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m llm_experiments.offline_bench --quick --out figures-quick/bridge

sweep: setup              ## the long ramp sweep down to eps = 0.05 (about 10 minutes), then redraw
	$(BIN)/python -m hybridtheory.figures --sweep --only epoch_complexity --out figures

test: setup-all           ## the whole test suite (theory, proofs, LLM on tiny offline models)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m pytest

proofs: setup-all         ## the numeric verification table of proofs/README.md
	$(BIN)/python -m proofs.verify

bench: setup-all          ## speed of the fast path and the figure commands -> benchmarks/results/
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) figures-quick .pytest_cache
