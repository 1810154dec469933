"""The pipeline loader: valid files become the expected spec; broken ones name file:line:col.

Each file in ``tests/fixtures/pipelines/invalid/`` states what it must produce in its first
lines: ``# expect: LINE:COL: message substring`` (one per problem; the error must carry
exactly these) and optionally ``# hint: substring``.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import pytest

from certwright.engine.model.loader import (
    bundled_pipelines,
    load_pipeline,
    load_pipeline_text,
    resolve_pipeline_path,
)
from certwright.engine.model.spec import (
    DEFAULT_RETRY,
    Condition,
    LoopSpec,
    RetryPolicy,
    TimeoutSpec,
)
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import Done
from certwright.errors import CertwrightError, Location, SpecError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.*)$", re.MULTILINE)
HINT = re.compile(r"^# hint: (.*)$", re.MULTILINE)


class _Step:
    name: ClassVar[str] = ""
    description: ClassVar[str] = "a test step"
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    idempotent: ClassVar[bool] = True
    secret_outputs: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: Any) -> Done:
        return Done({})


class ShellLike(_Step):
    name = "shell"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"argv": {"type": "array", "minItems": 1,
                                "items": {"type": ["string", "boolean"]}}}}


class SetLike(_Step):
    name = "set"


class KeyLike(_Step):
    name = "key.generate"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"bits": {"type": "integer", "minimum": 2048}}}


class WaitMailLike(_Step):
    name = "wait.mail"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "required": ["to"], "additionalProperties": False,
        "properties": {"to": {"type": "string"}}}


class WaitFileLike(_Step):
    name = "wait.file"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}


class WaitUntilLike(_Step):
    name = "wait.until"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "required": ["at"], "properties": {"at": {"type": "string"}}}


def registry() -> Registry:
    """Test steps, plus ``ca.sign`` whose module does not exist (known, schema unchecked)."""
    classes: dict[str, str | type] = {
        c.name: c for c in (ShellLike, SetLike, KeyLike, WaitMailLike, WaitFileLike,
                            WaitUntilLike)}
    classes["ca.sign"] = "tests.unit.no_such_module_here:Sign"
    return Registry(classes, plugins=False)


def _load(name: str) -> Any:
    return load_pipeline(FIXTURES / "valid" / name, registry())


def _problems(path: Path) -> SpecError:
    """The problems of a broken file, checked with the real built-in steps (so each step's
    own parameter schema takes part, as in ``certwright validate``)."""
    with pytest.raises(SpecError) as info:
        load_pipeline(path, Registry(plugins=False))
    return info.value


INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))


def test_there_are_enough_invalid_fixtures() -> None:
    """At least twenty broken files, each stating what it expects."""
    assert len(INVALID) >= 20
    for path in INVALID:
        assert EXPECT.search(path.read_text()), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_reports_its_problems_where_they_are(path: Path) -> None:
    """Every expected problem is reported at its line:col, with its hint, and nothing else."""
    text = path.read_text()
    expected = [(int(row), int(col), msg) for row, col, msg in EXPECT.findall(text)]
    error = _problems(path)
    got = [(p.loc.line if p.loc else 0, p.loc.col if p.loc else 0, p.message)
           for p in error.problems]
    assert len(got) == len(expected), str(error)
    for (line, col, msg), (gl, gc, gm) in zip(expected, got, strict=True):
        assert msg in gm, str(error)
        assert (gl, gc) == (line, col), f"{msg}: at {gl}:{gc}, expected {line}:{col}\n{error}"
    for hint in HINT.findall(text):
        assert any(hint in (p.hint or "") for p in error.problems), str(error)
    for p in error.problems:
        assert p.loc is not None and p.loc.file == str(path)
        assert p.source_line == text.splitlines()[p.loc.line - 1]


def test_error_text_shows_file_line_col_and_a_caret() -> None:
    """str(SpecError) reads `file:line:col: message (hint)` then the line and a caret."""
    path = FIXTURES / "invalid" / "unknown_step.yaml"
    text = str(_problems(path))
    assert f"{path}:10:9: state 'probed': unknown step 'mail.wiat' (did you mean 'wait.mail'?)" \
        in text
    assert "   10 |       - mail.wiat\n" in text
    assert text.rstrip().endswith("|         ^")


def test_full_fixture_builds_the_expected_spec() -> None:
    """Top-level fields, inputs, source, text and hash of a valid file."""
    path = FIXTURES / "valid" / "full.yaml"
    spec = _load("full.yaml")
    assert (spec.name, spec.version, spec.initial) == ("demo", 1, "new")
    assert spec.source == str(path)
    assert spec.text == path.read_text()
    assert spec.hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.renew is not None and spec.renew.fraction == pytest.approx(0.3333)
    assert list(spec.states) == ["new", "registered", "probed", "expired", "verified",
                                 "installed", "failed"]
    domain = spec.inputs["domain"]
    assert (domain.type, domain.required, domain.has_default) == ("hostname", True, False)
    assert domain.loc == Location(str(path), 7, 3)
    assert spec.inputs["email"].default == "webmaster@${domain}"
    assert spec.inputs["probe"].values == ("root", "hostmaster", "postmaster", "admin",
                                           "webmaster")
    assert spec.inputs["pass"].secret is True


def test_steps_get_ids_params_retry_and_timeout() -> None:
    """Shorthand steps get a derived id and no retry; the full form gets its policy."""
    new = _load("full.yaml").states["new"]
    short, full = new.steps
    assert (short.name, short.id, dict(short.params), short.retry) == (
        "key.generate", "key_generate", {}, DEFAULT_RETRY)
    assert (full.name, full.id, full.timeout) == ("shell", "mark1", 30.0)
    assert full.params == {"argv": ["touch", "${run.dir}/a"]}
    assert full.retry == RetryPolicy(max_attempts=5, initial_delay=1.0, max_delay=300.0,
                                     multiplier=2.0, jitter=0.2)
    assert new.on_error == "failed" and [t.to for t in new.next] == ["registered"]
    assert new.loc is not None and (new.loc.line, new.loc.col) == (14, 3)


def test_wait_sugar_appends_a_wait_step_and_guards_become_conditions() -> None:
    """`wait: {mail: ...}` is a wait.mail step with id 'wait'; `when` becomes a Condition."""
    probed = _load("full.yaml").states["probed"]
    (wait,) = probed.steps
    assert (wait.name, wait.id, dict(wait.params)) == (
        "wait.mail", "wait", {"to": "${probe}@${domain}"})
    assert probed.timeout == TimeoutSpec(172800.0, "expired")
    first, last = probed.next
    assert first.to == "verified"
    assert first.when == Condition("equals", ("${steps.wait.subject}", "ok"))
    assert first.when.loc is not None and first.when.loc.line == 35
    assert (last.to, last.when) == ("failed", None)


def test_loop_and_final_states() -> None:
    """`retry:` on a state is a LoopSpec; final true/failure map to success/failure."""
    states = _load("full.yaml").states
    assert states["expired"].loop == LoopSpec(3, "registered", "failed")
    assert states["expired"].steps == () and states["expired"].next == ()
    assert states["installed"].final == "success"
    assert states["failed"].final == "failure"
    assert states["new"].final is None


def test_all_condition_ops_nest_as_condition_objects() -> None:
    """all/any/not hold Condition objects; pair ops hold their two raw values."""
    spec = _load("conditions.yaml")
    when = spec.states["checked"].next[0].when
    assert when is not None and when.op == "all"
    ops = [c.op for c in when.args]
    assert ops == ["equals", "not_equals", "matches", "in", "not", "any"]
    assert when.args[3].args == ("${mode}", ["fast", "slow"])
    assert when.args[4].args == (Condition("falsy", ("${count}",)),)
    assert [c.op for c in when.args[5].args] == ["truthy", "truthy"]
    assert spec.inputs["mode"].type == "enum" and spec.inputs["mode"].values == ("fast", "slow")


def test_step_level_when_is_parsed() -> None:
    """A step's own `when:` becomes StepSpec.when."""
    step = _load("conditions.yaml").states["checked"].steps[1]
    assert step.when == Condition("truthy", ("${flag}",))


def test_anchors_merge_keys_and_file_and_until_waits() -> None:
    """Aliased and merged mappings load; wait.file and wait.until sugar get their params."""
    states = _load("anchors_and_waits.yaml").states
    one, two = states["first"].steps
    assert one.retry == RetryPolicy(max_attempts=4, initial_delay=2.0, max_delay=60.0)
    assert two.retry == RetryPolicy(max_attempts=9, initial_delay=2.0, max_delay=60.0)
    assert one.params == two.params == {"argv": ["echo", "hi"]}
    assert states["filed"].steps[0].name == "wait.file"
    assert states["filed"].timeout is not None and states["filed"].timeout.after == 5400.0
    until = states["later"].steps[0]
    assert (until.name, until.id, dict(until.params)) == (
        "wait.until", "wait", {"at": "2030-01-01T00:00:00Z"})


def test_a_step_whose_module_is_missing_is_known_but_unchecked() -> None:
    """Registry.get raising ImportError does not crash the loader nor reject the step."""
    step = _load("full.yaml").states["verified"].steps[0]
    assert step.name == "ca.sign"


def test_templated_params_are_not_held_against_the_schema() -> None:
    """`bits: "${n}"` is a string now but an int at run time: no schema error."""
    text = (FIXTURES / "valid" / "minimal.yaml").read_text()
    text = text.replace("only: {final: success}",
                        'only:\n    run: [{step: key.generate, with: {bits: "${n}"}}]\n'
                        "    next: done\n  done: {final: true}")
    text = text.replace("initial:", "inputs: {n: {type: int, default: 4096}}\ninitial:")
    spec = load_pipeline_text(text, "t.yaml", registry())
    assert spec.states["only"].steps[0].params == {"bits": "${n}"}


def test_same_text_gives_equal_specs_and_default_registry_works() -> None:
    """Loading is pure; with no registry the built-in one is used."""
    text = (FIXTURES / "valid" / "minimal.yaml").read_text()
    a = load_pipeline_text(text)
    b = load_pipeline_text(text, "<string>", registry())
    assert a == b and a.source == "<string>"


def test_hostile_yaml_reaches_the_loader_as_a_spec_error() -> None:
    """Safe-YAML failures surface unchanged through load_pipeline_text."""
    with pytest.raises(SpecError) as info:
        load_pipeline_text("a: 1\na: 2\n", "dup.yaml", registry())
    assert "dup.yaml:2:1: duplicate key 'a'" in str(info.value)


def test_top_level_must_be_a_mapping() -> None:
    """A list at the top is refused with a located message."""
    with pytest.raises(SpecError) as info:
        load_pipeline_text("- a\n- b\n", "list.yaml", registry())
    assert info.value.problems[0].loc == Location("list.yaml", 1, 1)
    assert "a pipeline file is a mapping" in info.value.problems[0].message


def test_non_utf8_file_is_a_spec_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported, not decoded wrongly."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"pipeline: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_pipeline(path, registry())
    assert "not UTF-8" in str(info.value)


def test_missing_file_is_a_certwright_error(tmp_path: Path) -> None:
    """A path that cannot be read names itself."""
    with pytest.raises(CertwrightError) as info:
        load_pipeline(tmp_path / "nope.yaml", registry())
    assert "nope.yaml" in str(info.value)


def test_resolve_pipeline_path_prefers_files_then_bundled(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing path wins; otherwise a bundled name; otherwise an error listing names."""
    local = tmp_path / "mine.yaml"
    local.write_text("x: 1\n")
    assert resolve_pipeline_path(str(local)) == local
    bundled = bundled_pipelines()
    assert "hello" in bundled and bundled["hello"].name == "hello.yaml"
    monkeypatch.chdir(tmp_path)
    assert resolve_pipeline_path("hello") == bundled["hello"]
    with pytest.raises(CertwrightError) as info:
        resolve_pipeline_path("no-such-pipeline")
    assert "no-such-pipeline" in str(info.value) and "hello" in str(info.value)


def test_bundled_pipelines_are_the_package_data_found_by_importlib_resources() -> None:
    """bundled_pipelines() names exactly the YAML files that importlib.resources finds in
    the certwright.pipelines package and its examples folder (where a wheel puts them),
    each with the same content, and the schema is beside them."""
    root = resources.files("certwright.pipelines")
    found = {entry.name.removesuffix(".yaml"): entry
             for folder in (root, root / "examples") for entry in folder.iterdir()
             if entry.name.endswith(".yaml")}
    bundled = bundled_pipelines()
    assert set(bundled) == set(found)
    assert {"cacert", "acme", "hello"} <= set(bundled)
    for name, path in bundled.items():
        assert path.read_bytes() == found[name].read_bytes()
    assert root.joinpath("schema.json").is_file()
