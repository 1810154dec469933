"""The CLI's manners as a user meets them: ``--version``, global options after the
subcommand, a closed pipe on stdout, a port in use, inputs checked before any service
starts, the exit code of a store a daemon serves, and ``--help``, ``--version`` and
``status`` answered without importing the runner, the CA or the log library.

Every expected failure gives its message and its documented exit code, never a traceback.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.state.locks import daemon_lock

_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]
EXIT_PIPE = 141  # 128 + SIGPIPE, as a coreutils command cut off by `head` reports

REPORT = """
pipeline: talker
version: 1
initial: new
states:
  new:
    run:
      - step: set
        id: summary
        with: {report: "LINES"}
    next: done
  done: {final: true}
""".replace("LINES", "\\n".join(f"line {i}" for i in range(2000)))


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTWRIGHT_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")  # no user's config file
    env["CERTWRIGHT_LIVE_DIR"] = str(tmp / "live")
    env["CERTWRIGHT_CACHE_DIR"] = str(tmp / "cache")
    return env


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWRIGHT, *args], env=_env(tmp), cwd=tmp, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def talker(tmp_path: Path) -> Path:
    path = tmp_path / "talker.yaml"
    path.write_text(REPORT)
    return path


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    """`--version` prints the package's version from its metadata and exits 0."""
    done = cli(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"certwright {importlib.metadata.version('certwright')}"


def test_global_options_are_accepted_after_the_subcommand(tmp_path: Path,
                                                          talker: Path) -> None:
    """`--state-dir`, `--log-level` and `--log-json` after the subcommand act as before
    it; a value given before the subcommand is not overwritten by one after it."""
    first, second = tmp_path / "first", tmp_path / "second"
    done = cli(tmp_path, "run", str(talker), "--run-id", "r1", "--state-dir", str(first),
               "--log-level", "warning", "--log-json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    shown = cli(tmp_path, "status", "--all", "--json", "--state-dir", str(first))
    assert shown.returncode == 0, shown.stderr
    assert [r["run"] for r in json.loads(shown.stdout)["runs"]] == ["r1"]
    before_wins = cli(tmp_path, "--state-dir", str(first), "status", "--all", "--json",
                      "--state-dir", str(second))
    assert before_wins.returncode == 0, before_wins.stderr
    assert [r["run"] for r in json.loads(before_wins.stdout)["runs"]] == ["r1"]


def _closed_pipe() -> int:
    """A pipe's write end whose read end is closed: every write to it fails (EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("command", [["history", "--json", "r1"], ["history", "r1"],
                                     ["status", "--all"], ["status", "--all", "--json"],
                                     ["run", "TALKER", "--run-id", "r2"]])
def test_a_closed_stdout_ends_quietly_as_coreutils_do(tmp_path: Path, talker: Path,
                                                      command: list[str]) -> None:
    """Output into a pipe nobody reads any more: exit 141 (128 + SIGPIPE, what a shell
    shows for coreutils), nothing on stderr about it, no traceback, no "Exception
    ignored"; a run still finishes (its journal says succeeded)."""
    state = tmp_path / "state"
    assert cli(tmp_path, "--state-dir", str(state), "run", str(talker),
               "--run-id", "r1").returncode == 0
    argv = [str(talker) if a == "TALKER" else a for a in command]
    write = _closed_pipe()
    try:
        done = subprocess.run([*CERTWRIGHT, "--state-dir", str(state), *argv],
                              env=_env(tmp_path), cwd=tmp_path, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert done.returncode == EXIT_PIPE, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    assert "BrokenPipe" not in done.stderr
    if command[0] == "run":
        shown = cli(tmp_path, "--state-dir", str(state), "status", "r2", "--json")
        assert json.loads(shown.stdout)["runs"][0]["status"] == "succeeded"


def test_history_into_head_never_shows_a_traceback(tmp_path: Path, talker: Path) -> None:
    """`history --json RUN | head -1`, five tries out of five: no traceback, no
    "Exception ignored", and the first line arrives."""
    state = tmp_path / "state"
    assert cli(tmp_path, "--state-dir", str(state), "run", str(talker),
               "--run-id", "r1").returncode == 0
    command = " ".join([*CERTWRIGHT, "--state-dir", str(state), "history", "--json", "r1"])
    for _ in range(5):
        done = subprocess.run(["bash", "-c", f"{command} | head -1"], env=_env(tmp_path),
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.stdout == "[\n"
        assert done.stderr == "", done.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_ca_serve_on_a_port_in_use_says_so(tmp_path: Path, busy_port: int) -> None:
    """`ca serve` on a port another process holds: exit 2, the port named, no traceback."""
    done = cli(tmp_path, "ca", "serve", "--dir", str(tmp_path / "ca"),
               "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == 2, done.stderr
    assert f"port {busy_port} on 127.0.0.1 is in use" in done.stderr
    assert "--listen" in done.stderr
    assert "Traceback" not in done.stderr


def test_mail_serve_on_a_port_in_use_says_so(tmp_path: Path, busy_port: int) -> None:
    """`mail serve` on a port another process holds: exit 2, the port named, no
    traceback."""
    done = cli(tmp_path, "mail", "serve", "--listen", f"127.0.0.1:{busy_port}",
               "--domain", "example.test", "--maildir", str(tmp_path / "mail"))
    assert done.returncode == 2, done.stderr
    assert f"port {busy_port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_input_is_reported_before_any_service_starts(tmp_path: Path) -> None:
    """`run cacert` without a domain: exit 2 naming the input, and the embedded CA and mail
    server were never started (no ports recorded, nothing listening announced)."""
    state = tmp_path / "state"
    done = cli(tmp_path, "--state-dir", str(state), "run", "cacert")
    assert done.returncode == 2, done.stderr
    assert "domain" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (state / "embedded").exists()
    assert "listening" not in done.stderr


def test_a_store_a_daemon_serves_gives_exit_4(tmp_path: Path, talker: Path) -> None:
    """`run` and `resume` while a daemon holds the store: exit 4 (locked), the daemon's pid
    named and what to do instead."""
    state = tmp_path / "state"
    hello = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "hello.yaml"
    assert cli(tmp_path, "--state-dir", str(state), "run", str(hello), "--run-id", "r1",
               "--no-wait").returncode == 3  # parked at its wait for a file
    with daemon_lock(state):
        for args in (["run", str(talker)], ["resume", "r1"]):
            done = cli(tmp_path, "--state-dir", str(state), *args)
            assert done.returncode == 4, (args, done.stderr)
            assert f"pid {os.getpid()}" in done.stderr
            assert "--no-wait" in done.stderr
            assert "Traceback" not in done.stderr


HEAVY = ("asyncio", "jsonschema", "structlog", "rich", "yaml", "cryptography", "fastapi",
         "uvicorn", "aiosmtpd", "transitions", "certwright.engine.run.runner",
         "certwright.engine.cli.commands")
PROBE = """
import contextlib, io, json, sys
from certwright.engine.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["status"], ["status", "--json"],
                                  ["status", "--help"]])
def test_quick_commands_import_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    """`--help`, `--version` and `status` (on an empty state dir) import none of the
    runner, the CA, the schema checker, the YAML parser or the log library: what keeps
    them within their start-up budget (measured in bench/cli_start.py)."""
    done = subprocess.run([sys.executable, "-c", PROBE, "--state-dir", str(tmp_path / "s"),
                           *argv], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"code": 0, "heavy": []}


def test_every_subcommand_is_in_help_and_has_its_own(tmp_path: Path) -> None:
    """Every registered subcommand is listed by `--help`, and `SUB --help` works."""
    from certwright.engine.cli.main import build_parser
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    names = sorted(sub.choices)  # type: ignore[arg-type]
    assert {"run", "status", "history", "doctor", "completion", "manpage",
            "daemon", "ca", "mail", "config", "certificates"} <= set(names)
    top = cli(tmp_path, "--help").stdout
    for name in names:
        assert f"\n    {name} " in top or f"\n    {name}\n" in top, name
        own = cli(tmp_path, name, "--help")
        assert own.returncode == 0, (name, own.stderr)
        assert own.stdout.startswith(f"usage: certwright {name}"), name


def test_daemon_help_lists_every_key_of_the_configuration_files_daemon_section(
        tmp_path: Path) -> None:
    from certwright.engine.model.configfile import DAEMON_KEYS
    out = cli(tmp_path, "daemon", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps the epilog
    missing = [k for k in DAEMON_KEYS if k not in text.split("keys:", 1)[-1]]
    assert "keys:" in text and not missing, missing
    assert "contrib/config.yaml" in text
