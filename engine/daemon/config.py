"""The daemon's settings: command-line options merged over the configuration files.

They live in the ``daemon:`` section of the configuration file
(:mod:`certwright.engine.model.configfile`: the user's over /etc's, or ``--config FILE``),
with the same keys as the options, plus a few that only make sense in a file::

    maildirs: [/var/mail/certwright]          # --maildir (repeatable)
    imap: ["imaps://certs@mail.example.org/INBOX?password_file=/etc/certwright/imap.pw"]
    pipelines: /etc/certwright/pipelines       # --pipelines
    inbox: /var/lib/certwright/inbox           # --inbox
    embedded: false                            # --embedded
    csr_pipeline: cacert                       # pipeline a dropped *.csr starts
    csr_inputs: {cert_dir: /etc/ssl/certwright}  # extra inputs for CSR-started runs
    unmatched_grace: 10m                       # how long unclaimed mail may wait in new/
    sync_interval: 2s                          # how often runs started elsewhere are picked up
    suppress_mail_polls: true                  # rely on inotify, not 30 s polls per run
    maildir_poll: 10s                          # --maildir-poll: list each Maildir's new/ this
                                               # often too (NFS: other hosts' writes; 0: off)
    renew_check: 1m                            # how often renewals are considered at most
    renew_retry: 1h                            # first back-off of a failed renewal ...
    renew_retry_cap: 1d                        # ... doubling up to this
    imap_cafile: /etc/ssl/mail-ca.pem          # trust anchors for IMAP servers (else system)
    ca_senders: [ca@ca.example.org]            # senders whose mail is the CA's (mail.claims)
    ca_origins: [https://ca.example.org]       # the CA's base URLs, for the same test
    maildir_owner: vmail                       # owner, group and mode of a Maildir that
    maildir_group: vmail                       # certwright may create (else it refuses
    maildir_mode: "0700"                       # to create one outside the state dir)
    metrics_listen: 127.0.0.1:9464             # --metrics-listen: serve /metrics there
    metrics_certificates: 100                  # certificate names with a series of their own
    heartbeat: 10s                             # how often the daemon's row is rewritten
    lease: 15s                                 # --lease: a run's lease (PostgreSQL store)
    host: web1                                 # --host: this daemon's host (default: the
                                               # top-level host:, CERTWRIGHT_HOST, hostname)

An old daemon.yaml with these keys at the top (no section) is still read, with a warning.
Options given on the command line win over the file; list options (``--maildir``,
``--imap``) are added to the file's. Relative paths in the file are taken relative to the
file's folder. Raises :class:`ConfigError` (an :class:`InputError`) naming the key, with
its ``file:line:col``, for a bad value. Loading is pure: re-reading the same file (SIGHUP)
gives an equal config.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from certwright.engine.model.configfile import Config, ConfigError
from certwright.engine.model.configkeys import DAEMON_KEYS
from certwright.engine.model.spec import parse_duration
from certwright.errors import CertwrightError, InputError, Problem

log = structlog.get_logger("certwright.daemon")

KEYS = DAEMON_KEYS


@dataclass(frozen=True)
class DaemonConfig:
    """Everything the daemon is told. Durations are seconds."""

    maildirs: tuple[Path, ...] = ()
    imap: tuple[str, ...] = ()
    pipelines: Path | None = None
    inbox: Path | None = None
    embedded: bool = False
    embedded_domains: tuple[str, ...] = ()
    csr_pipeline: str = "cacert"
    csr_inputs: Mapping[str, Any] = field(default_factory=dict)
    unmatched_grace: float = 600.0
    sync_interval: float = 2.0
    suppress_mail_polls: bool = True
    maildir_poll: float = 0.0  # seconds between listings of each Maildir's new/ (0: none)
    renew_check: float = 60.0
    renew_retry: float = 3600.0
    renew_retry_cap: float = 86400.0
    imap_cafile: Path | None = None
    ca_senders: tuple[str, ...] = ()
    ca_origins: tuple[str, ...] = ()
    maildir_owner: str | None = None
    maildir_group: str | None = None
    maildir_mode: int | None = None
    metrics_listen: tuple[str, int] | None = None  # HOST:PORT of /metrics (None: off)
    metrics_certificates: int = 100
    heartbeat: float = 10.0
    lease: float = 15.0  # seconds a run's lease lasts (several daemons on PostgreSQL)
    host: str | None = None  # its host (engine.run.hosts); None: no host rule (tests)
    source: str | None = None  # the config file it came from, if any
    from_files: bool = False  # read from configuration files (SIGHUP re-reads them)
    config_path: Path | None = None  # the file named by --config, if one was


def _duration(value: Any, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError, CertwrightError) as exc:
        raise InputError(f"config {key}: {value!r} is not a duration ({exc})") from None
    if seconds < 0:
        raise InputError(f"config {key}: must not be negative")
    return seconds


def _mode(value: Any) -> int:
    """A folder mode: an octal string ("0700", "750") or an int; owner bits rwx required."""
    try:
        mode = int(value, 8) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InputError(f"config maildir_mode: {value!r} is not an octal mode like "
                         '"0700"') from None
    if not 0 <= mode <= 0o7777 or mode & 0o700 != 0o700:
        raise InputError(f"config maildir_mode: {value!r}: the owner needs rwx (0700 bits)")
    return mode


def _hostport(value: Any, key: str) -> tuple[str, int]:
    from certwright.metrics_http import parse_hostport
    try:
        return parse_hostport(str(value))
    except ValueError as exc:
        raise InputError(f"config {key}: {exc}") from None


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"config {key}: expected a whole number >= 0, got {value!r}")
    return value


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"config {key}: expected a path, got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _list(value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    if not isinstance(value, list):
        raise InputError(f"config {key}: expected a list, got {type(value).__name__}")
    return value


def from_mapping(data: Mapping[str, Any], base: Path, source: str | None = None) -> DaemonConfig:
    """A config from a parsed mapping; relative paths resolve against ``base``."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InputError(f"config {source or ''}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(KEYS)})")
    cfg = DaemonConfig(source=source)
    out: dict[str, Any] = {}
    if "maildirs" in data:
        out["maildirs"] = tuple(_path(v, "maildirs", base) for v in _list(data["maildirs"],
                                                                          "maildirs"))
    if "imap" in data:
        out["imap"] = tuple(str(v) for v in _list(data["imap"], "imap"))
    for key in ("pipelines", "inbox", "imap_cafile"):
        if data.get(key) is not None:
            out[key] = _path(data[key], key, base)
    if "embedded" in data:
        out["embedded"] = bool(data["embedded"])
    if "embedded_domains" in data:
        out["embedded_domains"] = tuple(str(v) for v in _list(data["embedded_domains"],
                                                              "embedded_domains"))
    for key in ("maildir_owner", "maildir_group"):
        if data.get(key) is not None:
            out[key] = str(data[key])
    if data.get("maildir_mode") is not None:
        out["maildir_mode"] = _mode(data["maildir_mode"])
    for key in ("ca_senders", "ca_origins"):
        if key in data:
            out[key] = tuple(str(v) for v in _list(data[key], key))
    if "suppress_mail_polls" in data:
        out["suppress_mail_polls"] = bool(data["suppress_mail_polls"])
    if "csr_pipeline" in data:
        out["csr_pipeline"] = str(data["csr_pipeline"])
    if "csr_inputs" in data:
        if not isinstance(data["csr_inputs"], dict):
            raise InputError("config csr_inputs: expected a mapping of input names to values")
        out["csr_inputs"] = dict(data["csr_inputs"])
    if data.get("metrics_listen") is not None:
        out["metrics_listen"] = _hostport(data["metrics_listen"], "metrics_listen")
    if "metrics_certificates" in data:
        out["metrics_certificates"] = _count(data["metrics_certificates"],
                                             "metrics_certificates")
    if "heartbeat" in data:
        out["heartbeat"] = _duration(data["heartbeat"], "heartbeat")
        if out["heartbeat"] < 0.1:
            raise InputError(f"config heartbeat: {data['heartbeat']!r} is shorter than 0.1s")
    if data.get("host"):  # empty: the top-level host:, CERTWRIGHT_HOST, the machine's
        from certwright.engine.run.hosts import check_host
        out["host"] = check_host(data["host"], "config host")
    if "lease" in data:
        out["lease"] = _duration(data["lease"], "lease")
        if out["lease"] < 1:
            raise InputError(f"config lease: {data['lease']!r} is shorter than 1s")
    for key in ("unmatched_grace", "sync_interval", "renew_check", "renew_retry",
                "renew_retry_cap", "maildir_poll"):
        if key in data:
            out[key] = _duration(data[key], key)
    return replace(cfg, **out)


def from_config(config: Config) -> DaemonConfig:
    """The daemon's settings from the ``daemon`` sections of the configuration files (the
    user's over the system's; relative paths resolve against each file's folder). An old
    daemon.yaml (the keys at the top) is read as that section, with a warning.

    Raises :class:`ConfigError` naming every bad key or value with its ``file:line:col``.
    """
    fields: dict[str, Any] = {}
    problems: list[Problem] = []
    sources = []
    for cf, node in config.daemon_sections():
        base = cf.path.resolve().parent
        if cf.legacy:
            log.warning("config_old_form", file=str(cf.path),
                        hint="put these keys under a `daemon:` section; the old form of "
                             "daemon.yaml (its keys at the top) will not be read for ever")
        sources.append(str(cf.path))
        for key, knode, vnode in node.entries():
            if key not in KEYS:  # a legacy file (the new form is checked when read)
                problems.append(cf.problem(knode, f"unknown daemon key {key!r}",
                                           f"known: {', '.join(KEYS)}"))
                continue
            try:
                one = from_mapping({key: vnode.value}, base, str(cf.path))
            except InputError as exc:
                problems.append(cf.problem(vnode, str(exc).removeprefix("config ")))
                continue
            fields[key] = getattr(one, key)
    if problems:
        raise ConfigError(problems)
    if not fields.get("host"):
        from certwright.engine.run.hosts import local_host
        top = config.host()
        fields["host"] = local_host(top.value if top else None)
    return replace(DaemonConfig(), **fields, source=sources[-1] if sources else None,
                   from_files=bool(config.files))


def load_daemon_config(explicit: Path | None = None) -> DaemonConfig:
    """:func:`from_config` of ``explicit`` (the daemon's ``--config``, or the global one),
    else of the user's and system's files. Raises ConfigError (an InputError)."""
    return replace(from_config(Config.load(explicit)), config_path=explicit)


def load_config_file(path: Path) -> DaemonConfig:
    """One file's daemon settings (new form or old); raises InputError on any problem."""
    return load_daemon_config(Path(path))


def merge_args(cfg: DaemonConfig, *, maildirs: list[Path] | None = None,
               imap: list[str] | None = None, pipelines: Path | None = None,
               inbox: Path | None = None, embedded: bool = False,
               metrics_listen: tuple[str, int] | None = None,
               lease: float | None = None, host: str | None = None,
               maildir_poll: float | None = None) -> DaemonConfig:
    """Command-line values over the file's (lists are added)."""
    return replace(
        cfg,
        maildirs=tuple(dict.fromkeys([*cfg.maildirs, *(Path(m) for m in maildirs or [])])),
        imap=tuple(dict.fromkeys([*cfg.imap, *(imap or [])])),
        pipelines=pipelines or cfg.pipelines, inbox=inbox or cfg.inbox,
        embedded=embedded or cfg.embedded, metrics_listen=metrics_listen or cfg.metrics_listen,
        lease=lease or cfg.lease, host=host or cfg.host,
        maildir_poll=cfg.maildir_poll if maildir_poll is None else maildir_poll)
