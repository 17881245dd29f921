"""Every docstring Example in kzoo runs (the `pytest --doctest-modules` check)."""

import doctest
import importlib
import pkgutil

import pytest

import kzoo

# kzoo/backend/ modules only run under their own backend; their examples are
# exercised by the backend-specific tests instead.
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(kzoo.__path__, "kzoo.")
    if not info.name.startswith("kzoo.backend") and info.name != "kzoo.__main__"
)


# Several examples build published-size models (VGG-16, BERT-base): minutes, so
# the matrix runs them once (torch env); `tox -e slow` runs them on JAX.
@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
