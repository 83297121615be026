"""Every Examples section in the package runs as a doctest."""

import doctest
import importlib
import pkgutil

import pytest

import spatialmeta

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(spatialmeta.__path__, "spatialmeta.")
    if not m.name.endswith("cli")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
