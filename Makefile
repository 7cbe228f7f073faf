# The README's two commands: `make demo` (set up + main job), `make test` (set up + all checks).
# Both are idempotent and need no GPU and no network beyond the package registries.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pemt-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup sysdeps demo test lint typecheck pytest test-lowest bench clean

# System packages the project uses (espeak-ng for speech in the synthetic dataset, chromium for
# the browser tests). Installed when we are root and they are missing; otherwise a notice.
sysdeps:
	@bash scripts/sysdeps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

setup: $(STAMP) sysdeps

# make demo TRITON=1: the model on Triton (nvidia-pytriton's server, no Docker or GPU);
# add MILVUS=1: a Milvus index and two API replicas (the production shape, deploy/k8s/)
demo: setup
	$(PY) -m pemt.demo $(if $(TRITON),--triton) $(if $(MILVUS),--milvus)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest

# The lowest versions pyproject.toml allows, tested: a separate venv with the serve extra's lowest
# direct versions (uv --resolution lowest-direct; no torch in that extra, checked), running the
# server's, clients' and media tests. They serve a model that the main venv exports beforehand.
LOWEST := .venv-lowest
LOWEST_TESTS := tests/test_server.py tests/test_server_media.py tests/test_clients.py \
	tests/test_media.py tests/test_index.py tests/test_config.py
test-lowest: setup
	rm -rf $(LOWEST)
	$(VENV)/bin/uv venv -q --python $(PY) $(LOWEST)
	$(VENV)/bin/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct \
		-e '.[serve]' 'pytest>=8' 'pytest-timeout>=2.3' 'pillow>=10' 'scipy>=1.11'
	$(LOWEST)/bin/python -c "import importlib.util as u; assert not u.find_spec('torch'), 'torch in $(LOWEST)'"
	$(VENV)/bin/uv pip list --python $(LOWEST)/bin/python
	$(PY) -c "import sys; from server.testing import build_test_repository as b; b(sys.argv[1])" $(CURDIR)/$(LOWEST)/repo
	PEMT_TEST_REPOSITORY=$(CURDIR)/$(LOWEST)/repo $(LOWEST)/bin/python -m pytest -p no:cacheprovider $(LOWEST_TESTS)

test: lint typecheck pytest test-lowest

# The quick CPU benchmarks (a few minutes); the others are listed in BENCHMARKS.md.
bench: setup
	$(PY) bench/bench_pipeline.py --repeat 3
	$(PY) bench/bench_export.py --cases small:1:10,small:4:5,paper:1:3 --out bench/results/export_cpu_quiet.md
	$(PY) bench/bench_service.py --config small --repeat 5 --clients 1,2,4,8 --requests 3 --out bench/results/service_quiet.md

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
