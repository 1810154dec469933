"""Typed inputs: conversion per type, defaults with references, required, unknown, redaction."""
from __future__ import annotations

import os
from typing import Any

import pytest

from certwright.engine.model.inputs import SECRET, coerce_inputs, redact_inputs
from certwright.engine.model.spec import InputSpec, PipelineSpec, StateSpec
from certwright.errors import InputError


def spec(*inputs: InputSpec) -> PipelineSpec:
    return PipelineSpec(name="t", version=1, initial="done",
                        states={"done": StateSpec(name="done", final="success")},
                        inputs={i.name: i for i in inputs})


def one(kind: str, value: Any, **kw: Any) -> Any:
    return coerce_inputs(spec(InputSpec(name="x", type=kind, **kw)), {"x": value})["x"]


@pytest.mark.parametrize(("kind", "given", "expected"), [
    ("string", "hello world", "hello world"),
    ("int", "42", 42),
    ("int", "-7", -7),
    ("int", 5, 5),
    ("bool", "yes", True),
    ("bool", "OFF", False),
    ("bool", "1", True),
    ("bool", "false", False),
    ("duration", "90s", 90.0),
    ("duration", "1h30m", 5400.0),
    ("duration", "2d", 172800.0),
    ("hostname", "WWW.Example.ORG", "www.example.org"),
    ("hostname", "localhost", "localhost"),
    ("hostname", "bücher.example", "xn--bcher-kva.example"),
    ("email", "postmaster@Example.org", "postmaster@example.org"),
    ("email", "first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
])
def test_accepted_values(kind: str, given: Any, expected: Any) -> None:
    """Each type turns a --set string into its typed value."""
    assert one(kind, given) == expected


def test_path_is_expanded_and_absolute_but_not_resolved(tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` is expanded and a relative path made absolute; `..` is kept as written."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert one("path", "~/certs") == os.path.join(str(tmp_path), "certs")
    monkeypatch.chdir(tmp_path)
    assert one("path", "a/b") == os.path.join(str(tmp_path), "a", "b")


def test_enum_accepts_only_its_values() -> None:
    """An enum value must be one of `values`; the error lists them."""
    assert one("enum", "root", values=("root", "admin")) == "root"
    with pytest.raises(InputError) as info:
        one("enum", "nobody", values=("root", "admin"))
    assert "expected one of root, admin" in str(info.value)


@pytest.mark.parametrize(("kind", "given", "rule"), [
    ("int", "4.5", "whole number"),
    ("int", "ten", "whole number"),
    ("bool", "maybe", "true/false"),
    ("duration", "soon", "not a duration"),
    ("duration", "-5", "not a duration"),
    ("hostname", "example.org.", "must not end with a dot"),
    ("hostname", "exa mple.org", "letters, digits or hyphens"),
    ("hostname", "under_score.org", "letters, digits or hyphens"),
    ("hostname", "-lead.example.org", "not starting or ending with a hyphen"),
    ("hostname", "a" * 64 + ".org", "label"),
    ("hostname", ("a" * 60 + ".") * 5 + "org", "at most 253"),
    ("hostname", "intranet", "at least two labels"),
    ("hostname", "a..b.org", "host name"),
    ("email", "Web Master <wm@example.org>", "cannot contain spaces"),
    ("email", "wm@a@example.org", "exactly one '@'"),
    ("email", "wm.@example.org", "before '@'"),
    ("email", "wm@example", "at least two labels"),
    ("email", "@example.org", "before '@'"),
    ("email", "wm@ex_ample.org", "the domain after '@'"),
    ("path", "", "cannot be empty"),
])
def test_rejected_values_name_input_value_and_rule(kind: str, given: str, rule: str) -> None:
    """InputError says which input, which value, and the rule broken."""
    with pytest.raises(InputError) as info:
        one(kind, given)
    text = str(info.value)
    assert "input 'x'" in text and repr(given) in text and rule in text


def test_defaults_render_references_in_dependency_order() -> None:
    """`email` defaults from `contact`, which defaults from `domain`: order of declaration
    does not matter."""
    s = spec(InputSpec(name="email", type="email", default="${contact}", has_default=True),
             InputSpec(name="contact", default="webmaster@${inputs.domain}", has_default=True),
             InputSpec(name="domain", type="hostname", required=True),
             InputSpec(name="wait", type="duration", default="2d", has_default=True))
    got = coerce_inputs(s, {"domain": "Example.ORG"})
    assert got == {"email": "webmaster@example.org", "contact": "webmaster@example.org",
                   "domain": "example.org", "wait": 172800.0}


def test_given_value_beats_default_and_is_never_rendered() -> None:
    """A --set value replaces the default and a `${...}` in it stays literal."""
    s = spec(InputSpec(name="note", default="from ${env.HOME}", has_default=True))
    assert coerce_inputs(s, {"note": "${env.HOME}"}) == {"note": "${env.HOME}"}


def test_optional_input_without_default_is_none() -> None:
    """Neither given nor defaulted nor required: None."""
    assert coerce_inputs(spec(InputSpec(name="pass", secret=True)), {}) == {"pass": None}


def test_default_cycle_is_an_error() -> None:
    """Defaults that refer to each other cannot be rendered."""
    s = spec(InputSpec(name="a", default="${b}", has_default=True),
             InputSpec(name="b", default="${a}", has_default=True))
    with pytest.raises(InputError) as info:
        coerce_inputs(s, {})
    assert "cycle" in str(info.value) and "a -> b -> a" in str(info.value)


def test_default_referring_to_an_input_without_value_is_an_error() -> None:
    """`${domain}` with domain optional and missing cannot be rendered."""
    s = spec(InputSpec(name="domain", type="hostname"),
             InputSpec(name="email", type="email", default="wm@${domain}", has_default=True))
    with pytest.raises(InputError) as info:
        coerce_inputs(s, {})
    assert "input 'email'" in str(info.value) and "${domain}" in str(info.value)


def test_rendered_default_is_checked_against_its_type() -> None:
    """A default rendered from a bad value still has to pass its own type's rule."""
    s = spec(InputSpec(name="name", default="a b", has_default=True),
             InputSpec(name="host", type="hostname", default="${name}.org", has_default=True))
    with pytest.raises(InputError) as info:
        coerce_inputs(s, {})
    assert "input 'host'" in str(info.value) and "'a b.org'" in str(info.value)


def test_missing_required_and_unknown_keys_are_reported_together() -> None:
    """Every problem is in the one InputError, with a did-you-mean for the typo."""
    s = spec(InputSpec(name="domain", type="hostname", required=True),
             InputSpec(name="email", type="email"))
    with pytest.raises(InputError) as info:
        coerce_inputs(s, {"emial": "a@b.org"})
    text = str(info.value)
    assert "unknown input 'emial' (did you mean 'email'?)" in text
    assert "missing required input 'domain' (hostname)" in text
    assert "--set domain=VALUE" in text


def test_redact_replaces_only_secret_values() -> None:
    """Secret inputs show as <secret>; others and None values are unchanged."""
    s = spec(InputSpec(name="pass", secret=True), InputSpec(name="user"),
             InputSpec(name="token", secret=True))
    values = {"pass": "hunter2", "user": "alice", "token": None}
    assert redact_inputs(s, values) == {"pass": SECRET, "user": "alice", "token": None}
    assert values["pass"] == "hunter2"  # the original is not modified
