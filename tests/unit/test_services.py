"""The engine's service resolution: it asks providers, knows none (no CA involved here)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.providers import Provision, load_providers
from certwright.engine.run.services import start_services, start_services_for
from certwright.engine.testing import load_text
from certwright.errors import CertwrightError

PIPELINE = """
pipeline: served
version: 1
inputs:
  bell: {type: string, default: local}
  name: {type: string, required: true}
initial: a
states:
  a: {run: [{step: test.record, id: one}], next: done}
  done: {final: true}
"""


class Bell:
    """A provider for runs whose ``bell`` is ``local``: 'starts' a bell, points runs at it."""

    name = "bell"

    def __init__(self, service: str = "bell") -> None:
        self.service = service
        self.asked: list[list[dict[str, Any]]] = []
        self.stopped = 0

    def provide(self, spec: PipelineSpec, givens: Sequence[Mapping[str, Any]],
                state_dir: Path, stack: ExitStack) -> Provision | None:
        self.asked.append([dict(g) for g in givens])
        if givens[0].get("bell", spec.inputs["bell"].default) != "local":
            return None
        stack.callback(self._stop)
        return Provision(services={self.service: "ringing"},
                         inputs=[{**g, "bell": f"bell://{state_dir.name}"} for g in givens])

    def _stop(self) -> None:
        self.stopped += 1


def test_a_provider_that_applies_starts_its_services_and_rewrites_the_inputs(tmp_path):
    """Its services reach the steps, its addresses replace the inputs, the stack stops it."""
    bell = Bell()
    with ExitStack() as stack:
        services, givens = start_services_for(load_text(PIPELINE), [{"name": "a"}, {"name": "b"}],
                                              tmp_path, stack, providers=[bell])
        assert bell.stopped == 0
    assert services == {"bell": "ringing"}
    assert givens == [{"name": "a", "bell": f"bell://{tmp_path.name}"},
                      {"name": "b", "bell": f"bell://{tmp_path.name}"}]
    assert bell.asked == [[{"name": "a"}, {"name": "b"}]]
    assert bell.stopped == 1


def test_a_provider_that_does_not_apply_leaves_the_inputs_as_given(tmp_path):
    """None from every provider: no services, the inputs unchanged."""
    given = {"name": "a", "bell": "remote"}
    with ExitStack() as stack:
        services, values = start_services(load_text(PIPELINE), given, tmp_path, stack,
                                          providers=[Bell()])
    assert (services, values) == ({}, given)


def test_a_later_provider_sees_the_earlier_ones_substitutions(tmp_path):
    """Providers are asked in turn, each with the inputs as the previous one left them."""
    first, second = Bell("first"), Bell("second")
    with ExitStack() as stack:
        services, values = start_services(load_text(PIPELINE), {"name": "a"}, tmp_path, stack,
                                          providers=[first, second])
    assert services == {"first": "ringing"}  # the second saw bell://..., not local
    assert second.asked == [[{"name": "a", "bell": f"bell://{tmp_path.name}"}]]
    assert values["bell"] == f"bell://{tmp_path.name}"


def test_two_providers_offering_one_service_is_an_error(tmp_path):
    """A service name is never silently replaced by another provider's."""
    class Again(Bell):
        name = "again"

        def provide(self, spec: PipelineSpec, givens: Sequence[Mapping[str, Any]],
                    state_dir: Path, stack: ExitStack) -> Provision | None:
            return Provision(services={"bell": "other"}, inputs=[dict(g) for g in givens])
    with ExitStack() as stack, pytest.raises(CertwrightError, match="'bell' and 'again' both"):
        start_services(load_text(PIPELINE), {"name": "a"}, tmp_path, stack,
                       providers=[Bell(), Again()])


def test_no_runs_ask_no_provider(tmp_path):
    bell = Bell()
    with ExitStack() as stack:
        assert start_services_for(load_text(PIPELINE), [], tmp_path, stack,
                                  providers=[bell]) == ({}, [])
    assert bell.asked == []


def _provider_plugin(tmp_path: Path, name: str, module: str) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(textwrap.dedent("""
        from certwright.engine.plugins.providers import Provision
        class Bell:
            name = "bell"
            def provide(self, spec, givens, state_dir, stack):
                if "bell" not in spec.inputs:
                    return None
                return Provision(services={"bell": "plugin"},
                                 inputs=[{**g, "bell": "bell://plugin"} for g in givens])
    """))
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[certwright.providers]\n{name} = {module}:Bell\n")
    return site


def test_a_provider_registered_under_the_entry_point_group_is_asked(tmp_path, monkeypatch):
    """A third-party provider is found like a step plugin; the built-in CA's is there too."""
    monkeypatch.syspath_prepend(str(_provider_plugin(tmp_path, "bell", "cw_provider_bell")))
    assert [p.name for p in load_providers()] == ["embedded", "bell"]
    with ExitStack() as stack:
        services, values = start_services(load_text(PIPELINE), {"name": "a"}, tmp_path, stack)
    assert services == {"bell": "plugin"}
    assert values == {"name": "a", "bell": "bell://plugin"}
    sys.modules.pop("cw_provider_bell", None)


def test_a_provider_plugin_cannot_take_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_provider_plugin(tmp_path, "embedded", "cw_provider_evil")))
    with pytest.raises(CertwrightError, match="wants the name 'embedded', which is taken"):
        load_providers()


def test_asking_the_builtin_provider_about_a_pipeline_without_a_ca_imports_no_ca(tmp_path):
    """The built-in CA's provider is cheap when it does not apply: the CA is not imported."""
    code = textwrap.dedent(f"""
        import json, sys
        from contextlib import ExitStack
        from certwright.engine.run.services import start_services
        from certwright.engine.testing import load_text
        with ExitStack() as stack:
            out = start_services(load_text({PIPELINE!r}), {{"name": "a"}}, {str(tmp_path)!r},
                                 stack)
        assert out == ({{}}, {{"name": "a"}}), out
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("certwright.ca"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == ["certwright.ca", "certwright.ca.embedded_paths",
                                      "certwright.ca.provider"]
