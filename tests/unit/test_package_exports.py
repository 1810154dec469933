"""Each package names its public API in a sorted ``__all__``, loaded on first use."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.package import modules

ROOT = Path(__file__).resolve().parents[2]
# the packages, less the bottom layer's root (its own modules are its API) and the folders
# of package data
PACKAGES = sorted(name for name, module in modules(ROOT).items()
                  if module.is_package and name not in ("certwright", "certwright.pipelines"))


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_has_a_sorted_all_whose_names_resolve(name: str) -> None:
    """Every package has ``__all__``, sorted, and each name in it can be read."""
    package = importlib.import_module(name)
    names = getattr(package, "__all__", None)
    assert isinstance(names, list), f"{name} has no __all__ list"
    assert names == sorted(names), f"{name}.__all__ is not sorted"
    for attr in names:
        assert getattr(package, attr) is not None, f"{name}.{attr}"


def test_importing_a_package_imports_none_of_its_exports() -> None:
    """Importing a package (as every import of a module in it does) loads no export."""
    code = ("import json, sys; import certwright.engine.run, certwright.mail, certwright.state; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('certwright'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = set(json.loads(done.stdout))
    assert loaded == {"certwright", "certwright._lazy", "certwright.engine",
                      "certwright.engine.run", "certwright.mail", "certwright.state"}


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name a package does not export raises AttributeError, as a module does."""
    package = importlib.import_module("certwright.engine.run")
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = package.nothing_here
