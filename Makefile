# Set-up is automatic: every target creates .venv and installs what it needs
# from pyproject.toml (torch, numpy; the dev and apps extras) and builds the
# Rust extension into it with maturin.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: test demo bench build lint cargo-test pytest clean

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

cargo-test:
	cargo test --release

pytest: build
	$(PY) -m pytest -q

# All tests: linters, Rust tests, Python tests.
test: lint cargo-test pytest

# The package's demonstration (`gumbelrs demo`).
demo: build
	$(PY) -m gumbelrs demo

# Criterion benches of the kernels, then the side-by-side table against torch.
bench: build
	cargo bench
	$(PY) benches/compare_torch.py

clean:
	cargo clean
	rm -rf $(VENV) python/gumbelrs/*.so
