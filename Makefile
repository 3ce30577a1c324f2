# The commands people run. Everything installs into .venv at the project root.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser wrk vendor demo run-local serve test fuzz lint format bench gpu-check clean

install: $(STAMP)

# torch and torchvision first, with pip, at the pinned versions (requirements/torch.txt): a
# resolver left to itself would fetch several GB of other CUDA builds.
$(STAMP): pyproject.toml requirements/torch.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/torch.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The dashboard's browser tests drive Debian's chromium (Playwright never downloads one).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "install Debian's chromium for the browser tests: sudo apt-get install chromium"; exit 1; fi; }

# The API benchmarks load the service with Debian's wrk.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq wrk >/dev/null; \
	  else echo "install Debian's wrk for the API benchmarks: sudo apt-get install wrk"; exit 1; fi; }

# Refresh the dashboard's vendored scripts (uPlot, yaml) from the npm registry; they are committed,
# so neither installing nor serving needs node.
vendor:
	api/dashboard/vendor.sh

# The service end to end: start it (embedded default), submit the MNIST-1D job over HTTP,
# follow it, print the report and where the artifacts are.
demo: install
	$(BIN)/python scripts/demo.py --spec examples/mnist1d.yaml --home runs/demo

# The same job without the service, straight through the engine.
run-local: install
	$(BIN)/distill run examples/mnist1d.yaml --out runs/mnist1d

serve: install
	$(BIN)/distill serve

test: install browser
	$(BIN)/python -m pytest -q

# schemathesis against the running API's /openapi.json (a throwaway home and admin token), over
# more than 1,000 cases: no server error, no status code or content type the document does not list.
fuzz: install
	$(BIN)/python scripts/fuzz_live.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Studies (README "Studies"): the default recipe against its baseline on four datasets and two
# budgets; a kept teacher's saving; a sweep against the same trials as independent jobs (CPU
# time, early stops, teachers trained), the last two at 0.3x the default's epochs to stay short.
# Speed where people wait (README "Speed where people wait"): dispatched -> running; polling and
# submitting under load (wrk, beside a bare FastAPI floor); the engine against torchdistill (a
# benchmark-only dependency, requirements/bench.txt).
bench: install wrk
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/bench.txt
	$(BIN)/python bench/kd_step.py
	$(BIN)/python bench/kd_peer.py
	$(BIN)/python bench/stream_data.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/api_poll.py
	$(BIN)/python bench/submit.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/recipes.py
	$(BIN)/python bench/kept_stages.py --epochs-scale 0.3
	$(BIN)/python bench/sweep.py --epochs-scale 0.3

# On a CUDA machine, in about 3.5 minutes on one H200: the MNIST-1D job and a synthetic-image ResNet
# job on the GPU (bf16 autocast vs fp32, channels-last vs not, torch.compile on and off), the bare-loop
# comparison above, and 2-GPU data-parallel where two GPUs exist. Without CUDA it checks nothing and
# says so. GPU_CHECK_ARGS='--out gpu_check.json' also writes every figure as JSON.
gpu-check: install
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf runs test-artifacts .pytest_cache .mypy_cache .ruff_cache
