"""The step registry: built-in steps all load; third-party steps come from entry points."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from certwright.errors import CertwrightError
from certwright.engine.plugins.step import Step
from certwright.engine.plugins.registry import BUILTIN, Registry


def test_every_builtin_step_loads_and_keeps_the_interface():
    reg = Registry(plugins=False)
    for name in BUILTIN:
        step = reg.get(name)
        assert isinstance(step, Step), name
        assert step.name == name
        assert step.params_schema.get("type") == "object", name
        assert isinstance(step.idempotent, bool)
        assert isinstance(step.secret_outputs, frozenset)


def _plugin(tmp_path: Path, step_name: str, module: str) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(textwrap.dedent(f"""
        from certwright.engine.plugins.step import BaseStep, Done
        class Hello(BaseStep):
            name = "{step_name}"
            description = "say hello"
            idempotent = True
            params_schema = {{"type": "object"}}
            def run(self, ctx):
                return Done({{"said": "hello"}})
    """))
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[certwright.steps]\n{step_name} = {module}:Hello\n")
    return site


def test_third_party_steps_load_from_the_entry_point_group(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_plugin(tmp_path, "hello.say", "cw_plugin_hello")))
    reg = Registry()
    assert "hello.say" in reg.names()
    assert reg.get("hello.say").run(None).outputs == {"said": "hello"}  # type: ignore[arg-type]
    sys.modules.pop("cw_plugin_hello", None)


def test_a_plugin_cannot_take_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_plugin(tmp_path, "ca.sign", "cw_plugin_evil")))
    with pytest.raises(CertwrightError, match="wants the name 'ca.sign', which is taken"):
        Registry()
