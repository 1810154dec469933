"""pipelines/schema.json: a valid draft 2020-12 schema that accepts every good pipeline."""
from __future__ import annotations

import json
import posixpath
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from certwright.engine.model.yamlsafe import load_yaml


def _yaml_in(folder: Traversable) -> list[Traversable]:
    return sorted((e for e in folder.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name)


# the package data, found as an installed wheel has it (not through a source path)
ROOT = resources.files("certwright.pipelines")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))
# bundled pipelines by their path inside the package, e.g. "examples/hello.yaml"
BUNDLED = [e.name for e in _yaml_in(ROOT)] + [f"examples/{e.name}"
                                              for e in _yaml_in(ROOT / "examples")]


def _bundled(name: str) -> Traversable:
    return ROOT.joinpath(*name.split("/"))
# broken files whose fault is structural, so the schema alone must refuse them
STRUCTURAL = ["unknown_top_key", "version_not_int", "loop_with_run", "final_with_next",
              "enum_without_values", "unknown_condition", "wait_two_kinds", "no_next",
              "unknown_step_key", "missing_initial", "bad_pipeline_name", "renew_fraction",
              "bad_duration", "loop_max_negative", "bad_final_value", "bad_input_type",
              "bad_step_id", "bad_retry_policy"]


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "schema.json").read_text())
    return loaded


def _errors(path: Path | Traversable) -> list[str]:
    data = load_yaml(path.read_text(), str(path)).value
    return [e.message for e in Draft202012Validator(_schema()).iter_errors(data)]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """check_schema raises on a malformed schema."""
    schema = _schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_documents_its_properties() -> None:
    """Editors show descriptions: every top-level property has one."""
    schema = _schema()
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name


@pytest.mark.parametrize("name", BUNDLED, ids=posixpath.basename)
def test_bundled_pipelines_point_editors_at_the_schema(name: str) -> None:
    """Each bundled pipeline starts with the yaml-language-server line naming a schema file
    that exists (relative to the pipeline), so editors validate and complete it."""
    first = _bundled(name).read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix), first
    target = posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                               first[len(prefix):].strip()))
    assert target == "schema.json"
    assert ROOT.joinpath(target).is_file()


@pytest.mark.parametrize("path", VALID + [_bundled(n) for n in BUNDLED], ids=lambda p: p.name)
def test_valid_and_bundled_pipelines_match_the_schema(path: Path | Traversable) -> None:
    """Every valid fixture and every bundled pipeline validates."""
    assert _errors(path) == []


@pytest.mark.parametrize("name", STRUCTURAL)
def test_structurally_broken_fixtures_do_not_match(name: str) -> None:
    """The schema refuses files whose fault is in their shape."""
    assert _errors(FIXTURES / "invalid" / f"{name}.yaml")
