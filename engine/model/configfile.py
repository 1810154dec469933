"""The configuration file: defaults for runs' inputs, the certificates root, the daemon.

Two files are read, the user's over the system's, and both over a pipeline's own defaults
(``--set`` and command-line options win over all of them)::

    $XDG_CONFIG_HOME/certwright/config.yaml     (default ~/.config/certwright/config.yaml)
    /etc/certwright/config.yaml                 (env CERTWRIGHT_SYSTEM_CONFIG elsewhere)

``--config FILE`` (or env ``CERTWRIGHT_CONFIG``) names one file instead of both. A file::

    live_dir: /srv/certificates        # the certificates root (relative: to the file)
    store: postgresql://certwright@db.example.org/certwright   # (default: SQLite)
    host: web1                         # this host's name for runs and daemons (default:
                                       # env CERTWRIGHT_HOST, else the machine's name)
    defaults:                          # inputs for every pipeline that declares them
      email: hostmaster@example.org
    pipelines:                         # inputs for one pipeline, over `defaults`
      cacert: {ca: "https://ca.example.net", reload: "apachectl -k graceful"}
      acme: {contact: admin@example.org}
    daemon:                            # the daemon's settings (see engine.daemon.config)
      maildirs: [/var/mail/certwright]

An old daemon.yaml, with the daemon's keys at the top, is still read as the ``daemon``
section (:attr:`ConfigFile.legacy`; the daemon warns). Every problem is reported at once,
each with ``file:line:col`` and the offending line, as pipeline files are
(:class:`ConfigError`, an :class:`InputError`: exit 2). Files are parsed by the safe loader
(:func:`engine.model.yamlsafe.load_yaml`): duplicate keys, foreign tags and alias bombs
are refused. Reading is pure: the same files give an equal :class:`Config`.
"""
from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certwright.engine.model.configkeys import DAEMON_KEYS, TOP_KEYS
from certwright.engine.model.configpaths import config_paths
from certwright.engine.model.yamlsafe import MAX_BYTES, YNode, load_yaml, problem
from certwright.errors import InputError, Location, Problem, SpecError


class ConfigError(InputError):
    """A configuration file is unreadable or invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration file:\n"
                         + "\n".join(p.render() for p in self.problems))


@dataclass(frozen=True)
class Setting:
    """A value and where it came from: ``file:line``, ``--set``, ``option`` or ``default``."""

    value: Any
    origin: str


@dataclass(frozen=True)
class ConfigFile:
    """One file, checked. ``root`` is its top mapping (None: empty file)."""

    path: Path
    text: str
    root: YNode | None
    legacy: bool = False  # an old daemon.yaml: the daemon's keys at the top

    def section(self, name: str) -> YNode | None:
        """The mapping under ``name`` (for a legacy file, ``daemon`` is the whole file)."""
        if self.root is None:
            return None
        if self.legacy:
            return self.root if name == "daemon" else None
        return self.root.get(name)

    def where(self, node: YNode) -> str:
        return f"{self.path}:{node.loc.line}"

    def problem(self, node: YNode, message: str, hint: str | None = None) -> Problem:
        return problem(self.text, node.loc, message, hint)


def _close(word: str, options: Collection[str]) -> str | None:
    found = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {found[0]!r}?" if found else None


def _value_problems(cf: ConfigFile, node: YNode, what: str) -> list[Problem]:
    """An input value must be a scalar or a list of scalars."""
    if node.is_scalar or (node.is_seq and all(i.is_scalar for i in node.items)):
        return []
    return [cf.problem(node, f"{what}: expected a value or a list of values, not a "
                             f"{'mapping' if node.is_map else 'nested list'}")]


def _inputs_problems(cf: ConfigFile, node: YNode, what: str) -> list[Problem]:
    if not node.is_map:
        return [cf.problem(node, f"{what}: expected a mapping of input names to values")]
    out: list[Problem] = []
    for key, knode, vnode in node.entries():
        if not isinstance(key, str):
            out.append(cf.problem(knode, f"{what}: input names are strings, not {key!r}"))
            continue
        out.extend(_value_problems(cf, vnode, f"{what}.{key}"))
    return out


def _check(cf: ConfigFile) -> list[Problem]:
    root = cf.root
    if root is None:
        return []
    if not root.is_map:
        return [cf.problem(root, "expected a mapping at the top",
                           f"known keys: {', '.join(TOP_KEYS)}")]
    if cf.legacy:
        return []  # the daemon checks its own keys
    out: list[Problem] = []
    for key, knode, vnode in root.entries():
        if key not in TOP_KEYS:
            out.append(cf.problem(knode, f"unknown key {key!r}",
                                  _close(str(key), TOP_KEYS) or f"known: {', '.join(TOP_KEYS)}"))
        elif key == "live_dir":
            if not vnode.is_scalar or not isinstance(vnode.value, str) or not vnode.value.strip():
                out.append(cf.problem(vnode, "live_dir: expected a folder path"))
        elif key == "store":
            if not vnode.is_scalar or not isinstance(vnode.value, str) or not vnode.value.strip():
                out.append(cf.problem(vnode, "store: expected a store URL",
                                      "postgresql://USER@HOST/DATABASE or sqlite:///PATH"))
        elif key == "host":  # empty: not set (CERTWRIGHT_HOST, else the machine's name)
            if not vnode.is_scalar or not isinstance(vnode.value, str | None):
                out.append(cf.problem(vnode, "host: expected a host name", "e.g. web1"))
        elif key == "defaults":
            out.extend(_inputs_problems(cf, vnode, "defaults"))
        elif key == "pipelines":
            if not vnode.is_map:
                out.append(cf.problem(vnode, "pipelines: expected a mapping of pipeline "
                                             "names to their inputs"))
                continue
            for name, _, pnode in vnode.entries():
                out.extend(_inputs_problems(cf, pnode, f"pipelines.{name}"))
        elif key == "daemon":
            if not vnode.is_map:
                out.append(cf.problem(vnode, "daemon: expected a mapping of the daemon's "
                                             "settings"))
                continue
            for dkey, dknode, _ in vnode.entries():
                if dkey not in DAEMON_KEYS:
                    out.append(cf.problem(dknode, f"daemon: unknown key {dkey!r}",
                                          _close(str(dkey), DAEMON_KEYS)
                                          or f"known: {', '.join(DAEMON_KEYS)}"))
    return out


def _is_legacy(root: YNode | None) -> bool:
    """An old daemon.yaml: a mapping of daemon keys only (``pipelines`` then is a folder)."""
    if root is None or not root.is_map or not root.pairs:
        return False
    keys = [k for k, _, _ in root.entries()]
    if not all(k in DAEMON_KEYS for k in keys):
        return False
    pipelines = root.get("pipelines")
    return any(k not in TOP_KEYS for k in keys) or (
        pipelines is not None and pipelines.is_scalar)


def read_config_file(path: Path) -> ConfigFile | None:
    """Read and check one file; None when it does not exist. Raises :class:`ConfigError`."""
    path = Path(path)
    where = Location(str(path), 1, 1)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError([Problem(where, f"file too large: {size} bytes (the limit is "
                                              f"{MAX_BYTES})")])
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError([Problem(where, f"cannot read it: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(where, f"not UTF-8 text (byte {exc.start}: "
                                          f"{exc.reason})")]) from None
    try:
        root = load_yaml(text, str(path))
    except SpecError as exc:
        raise ConfigError(exc.problems) from None
    top = root if not (root.is_scalar and root.value is None) else None
    cf = ConfigFile(path, text, top, legacy=_is_legacy(top))
    problems = _check(cf)
    if problems:
        raise ConfigError(problems)
    return cf


@dataclass(frozen=True)
class Config:
    """The files read, lowest precedence first (see the module docstring)."""

    files: tuple[ConfigFile, ...] = ()

    @classmethod
    def load(cls, explicit: Path | None = None, env: Mapping[str, str] | None = None
             ) -> Config:
        """Read the files of :func:`config_paths`; an explicit file must exist.

        Raises :class:`ConfigError` with every problem of every file."""
        paths = config_paths(explicit, env)
        files: list[ConfigFile] = []
        problems: list[Problem] = []
        for path in paths:
            try:
                cf = read_config_file(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if cf is None and (explicit is not None or len(paths) == 1):
                problems.append(Problem(Location(str(path), 1, 1),
                                        "configuration file does not exist"))
            elif cf is not None:
                files.append(cf)
        if problems:
            raise ConfigError(problems)
        return cls(tuple(files))

    def input_settings(self, pipeline: str, declared: Mapping[str, Any]) -> dict[str, Setting]:
        """Input values for ``pipeline`` whose inputs are ``declared`` (name -> InputSpec):
        ``defaults`` for the inputs it declares, then ``pipelines.<name>``, system file
        then user file, each over the last. Raises ConfigError naming (with its place) an
        input ``pipelines.<name>`` gives that the pipeline does not declare, or a value
        breaking its input's type."""
        from certwright.engine.model.inputs import coerce_value
        out: dict[str, Setting] = {}
        problems: list[Problem] = []
        for cf in self.files:
            for section, strict in ((cf.section("defaults"), False),
                                    (_pipeline_section(cf, pipeline), True)):
                if section is None:
                    continue
                for key, knode, vnode in section.entries():
                    if key not in declared:
                        if strict:
                            problems.append(cf.problem(
                                knode, f"pipeline {pipeline!r} has no input {key!r}",
                                _close(str(key), declared)
                                or f"it takes: {', '.join(declared) or 'none'}"))
                        continue
                    try:
                        coerce_value(declared[key], vnode.value)
                    except ValueError as exc:
                        problems.append(cf.problem(
                            vnode, f"input {key!r} ({declared[key].type}): "
                                   f"{vnode.value!r} is not valid: {exc}"))
                        continue
                    out[key] = Setting(vnode.value, cf.where(vnode))
        if problems:
            raise ConfigError(problems)
        return out

    def live_dir(self) -> Setting | None:
        """The certificates root the files set (user's over system's), absolute, with its
        origin; None when neither sets it. Relative paths are taken from the file's folder."""
        found: Setting | None = None
        for cf in self.files:
            node = cf.section("live_dir")
            if node is not None:
                p = Path(str(node.value)).expanduser()
                p = p if p.is_absolute() else cf.path.resolve().parent / p
                found = Setting(p, cf.where(node))
        return found

    def store(self) -> Setting | None:
        """The ``store:`` URL the files set (user's over system's), unparsed, with its
        origin (``file:line``); None when neither sets it."""
        found: Setting | None = None
        for cf in self.files:
            node = cf.section("store")
            if node is not None:
                found = Setting(str(node.value).strip(), cf.where(node))
        return found

    def store_key(self) -> Setting | None:
        """The ``store_key:`` file the files name (user's over system's), absolute (taken
        from the file's folder when relative), with its origin; None when neither does."""
        found: Setting | None = None
        for cf in self.files:
            node = cf.section("store_key")
            if node is not None and str(node.value or "").strip():
                p = Path(str(node.value).strip()).expanduser()
                p = p if p.is_absolute() else cf.path.resolve().parent / p
                found = Setting(p, cf.where(node))
        return found

    def host(self) -> Setting | None:
        """The ``host:`` the files set (user's over system's), with its origin; None when
        neither sets it (``engine.run.hosts.local_host`` then decides)."""
        found: Setting | None = None
        for cf in self.files:
            node = cf.section("host")
            if node is not None and str(node.value or "").strip():
                found = Setting(str(node.value).strip(), cf.where(node))
        return found

    def daemon_sections(self) -> list[tuple[ConfigFile, YNode]]:
        """The ``daemon`` section of each file that has one, lowest precedence first."""
        out = []
        for cf in self.files:
            node = cf.section("daemon")
            if node is not None:
                out.append((cf, node))
        return out

    def settings(self) -> dict[str, Setting]:
        """Every value the files set, as dotted keys (``pipelines.cacert.ca``), merged."""
        out: dict[str, Setting] = {}
        for cf in self.files:
            if cf.root is None:
                continue
            for key, _, node in (cf.root.entries() if not cf.legacy else
                                 [("daemon", None, cf.root)]):
                _flatten(cf, str(key), node, out, depth=1 if key != "pipelines" else 2)
        return out


def _pipeline_section(cf: ConfigFile, pipeline: str) -> YNode | None:
    node = cf.section("pipelines")
    return node.get(pipeline) if node is not None and node.is_map else None


def _flatten(cf: ConfigFile, prefix: str, node: YNode, out: dict[str, Setting],
             depth: int) -> None:
    if depth > 0 and node.is_map:
        for key, _, child in node.entries():
            _flatten(cf, f"{prefix}.{key}", child, out, depth - 1)
        return
    out[prefix] = Setting(node.value, cf.where(node))


def configured_live_dir(explicit: Path | None = None,
                        env: Mapping[str, str] | None = None) -> Setting | None:
    """The certificates root as the configuration files set it (see
    :meth:`Config.live_dir`), or None. Raises ConfigError for a broken file. The caller
    decides what wins over it (``CERTWRIGHT_LIVE_DIR``) and what applies without it."""
    return Config.load(explicit, env).live_dir()
