"""Step parameter checks: the compiled fast path never accepts what jsonschema refuses, and
errors still list every problem with its path."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from certwright.engine.model.params import check_params
from certwright.engine.plugins.registry import Registry
from certwright.errors import PermanentError

REGISTRY = Registry()
NAMES = sorted(REGISTRY.names()) if hasattr(REGISTRY, "names") else []

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["ec", "rsa", "", "x" * 300,
                                                           "http://127.0.0.1:1/", "1s"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _params_for(schema, draw_value):
    return dict.fromkeys(schema.get("properties", {}), draw_value)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_fast_path_agrees_with_jsonschema(name, data):
    schema = REGISTRY.get(name).params_schema
    keys = [*schema.get("properties", {}), "unknown_key"]
    params = data.draw(st.dictionaries(st.sampled_from(keys), values, max_size=len(keys)))
    reference = list(Draft202012Validator(dict(schema)).iter_errors(params))
    try:
        check_params(name, schema, params)
        accepted = True
    except PermanentError:
        accepted = False
    assert accepted == (not reference), (name, params, [e.message for e in reference])


def test_every_builtin_step_is_covered():
    assert {"wait.mail", "install.files", "ca.sign", "key.generate"} <= set(NAMES)


def test_an_error_lists_every_problem_with_its_path():
    schema = {"type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}
    with pytest.raises(PermanentError) as err:
        check_params("demo", schema, {"a": "x", "b": 3})
    text = str(err.value)
    assert "step 'demo': bad parameters" in text
    assert "a: 'x' is not of type 'integer'" in text and "b: 3 is not of type 'string'" in text


def test_a_format_only_fastjsonschema_asserts_is_not_refused():
    schema = {"type": "object", "properties": {"ca": {"type": "string", "format": "uri"}}}
    check_params("demo", schema, {"ca": "embedded"})  # jsonschema: format is an annotation
