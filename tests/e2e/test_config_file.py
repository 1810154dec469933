"""The configuration file as a user meets it: defaults for `run`'s inputs (``--set`` over
the user's file over /etc's over the pipeline's own), `config show` with where each value
came from, a broken file reported with file:line:col and exit 2, and an old daemon.yaml
(its keys at the top) still read, with a warning."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from certwright.engine.daemon.config import load_daemon_config
from certwright.engine.model.configfile import ConfigError, configured_live_dir

_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]

ECHO = """
pipeline: echo
version: 1
inputs:
  a: {type: string, default: from-pipeline}
  b: {type: string, default: from-pipeline}
  c: {type: string, default: from-pipeline}
  d: {type: string, default: from-pipeline}
  e: {type: string, default: from-pipeline}
initial: new
states:
  new:
    run:
      - step: set
        id: summary
        with: {report: "a=${a} b=${b} c=${c} d=${d} e=${e}"}
    next: done
  done: {final: true}
"""

SYSTEM = """
defaults:
  a: system
  b: system
  c: system
  e: system-defaults
pipelines:
  echo:
    e: system-echo
"""

USER = """
defaults:
  a: user
pipelines:
  echo:
    b: user
live_dir: certificates
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Path]:
    """A system file, a user file (under XDG_CONFIG_HOME) and a pipeline, in tmp_path."""
    (tmp_path / "xdg" / "certwright").mkdir(parents=True)
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / "xdg" / "certwright" / "config.yaml").write_text(USER)
    (tmp_path / "echo.yaml").write_text(ECHO)
    return {"tmp": tmp_path, "system": tmp_path / "system.yaml",
            "user": tmp_path / "xdg" / "certwright" / "config.yaml",
            "pipeline": tmp_path / "echo.yaml"}


def _env(home: dict[str, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWRIGHT_")}
    env.update({"XDG_CONFIG_HOME": str(home["tmp"] / "xdg"),
                "CERTWRIGHT_SYSTEM_CONFIG": str(home["system"]),
                "CERTWRIGHT_STATE_DIR": str(home["tmp"] / "state"),
                "CERTWRIGHT_CACHE_DIR": str(home["tmp"] / "cache")})
    return env


def cli(home: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWRIGHT, *args], env=_env(home), cwd=home["tmp"], check=False,
                          capture_output=True, text=True, timeout=60)


def test_each_level_wins_over_the_next(home: dict[str, Path]):
    """--set over the user's file over /etc's over the pipeline's default, and within a
    file a pipeline's own section over `defaults`."""
    done = cli(home, "run", str(home["pipeline"]), "--set", "c=cli")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("a=user b=user c=cli d=from-pipeline e=system-echo")


def test_config_show_names_where_each_value_came_from(home: dict[str, Path]):
    shown = cli(home, "config", "show", str(home["pipeline"]), "--set", "c=cli", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    user, system = str(home["user"]), str(home["system"])
    assert doc["files"] == [system, user]
    assert doc["inputs"] == {
        "a": {"value": "user", "from": f"{user}:3"},
        "b": {"value": "user", "from": f"{user}:6"},
        "c": {"value": "cli", "from": "--set"},
        "d": {"value": "from-pipeline", "from": "default"},
        "e": {"value": "system-echo", "from": f"{system}:9"},
    }
    assert doc["values"]["live_dir"] == {
        "value": str(home["user"].parent / "certificates"), "from": f"{user}:7"}
    assert doc["values"]["defaults.c"] == {"value": "system", "from": f"{system}:5"}
    table = cli(home, "config", "show", str(home["pipeline"])).stdout
    assert any(line.split() == ["inputs.b", '"user"', f"{user}:6"]
               for line in table.splitlines()), table


def test_global_config_replaces_the_searched_files_before_or_after_the_subcommand(
        home: dict[str, Path]):
    only = home["tmp"] / "only.yaml"
    only.write_text("pipelines:\n  echo: {d: only}\n")
    for args in (["--config", str(only), "run", str(home["pipeline"])],
                 ["run", str(home["pipeline"]), "--config", str(only)]):
        done = cli(home, *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ("a=from-pipeline b=from-pipeline c=from-pipeline "
                                       "d=only e=from-pipeline")


def test_a_broken_file_is_reported_with_its_place_and_exit_2(home: dict[str, Path]):
    home["user"].write_text(textwrap.dedent("""\
        defaults:
          a: fine
        pipelines:
          echo:
            dd: typo
        daemon:
          renew_check: soon
        live_dri: /srv
        """))
    for args in (["run", str(home["pipeline"])], ["config", "show", str(home["pipeline"])]):
        done = cli(home, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        err = done.stderr
        assert f"{home['user']}:8:1: unknown key 'live_dri' (did you mean 'live_dir'?)" in err
        assert "    8 | live_dri: /srv" in err
    shown = cli(home, "config", "show")
    assert shown.returncode == 2
    home["user"].write_text("pipelines:\n  echo:\n    dd: typo\ndaemon:\n  renew_check: soon\n")
    run = cli(home, "run", str(home["pipeline"]))
    assert run.returncode == 2
    assert (f"{home['user']}:3:5: pipeline 'echo' has no input 'dd' (did you mean 'd'?)"
            in run.stderr), run.stderr
    daemon = cli(home, "daemon")
    assert daemon.returncode == 2
    assert f"{home['user']}:5:16: renew_check: 'soon' is not a duration" in daemon.stderr
    home["user"].write_text("defaults: {a: [1, {b: 2}]}\npipelines: [x]\n")
    bad = cli(home, "config", "show")
    assert bad.returncode == 2
    assert f"{home['user']}:1:15: defaults.a: expected a value or a list" in bad.stderr
    assert f"{home['user']}:2:12: pipelines: expected a mapping" in bad.stderr
    home["user"].write_text("defaults: {a: 1}\ndefaults: {a: 2}\n")
    dup = cli(home, "config", "show")
    assert dup.returncode == 2 and f"{home['user']}:2:1:" in dup.stderr, dup.stderr


def test_an_explicit_file_that_does_not_exist_is_an_error(home: dict[str, Path]):
    done = cli(home, "--config", str(home["tmp"] / "absent.yaml"), "config", "show")
    assert done.returncode == 2
    assert "absent.yaml:1:1: configuration file does not exist" in done.stderr


def test_the_old_daemon_yaml_form_is_read_with_a_warning(tmp_path: Path):
    (tmp_path / "md").mkdir()
    old = tmp_path / "daemon.yaml"
    old.write_text("maildirs: [md]\npipelines: pipes\nrenew_check: 5m\n")
    with capture_logs() as logs:
        cfg = load_daemon_config(old)
    assert cfg.maildirs == (tmp_path / "md",)
    assert cfg.pipelines == tmp_path / "pipes"
    assert cfg.renew_check == 300.0
    warned = [e for e in logs if e["event"] == "config_old_form"]
    assert warned and warned[0]["log_level"] == "warning" and warned[0]["file"] == str(old)
    new = tmp_path / "config.yaml"
    new.write_text("daemon:\n  maildirs: [md]\n  pipelines: pipes\n  renew_check: 5m\n")
    with capture_logs() as logs:
        fresh = load_daemon_config(new)
    assert fresh == replace(cfg, source=str(new), config_path=new)
    assert not [e for e in logs if e["event"] == "config_old_form"]
    old.write_text("maildirs: [md]\nrenew_chek: 5m\n")
    with pytest.raises(ConfigError, match=r"daemon.yaml:2:1: unknown key 'renew_chek'"):
        load_daemon_config(old)


def test_the_certificates_root_is_offered_to_its_resolver(home: dict[str, Path]):
    env = _env(home)
    found = configured_live_dir(env=env)
    assert found is not None
    assert found.value == home["user"].parent / "certificates"
    assert found.origin == f"{home['user']}:7"
    home["user"].write_text("defaults: {a: 1}\n")
    assert configured_live_dir(env=env) is None
