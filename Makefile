# Set-up is automatic: every target creates .venv and installs what it needs
# from pyproject.toml (torch, numpy; the dev, apps and docs extras) and builds the
# Rust extension into it with maturin.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: test demo bench build lint cargo-test pytest clean gpu-check-bundle gpu-check-dry wheel \
        test-wheel check-platforms docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'maturin>=1.9,<2'

# Builds the extension (release, abi3) and installs the package in editable
# mode with its dependencies and the `dev`, `apps` and `docs` extras.
build: | $(PY)
	$(VENV)/bin/maturin develop --release --extras dev,apps,docs

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

# All tests: linters, Rust tests, Python tests, the test suite against the
# installed release wheel, and the prepared GPU check run here without a GPU
# (so that it works when a session has one).
test: lint cargo-test pytest test-wheel gpu-check-dry

# The release wheel: abi3, linked by zig against glibc 2.17 (manylinux2014),
# stripped, checked by auditwheel; built in its own cargo target folder so
# that it and `make build` stay incremental.
WHEEL_DIR := target/wheels
wheel: | $(PY)
	$(PY) -m pip install --quiet 'ziglang>=0.13' 'auditwheel>=6'
	rm -rf $(WHEEL_DIR)
	PATH="$(abspath $(VENV))/bin:$$PATH" CARGO_TARGET_DIR=target/release-wheel \
	    $(VENV)/bin/maturin build --release --quiet --zig --compatibility manylinux2014 \
	    --strip --out $(WHEEL_DIR)
	$(VENV)/bin/auditwheel show $(WHEEL_DIR)/gumbelrs-*.whl

# The test suite and the README's examples against the wheel as a user
# installs it: a fresh venv holding only the wheel (pip, no index, no
# dependencies), which reuses the torch, numpy and test tools of .venv through
# a path entry (not its .pth files, so the editable source tree stays out of
# reach), run from a copy of the tests outside the checkout.
WHEEL_ENV := target/wheel-env
# Every test but the applications', the command line's and the distributed
# runs (they run the same library calls through the apps, for minutes) and the
# documentation's (it builds docs/ from the source tree): the ops, kernels,
# RNG, distributions, estimators, layers, structures, stubs, CUDA emulation and
# the README's examples.
WHEEL_TESTS := tests --ignore=tests/test_cli.py --ignore-glob='tests/test_apps_*' \
               --ignore=tests/test_distributed.py --ignore=tests/test_docs.py
test-wheel: wheel build
	rm -rf $(WHEEL_ENV) target/wheel-test
	$(PY) -m venv --without-pip $(WHEEL_ENV)
	$(WHEEL_ENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))" \
	    > target/wheel-env-site
	$(PY) -c "import sysconfig; print(sysconfig.get_path('purelib'))" \
	    > "$$(cat target/wheel-env-site)/dev-venv.pth"
	$(PY) -m pip --python $(WHEEL_ENV)/bin/python install --quiet --no-deps --no-index \
	    $(WHEEL_DIR)/gumbelrs-*.whl
	mkdir -p target/wheel-test
	cp -r tests README.md target/wheel-test/
	cd target/wheel-test && ../wheel-env/bin/python -c "import gumbelrs, sys; \
	    assert '/wheel-env/' in gumbelrs.__file__, gumbelrs.__file__; print(gumbelrs.__file__)"
	cd target/wheel-test && ../wheel-env/bin/gumbelrs --version && ../wheel-env/bin/gumbelrs info
	cd target/wheel-test && ../wheel-env/bin/python -m pytest -q -p no:cacheprovider \
	    $(WHEEL_TESTS)

# What of .github/workflows/release.yml can be checked here: the YAML against
# GitHub's workflow schema, and clippy of the crate with its bindings for the
# other platforms of the release (no AVX-512 and no Linux-only code there).
# Needs rustup to fetch those targets' std, so it is not part of `make test`.
PLATFORMS := aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-apple-darwin \
             x86_64-pc-windows-gnu
check-platforms: | $(PY)
	$(PY) -m pip install --quiet 'check-jsonschema>=0.28'
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	rustup target add $(PLATFORMS)
	for t in $(PLATFORMS); do \
	    CARGO_TARGET_DIR=target/cross cargo clippy --quiet --target $$t --lib --features python \
	        -- -D warnings || exit 1; \
	done

# Everything the device run of the GPU check needs, in gpu-check/ (git-ignored):
# the release wheel (abi3), the driver and the CUDA test files. On the device,
# from the repository root, with gpu-check carried: python3 gpu-check/gpu_check.py
GPU_CHECK_TESTS := tests/__init__.py tests/conftest.py tests/test_cuda.py \
                   tests/test_cuda_emulated.py tests/cuda_emulator.cpp tests/test_protocol.py
gpu-check-bundle: wheel
	rm -rf gpu-check
	mkdir -p gpu-check/tests
	cp $(WHEEL_DIR)/gumbelrs-*.whl gpu-check/
	cp benches/gpu_check.py gpu-check/
	cp $(GPU_CHECK_TESTS) gpu-check/tests/

# The GPU check as a session without a GPU runs it: the bundle installed and
# its tests run against the wheel; CUDA tests, bench and parity skip.
gpu-check-dry: gpu-check-bundle build
	OUT=$(abspath target/gpu-check-dry) $(PY) gpu-check/gpu_check.py

# The documentation site: static HTML in docs/_build/html (open index.html),
# built offline with warnings as errors, then the examples of the guides and
# docstrings run by the doctest builder on the same parsed pages.
# (tests/test_docs.py runs the same two builds in `make test`.)
DOCS_OUT := docs/_build
docs: build
	$(PY) -m sphinx -q -W --keep-going -b html -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/html
	$(PY) -m sphinx -q -W --keep-going -b doctest -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/doctest
	@echo "documentation: $(DOCS_OUT)/html/index.html"

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
