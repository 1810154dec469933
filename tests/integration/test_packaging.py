"""The wheel holds the package and nothing else: every subpackage, the bundled pipelines
and their schema, and the ``certwright`` command.

The wheel is built once per session from a copy of the sources pyproject.toml names (the
package folders, pyproject.toml, README.md), so the repository's own build/ folder, which
holds the editable install's link tree, is neither used nor changed.
"""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.package import package_dirs

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in package_dirs(ROOT).values():
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("certwright-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _names(wheel: zipfile.ZipFile) -> set[str]:
    return set(wheel.namelist())


def test_certwright_is_the_only_top_level_entry(wheel: zipfile.ZipFile) -> None:
    """Installing the wheel adds certwright/ and its .dist-info to site-packages, nothing
    else (no core/, engine/, tests/ beside it)."""
    tops = {name.split("/", 1)[0] for name in _names(wheel)}
    (dist_info,) = [t for t in tops if t.endswith(".dist-info")]
    assert dist_info.startswith("certwright-")
    assert tops == {"certwright", dist_info}


def test_every_source_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """Each folder under the package folders that holds an __init__.py is a package in the
    wheel, so pyproject's explicit package list cannot miss a new subpackage; and each of
    their modules is there."""
    names = _names(wheel)
    missing = []
    for package, folder in package_dirs(ROOT).items():
        base = ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base)
            inside = "/".join([*package.split("."), *rel.parts])
            missing += [f"{inside}/{py.name}" for py in sorted(init.parent.glob("*.py"))
                        if f"{inside}/{py.name}" not in names]
    assert missing == []


def test_bundled_pipelines_and_schema_are_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """pipelines/*.yaml, pipelines/examples/*.yaml and schema.json ship as package data."""
    names = _names(wheel)
    data = sorted(p.relative_to(ROOT / "pipelines").as_posix()
                  for p in [*(ROOT / "pipelines").glob("*.yaml"),
                            *(ROOT / "pipelines").glob("examples/*.yaml"),
                            ROOT / "pipelines" / "schema.json"])
    assert {"cacert.yaml", "acme.yaml", "examples/hello.yaml", "schema.json"} <= set(data)
    assert [d for d in data if f"certwright/pipelines/{d}" not in names] == []


def test_console_script_is_certwright_engine_cli_main(wheel: zipfile.ZipFile) -> None:
    """The wheel declares one console script: ``certwright = certwright.engine.cli:main``."""
    (entry_points,) = [n for n in _names(wheel) if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {"certwright": "certwright.engine.cli:main"}
