"""Shell completion scripts and the manual page, generated from the parser: each loads in
its real shell (bash, zsh, fish) and completes subcommands; the page renders without a
warning from groff or man and names every subcommand and the exit codes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]
BIN = str(Path(CERTWRIGHT[0]).parent)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(tmp)}


def _script(shell: str) -> str:
    done = subprocess.run([*CERTWRIGHT, "completion", shell], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_bash_loads_the_script_and_completes_subcommands(tmp_path: Path) -> None:
    """bash sources the script, registers `certwright`, and completing `certwright st`
    offers `status`; `certwright status --st` offers the global `--state-dir`."""
    path = tmp_path / "certwright.bash"
    path.write_text(_script("bash"))
    probe = f"""
source {path}
complete -p certwright
COMP_WORDS=(certwright st); COMP_CWORD=1; COMP_LINE="certwright st"; COMP_POINT=13
$(complete -p certwright | sed -E 's/.* -F ([^ ]+) .*/\\1/') certwright st certwright
echo "subcommands: ${{COMPREPLY[*]}}"
COMP_WORDS=(certwright status --st); COMP_CWORD=2
$(complete -p certwright | sed -E 's/.* -F ([^ ]+) .*/\\1/') certwright --st status
echo "options: ${{COMPREPLY[*]}}"
"""
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and "certwright" in done.stdout.splitlines()[0]
    assert "subcommands: status" in done.stdout
    assert "--state-dir" in done.stdout.split("options:")[1]


def test_bash_loads_it_by_process_substitution(tmp_path: Path) -> None:
    """The way the README says: `source <(certwright completion bash)`."""
    probe = "source <(certwright completion bash); complete -p certwright"
    done = subprocess.run(["bash", "-c", probe],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("certwright")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh (scripts/system-deps.sh)")
def test_zsh_loads_the_script(tmp_path: Path) -> None:
    """zsh parses the script (`zsh -n`) and, under compinit, defines its function and
    binds it to `certwright`."""
    script = _script("zsh")
    assert script.startswith("#compdef certwright")
    path = tmp_path / "_certwright"
    path.write_text(script)
    syntax = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert syntax.returncode == 0, syntax.stderr
    probe = (f"fpath=({tmp_path} $fpath); autoload -Uz compinit; compinit -u -d "
             f"{tmp_path}/zcompdump; print -r -- ${{_comps[certwright]}}")
    done = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "_certwright"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish (scripts/system-deps.sh)")
def test_fish_loads_the_script_and_completes_subcommands(tmp_path: Path) -> None:
    """fish parses the script (`fish -n`), and `complete -C 'certwright st'` offers
    `status` once it is sourced."""
    path = tmp_path / "certwright.fish"
    path.write_text(_script("fish"))
    syntax = subprocess.run(["fish", "-n", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert syntax.returncode == 0, syntax.stderr
    done = subprocess.run(["fish", "--no-config", "-c",
                           f"source {path}; complete -C 'certwright st'"],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert any(line.split("\t")[0] == "status" for line in done.stdout.splitlines()), \
        done.stdout


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([*CERTWRIGHT, "completion", "csh"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'csh'" in done.stderr


def test_the_man_page_renders_without_warnings(tmp_path: Path) -> None:
    """`certwright manpage` is roff that groff (all warnings on) and `man -l` render
    without a warning, naming every subcommand, the exit codes and the environment."""
    done = subprocess.run([*CERTWRIGHT, "manpage"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "certwright.1"
    page.write_text(done.stdout)
    assert done.stdout.startswith(".TH CERTWRIGHT")
    groff = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert groff.returncode == 0
    assert groff.stderr == ""
    man = subprocess.run(["man", "-l", "--warnings", str(page)], capture_output=True,
                         text=True, env={**os.environ, "MANPAGER": "cat", "COLUMNS": "80"},
                         timeout=60, check=False)
    assert man.returncode == 0, man.stderr
    assert man.stderr == ""
    text = "".join(c for i, c in enumerate(man.stdout)
                   if c != "\b" and (i + 1 >= len(man.stdout) or man.stdout[i + 1] != "\b"))
    for section in ("NAME", "SYNOPSIS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f"\n{section}\n" in text, section
    for command in ("run", "resume", "status", "history", "doctor", "completion",
                    "ca serve", "mail serve", "daemon", "certificates"):
        assert f"certwright {command}" in text, command
    assert "141" in text and "CERTWRIGHT_STATE_DIR" in text
