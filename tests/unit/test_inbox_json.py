"""A ``.json`` inbox request is read by the json module when that gives what the YAML
reader gives; every other case (a duplicate key, a number YAML reads as text, NaN, deep
nesting, bad syntax) goes to the YAML reader, which answers or says what is wrong. And
the bundled pipelines are listed again only when their folder changes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from certwright.engine.daemon import requestfile
from certwright.engine.model import loader
from certwright.engine.model.yamlsafe import MAX_DEPTH, load_yaml
from certwright.errors import CertwrightError

PLAIN = [
    '{"pipeline": "cacert", "inputs": {"domain": "a.test", "days": 90}}',
    ('{"pipeline": "p", "run_id": "r-1", "inputs": {"n": -2.5E+3, "f": 1.25, "t": true,'
     ' "z": null, "l": [1, "two", {"three": [3]}], "u": "caf\\u00e9 \\u2713"}}'),
    '{"pipeline": "p", "inputs": {}}',
    '{"pipeline": "p", "inputs": {"big": 123456789012345678901234567890}}',
]
# where the json module would read a value otherwise than the YAML reader does
OTHERWISE = [
    '{"pipeline": "p", "inputs": {"n": 1e3}}',  # text to YAML 1.1
    '{"pipeline": "p", "inputs": {"n": 1.5e3}}',  # text too (no sign in the exponent)
    '{"pipeline": "p", "inputs": {"n": NaN}}',  # not JSON; text to YAML
]


def _yaml(text: str) -> object:
    return load_yaml(text, "req.json").value


@pytest.mark.parametrize("text", PLAIN)
def test_plain_json_is_read_by_the_json_module_as_yaml_reads_it(text: str):
    fast = requestfile.plain_json(text)
    assert fast is not None  # the quick reader answered
    assert fast == _yaml(text)
    assert requestfile.parse_request(text.encode(), "req.json") == _yaml(text)


@pytest.mark.parametrize("text", OTHERWISE)
def test_values_yaml_reads_otherwise_go_to_the_yaml_reader(text: str):
    assert requestfile.plain_json(text) is None
    assert requestfile.parse_request(text.encode(), "req.json") == _yaml(text)


def test_a_duplicate_key_is_refused_with_its_place():
    text = '{"pipeline": "p",\n "pipeline": "q"}'
    assert requestfile.plain_json(text) is None
    with pytest.raises(CertwrightError) as err:
        requestfile.parse_request(text.encode(), "req.json")
    assert "duplicate key" in str(err.value) and "req.json:2" in str(err.value)


def test_nesting_past_the_yaml_limit_is_refused_by_the_yaml_reader():
    def nested(n: int) -> str:  # n lists inside the request's two mappings
        return '{"pipeline": "p", "inputs": {"x": ' + "[" * n + "]" * n + "}}"
    edge = MAX_DEPTH - 2
    assert requestfile.plain_json(nested(edge)) == _yaml(nested(edge))  # the deepest YAML takes
    for n in (edge + 1, 5000):
        assert requestfile.plain_json(nested(n)) is None
        with pytest.raises(CertwrightError, match="nest"):
            requestfile.parse_request(nested(n).encode(), "req.json")


def test_bad_syntax_is_located_by_the_yaml_reader():
    with pytest.raises(CertwrightError, match=r"req\.json:1"):
        requestfile.parse_request(b'{"pipeline": "p", "inputs": {', "req.json")


def test_bundled_pipelines_are_listed_again_when_their_folder_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "examples").mkdir()
    (tmp_path / "one.yaml").write_text("x")
    monkeypatch.setattr(loader, "_bundled_folder", lambda: tmp_path)
    assert list(loader.bundled_pipelines()) == ["one"]
    first = loader.bundled_pipelines()
    first.pop("one")  # a caller's copy: the listing kept is not changed
    assert list(loader.bundled_pipelines()) == ["one"]
    (tmp_path / "examples" / "two.yaml").write_text("x")
    st = os.stat(tmp_path / "examples")
    os.utime(tmp_path / "examples", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert list(loader.bundled_pipelines()) == ["one", "two"]
