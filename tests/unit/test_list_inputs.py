"""List inputs, wildcards and the one-name shortcut: ``--set domains=a,b``, ``-d NAME``.

A ``list`` input holds items of one type (``items: {type: ...}``); a ``wildcard`` is a host
name that may start with ``*.``; ``first_of`` makes an input the list's first item (and
giving it alone stands for a list of one); ``base_of`` is a name without its ``*.``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from certwright.engine.cli.commands import with_domains
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import bundled_pipelines, load_pipeline, load_pipeline_text
from certwright.engine.model.spec import InputSpec, PipelineSpec, StateSpec
from certwright.errors import InputError, SpecError


def spec(*inputs: InputSpec) -> PipelineSpec:
    return PipelineSpec(name="t", version=1, initial="done",
                        states={"done": StateSpec(name="done", final="success")},
                        inputs={i.name: i for i in inputs})


def names(item: str = "wildcard", **kw: Any) -> InputSpec:
    return InputSpec(name="domains", type="list", items=InputSpec(name="item", type=item), **kw)


def one(inp: InputSpec, value: Any) -> Any:
    return coerce_inputs(spec(inp), {inp.name: value})[inp.name]


def refused(inputs: tuple[InputSpec, ...], given: dict[str, Any]) -> str:
    with pytest.raises(InputError) as info:
        coerce_inputs(spec(*inputs), given)
    return str(info.value)


def test_a_comma_separated_value_becomes_a_list_of_typed_items() -> None:
    """`--set domains=a,b` splits on commas, trims spaces and converts each item."""
    assert one(names(), "Example.test, www.example.test ,*.Example.TEST") == [
        "example.test", "www.example.test", "*.example.test"]


def test_a_list_value_is_taken_item_by_item() -> None:
    """A value that is already a list (YAML, -d, a renewal's saved inputs) is converted too."""
    assert one(names("hostname"), ["A.example", "b.example"]) == ["a.example", "b.example"]


def test_a_repeated_name_is_kept_once_in_first_place() -> None:
    """Names equal after normalisation are one SAN: the later copies are dropped."""
    assert one(names(), "a.example,b.example,A.EXAMPLE") == ["a.example", "b.example"]


def test_a_bad_item_is_named_with_its_position() -> None:
    """The error names the input, the item's 1-based position, its value and the rule."""
    message = refused((names(),), {"domains": "a.example,-bad.example"})
    assert "input 'domains' (list of wildcard)" in message
    assert "item 2 ('-bad.example')" in message
    assert "label '-bad'" in message


def test_an_empty_item_is_refused() -> None:
    """`a,,b` or a trailing comma is a mistake, not an item to skip silently."""
    assert "item 2 is empty" in refused((names(),), {"domains": "a.example,,b.example"})
    assert "item 2 is empty" in refused((names(),), {"domains": "a.example,"})


def test_items_of_the_wrong_kind_are_refused() -> None:
    """A list holds text items: a mapping or a nested list is named as such."""
    assert "item 1" in refused((names(),), {"domains": [{"a": 1}]})
    assert "a list or comma-separated text" in refused((names(),), {"domains": 5})


def test_a_required_list_needs_at_least_one_item() -> None:
    """An empty `--set domains=` is no list of names."""
    message = refused((names(required=True),), {"domains": ""})
    assert "at least one item" in message


def test_a_wildcard_is_star_dot_and_a_host_name() -> None:
    """`*.name` (lower-cased, IDNA) and plain names pass; a `*` elsewhere does not."""
    wild = InputSpec(name="x", type="wildcard")
    assert one(wild, "*.Bücher.example") == "*.xn--bcher-kva.example"
    assert one(wild, "www.example.test") == "www.example.test"
    for bad, why in (("a.*.example", "leftmost label"), ("*", "leftmost label"),
                     ("*example.test", "leftmost label"), ("*.test", "two labels")):
        assert why in refused((wild,), {"x": bad}), bad


def test_a_wildcard_on_a_public_suffix_is_refused() -> None:
    """`*.co.uk` would cover every name under the suffix: certwright.domains says no."""
    message = refused((InputSpec(name="x", type="wildcard"),), {"x": "*.co.uk"})
    assert "public suffix co.uk" in message
    assert one(InputSpec(name="x", type="wildcard"), "*.example.co.uk") == "*.example.co.uk"


def shortcut() -> tuple[InputSpec, ...]:
    return (names(required=True),
            InputSpec(name="domain", type="wildcard", first_of="domains"),
            InputSpec(name="base", type="hostname", base_of="domain"),
            InputSpec(name="email", type="email", default="webmaster@${base}", has_default=True))


def test_the_shortcut_alone_stands_for_a_list_of_one() -> None:
    """`--set domain=X` gives domains [X]; defaults that refer to it still work."""
    values = coerce_inputs(spec(*shortcut()), {"domain": "*.Example.test"})
    assert values["domains"] == ["*.example.test"]
    assert values["domain"] == "*.example.test"
    assert values["base"] == "example.test"
    assert values["email"] == "webmaster@example.test"


def test_the_shortcut_is_the_first_name_of_the_list() -> None:
    """`--set domains=a,b` gives domain a."""
    values = coerce_inputs(spec(*shortcut()), {"domains": "b.example,a.example"})
    assert values["domain"] == "b.example"
    assert values["email"] == "webmaster@b.example"


def test_the_shortcut_and_the_list_must_agree() -> None:
    """Both given: the shortcut must be the list's first name (a renewal gives both)."""
    values = coerce_inputs(spec(*shortcut()), {"domains": ["a.example", "b.example"],
                                               "domain": "a.example"})
    assert values["domains"] == ["a.example", "b.example"]
    message = refused(shortcut(), {"domains": "a.example,b.example", "domain": "c.example"})
    assert "'domain' is the first of 'domains'" in message
    assert "c.example" in message


def test_neither_the_list_nor_its_shortcut_is_named_once() -> None:
    """A missing required list says how to give it, the shortcut included."""
    message = refused(shortcut(), {})
    assert "missing required input 'domains'" in message
    assert "--set domain=VALUE" in message
    assert message.count("missing") == 1


PIPE = """\
pipeline: t
version: 1
inputs:
{inputs}
initial: done
states:
  done: {{final: true}}
"""


def load(inputs: str) -> PipelineSpec:
    return load_pipeline_text(PIPE.format(inputs=inputs), "t.yaml")


def spec_errors(inputs: str) -> str:
    with pytest.raises(SpecError) as info:
        load(inputs)
    return str(info.value)


def test_the_loader_builds_a_list_input_with_its_item_type() -> None:
    """`type: list` with `items: {type: ...}`; a YAML list default is checked item by item."""
    got = load("  domains: {type: list, items: {type: hostname}, default: [a.example]}\n"
               "  domain: {type: hostname, first_of: domains}\n"
               "  base: {type: hostname, base_of: domain}")
    assert got.inputs["domains"].items is not None
    assert got.inputs["domains"].items.type == "hostname"
    assert got.inputs["domain"].first_of == "domains"
    assert got.inputs["base"].base_of == "domain"
    assert coerce_inputs(got, {})["domain"] == "a.example"


@pytest.mark.parametrize(("inputs", "where", "message"), [
    ("  d: {type: list}", "t.yaml:4:6", "a list input needs 'items'"),
    ("  d: {type: list, items: {type: hostnme}}", "t.yaml:4:33", "unknown item type 'hostnme'"),
    ("  d: {type: list, items: {type: list}}", "t.yaml:4:33", "a list cannot hold lists"),
    ("  d: {type: string, items: {type: hostname}}", "t.yaml:4:21",
     "'items' is only for type list"),
    ("  d: {type: list, items: {type: hostname}, default: [a.example, -x.example]}",
     "t.yaml:4:65", "item 2 ('-x.example')"),
    ("  d: {type: hostname, first_of: nothing}", "t.yaml:4:33", "no input 'nothing'"),
    ("  l: {type: string}\n  d: {type: hostname, first_of: l}", "t.yaml:5:33",
     "'l' is no list"),
    ("  l: {type: list, items: {type: email}}\n  d: {type: hostname, first_of: l}",
     "t.yaml:5:33", "holds email items, not hostname"),
    (("  l: {type: list, items: {type: hostname}}\n"
     "  d: {type: hostname, first_of: l, default: a.example}"), "t.yaml:5:36",
     "takes its value from 'l'"),
    (("  l: {type: list, items: {type: hostname}}\n"
     "  d: {type: hostname, first_of: l, required: true}"), "t.yaml:5:36",
     "cannot be required"),
    ("  d: {type: string, base_of: nothing}", "t.yaml:4:30", "no input 'nothing'"),
])
def test_broken_list_declarations_name_file_line_and_column(inputs: str, where: str,
                                                             message: str) -> None:
    """Every mistake in a list or shortcut declaration is reported where it was made."""
    text = spec_errors(inputs)
    assert f"{where}:" in text and message in text, text


def test_a_shortcut_whose_list_defaults_to_it_is_a_cycle() -> None:
    """`domains` defaulting to `[${domain}]` while `domain` is its first: refused at load."""
    text = spec_errors("  domains: {type: list, items: {type: hostname}, default: ['${domain}']}\n"
                       "  domain: {type: hostname, first_of: domains}")
    assert "cycle" in text


@pytest.mark.parametrize("name", ["cacert", "acme"])
def test_bundled_pipelines_take_domains_and_the_one_name_shortcut(name: str) -> None:
    """Both bundled pipelines take `domains` (wildcards allowed) and `domain` as its first."""
    got = load_pipeline(bundled_pipelines()[name])
    domains = got.inputs["domains"]
    assert domains.type == "list" and domains.items is not None
    assert domains.items.type == "wildcard"
    assert got.inputs["domain"].first_of == "domains"
    values = coerce_inputs(got, {"domains": "example.test,*.example.test",
                                 "cert_dir": "/nonexistent/certs"})
    assert values["domain"] == "example.test"
    wild = coerce_inputs(got, {"domain": "*.Example.test", "cert_dir": "/nonexistent/certs"})
    assert wild["domains"] == ["*.example.test"] and wild["base_domain"] == "example.test"
    address = "email" if name == "cacert" else "contact"
    assert wild[address] == "webmaster@example.test"  # a wildcard makes no mail address


NAMES = """\
pipeline: names
version: 1
inputs:
  domains: {type: list, items: {type: wildcard}, required: true}
  domain: {type: wildcard, first_of: domains}
initial: new
states:
  new:
    run:
      - step: set
        with: {report: "names ${domains} first ${domain}"}
    next: done
  done: {final: true}
"""


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`certwright run names.yaml ARGS` as a user runs it (a process of its own)."""
    path = tmp_path / "names.yaml"
    path.write_text(NAMES)
    return subprocess.run(
        [sys.executable, "-m", "certwright", "--state-dir", str(tmp_path / "state"), "run",
         str(path), *args], capture_output=True, text=True, timeout=60, check=False)


def test_run_takes_each_d_as_one_name_in_order(tmp_path: Path) -> None:
    """`-d a -d '*.b'` is `--set domains=a,*.b`, as certbot's `-d`; the first is `domain`."""
    done = _run_cli(tmp_path, "-d", "A.example", "-d", "*.b.example")
    assert done.returncode == 0, done.stderr
    assert "names ['a.example', '*.b.example'] first a.example" in done.stdout


def test_run_reports_a_bad_d_name_with_its_position(tmp_path: Path) -> None:
    """`-d good -d bad`: the second name is named, and no run starts (exit 2)."""
    done = _run_cli(tmp_path, "-d", "a.example", "-d", "*.co.uk")
    assert done.returncode == 2
    assert "item 2 ('*.co.uk')" in done.stderr and "public suffix" in done.stderr
    assert "started" not in done.stderr


def test_d_needs_a_pipeline_with_a_list_of_domains() -> None:
    """`-d` on a pipeline that declares no `domains` input is refused, naming it."""
    hello = load_pipeline(bundled_pipelines()["hello"])
    with pytest.raises(InputError, match="takes no 'domains' input"):
        with_domains(hello, {}, ["a.example"])


def test_d_and_set_domains_are_not_given_together() -> None:
    """`-d` and `--set domains=` at once would leave one of them ignored: refused."""
    names = load_pipeline_text(NAMES, "names.yaml")
    with pytest.raises(InputError, match="either with -d"):
        with_domains(names, {"domains": "b.example"}, ["a.example"])
    assert with_domains(names, {"x": "1"}, ["a", "b"]) == {"x": "1", "domains": ["a", "b"]}
    assert with_domains(names, {"x": "1"}, []) == {"x": "1"}
