# Set-up is automatic: every target creates .venv and installs what it needs
# from pyproject.toml (torch, numpy; the dev and apps extras) and builds the
# Rust extension into it with maturin.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: test demo bench build lint cargo-test pytest clean gpu-check-bundle gpu-check-dry

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'maturin>=1.5,<2'

# Builds the extension (release, abi3) and installs the package in editable
# mode with its dependencies and the `dev` extra.
build: | $(PY)
	$(VENV)/bin/maturin develop --release --extras dev,apps

lint: build
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(PY) -m mypy.stubtest gumbelrs._core

cargo-test:
	cargo test --release

pytest: build
	$(PY) -m pytest -q

# All tests: linters, Rust tests, Python tests, and the prepared GPU check
# run here without a GPU (so that it works when a session has one).
test: lint cargo-test pytest gpu-check-dry

# Everything the device run of the GPU check needs, in gpu-check/ (git-ignored):
# the release wheel (abi3), the driver and the CUDA test files. On the device,
# from the repository root, with gpu-check carried: python3 gpu-check/gpu_check.py
GPU_CHECK_TESTS := tests/__init__.py tests/conftest.py tests/test_cuda.py \
                   tests/test_cuda_emulated.py tests/cuda_emulator.cpp tests/test_protocol.py
gpu-check-bundle: | $(PY)
	rm -rf gpu-check
	mkdir -p gpu-check/tests
	$(VENV)/bin/maturin build --release --quiet --out gpu-check
	cp benches/gpu_check.py gpu-check/
	cp $(GPU_CHECK_TESTS) gpu-check/tests/

# The GPU check as a session without a GPU runs it: the bundle installed and
# its tests run against the wheel; CUDA tests, bench and parity skip.
gpu-check-dry: gpu-check-bundle build
	OUT=$(abspath target/gpu-check-dry) $(PY) gpu-check/gpu_check.py

# The package's demonstration (`gumbelrs demo`).
demo: build
	$(PY) -m gumbelrs demo

# Criterion benches of the kernels, then the side-by-side table against torch.
bench: build
	cargo bench
	$(PY) benches/compare_torch.py

clean:
	cargo clean
	rm -rf $(VENV) python/gumbelrs/*.so gpu-check gpu-check-out
