"""Where the configuration files are: the user's, the system's, or the one named.

Kept apart from :mod:`engine.model.configfile` (which imports the YAML parser) so that a
command can ask whether any file is there without paying for the parser (``status``
looks for a ``store:`` only when one is). ``configfile`` re-exports these names.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CONFIG_ENV = "CERTWRIGHT_CONFIG"
SYSTEM_ENV = "CERTWRIGHT_SYSTEM_CONFIG"
SYSTEM_PATH = Path("/etc/certwright/config.yaml")


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/certwright/config.yaml`` (default ``~/.config/...``)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "certwright" / "config.yaml"


def system_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``/etc/certwright/config.yaml``, or ``$CERTWRIGHT_SYSTEM_CONFIG`` (tests use it)."""
    env = os.environ if env is None else env
    return Path(env[SYSTEM_ENV]) if env.get(SYSTEM_ENV) else SYSTEM_PATH


def config_paths(explicit: Path | None = None, env: Mapping[str, str] | None = None
                 ) -> list[Path]:
    """The files to read, lowest precedence first: ``explicit`` (or ``$CERTWRIGHT_CONFIG``)
    alone, else the system's and the user's."""
    env = os.environ if env is None else env
    if explicit is None and env.get(CONFIG_ENV):
        explicit = Path(env[CONFIG_ENV])
    if explicit is not None:
        return [Path(explicit).expanduser()]
    return [system_config_path(env), user_config_path(env)]
