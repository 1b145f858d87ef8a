import re

import pytest

import gumbelrs


@pytest.fixture
def gen():
    """A fresh generator with a fixed seed (statistical tests are deterministic)."""
    return gumbelrs.Generator(seed=20261125)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = gumbelrs.get_num_threads()
    yield
    gumbelrs.set_num_threads(before)


def raises(exc, message):
    """``pytest.raises`` that demands exactly ``message``."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")
