"""The step registry: built-in steps all load; every step comes from an entry point."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from certwright.engine.plugins.registry import Registry, builtin_steps
from certwright.engine.plugins.step import Step
from certwright.errors import CertwrightError

# The built-in step names are part of the pipeline language: pyproject.toml must list them all.
BUILTIN_NAMES = [
    "acme.account", "acme.challenge", "acme.download", "acme.finalize", "acme.order",
    "assert", "ca.activate", "ca.add_domain", "ca.join", "ca.probe", "ca.sign", "ca.verify",
    "csr.generate", "install.beside", "install.check", "install.files", "install.reload",
    "key.generate", "noop", "notify.check", "set", "shell", "wait.file", "wait.mail",
    "wait.mails", "wait.until",
]


def test_every_builtin_step_loads_and_keeps_the_interface():
    reg = Registry(plugins=False)
    for name in builtin_steps():
        step = reg.get(name)
        assert isinstance(step, Step), name
        assert step.name == name
        assert step.params_schema.get("type") == "object", name
        assert isinstance(step.idempotent, bool)
        assert isinstance(step.secret_outputs, frozenset)


def test_the_builtin_steps_are_the_packages_own_entry_points():
    """Every built-in step is registered by the certwright distribution, none is missing."""
    assert sorted(builtin_steps()) == BUILTIN_NAMES
    assert Registry(plugins=False).names() == BUILTIN_NAMES
    assert all(v.startswith("certwright.steps.") for v in builtin_steps().values())


def _imported_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys\n" + textwrap.dedent(code) +
         "\nprint(json.dumps(sorted(m for m in sys.modules"
         " if m.startswith(('certwright.steps', 'certwright.ca', 'acme')))))"],
        capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_the_registry_imports_no_step_until_one_is_used():
    """Discovering the steps imports none of them (nor the CA); validating a pipeline imports
    only the steps it names (cacert: no ACME)."""
    assert _imported_after("""
        from certwright.engine.plugins.registry import Registry
        reg = Registry()
        assert "ca.sign" in reg and len(reg.names()) >= 24
    """) == []
    imported = _imported_after("""
        from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
        load_pipeline(resolve_pipeline_path("cacert"))
    """)
    assert "certwright.steps.ca" in imported
    assert not [m for m in imported if m.startswith(("certwright.steps.acme", "acme"))]


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
    with pytest.raises(CertwrightError, match=r"wants the name 'ca\.sign', which is taken"):
        Registry()


def test_discovery_is_done_once_per_process_and_path(tmp_path, monkeypatch):
    """The entry points are scanned once; a new folder on sys.path is scanned again."""
    from certwright.engine.plugins._entrypoints import discover
    first = discover("certwright.steps")
    assert discover("certwright.steps") is first
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover("certwright.steps") is not first
    assert discover("certwright.steps") == first
