"""The CA and mail server in-process on loopback, for ``ca=embedded`` (``make demo``).

Started by the CA's provider (:mod:`certwright.ca.provider`, which decides when a run needs
them and points the run's inputs at them) and by ``daemon --embedded``.

Both live under ``<state_dir>/embedded/``: the CA's folder, the Maildir, and ``ports.json``
recording the ports first chosen. A resumed run asks for the same ports, because the run's
pinned inputs (and the links in mail already delivered) name them; if a port is taken by
something else the command says so instead of silently moving.

Hazard: the embedded services live only as long as the command. A run parked with
``--no-wait`` needs ``certwright resume`` (or the daemon with ``--embedded``) to bring them
back; a CA link followed while nothing serves it simply waits for the next resume.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from certwright.ca.embedded_paths import FOLDER, ports_file
from certwright.ca.mailserver import MailServer
from certwright.ca.ratelimit import scaled
from certwright.ca.server import CAServer
from certwright.ca.setup import CAPaths
from certwright.clock import clock_from_env
from certwright.errors import CertwrightError

log = structlog.get_logger("certwright.embedded")

#: The embedded CA serves only this machine's own runs on loopback, many at once from one
#: address and one account: its rate limits are the defaults times this.
EMBEDDED_RATE_FACTOR = 100


@dataclass
class Embedded:
    """What the embedded services offer a run."""

    ca_url: str
    maildir: Path
    ca_dir: Path
    smtp_port: int
    root_cert: Path
    intermediate_cert: Path


def _paths(state_dir: Path) -> tuple[Path, Path, Path, Path]:
    base = Path(state_dir) / FOLDER
    return base, base / "ca", base / "Maildir", ports_file(state_dir)


def _read_ports(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def domains_of(given: Mapping[str, Any]) -> set[str]:
    """The mail domains a run's inputs name: ``domain``, each of ``domains`` (a list or
    a comma-separated text; a wildcard's base) and the domain of ``email``."""
    values = [str(given.get("domain") or ""), str(given.get("email") or "")]
    many = given.get("domains")
    values += [str(v) for v in many] if isinstance(many, (list, tuple)) \
        else str(many or "").split(",")
    out = set()
    for i, raw in enumerate(values):
        name = raw.strip()
        if i == 1 and "@" in name:
            name = name.rsplit("@", 1)[1]
        name = name.removeprefix("*.")
        if name and "${" not in name and "@" not in name:
            out.add(name.lower())
    return out


def start(state_dir: Path, domains: Iterable[str], stack: ExitStack) -> Embedded:
    """Start the mail server and the CA (reusing recorded ports); stopped by ``stack``."""
    base, ca_dir, maildir, ports_file = _paths(state_dir)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    ports = _read_ports(ports_file)
    wanted = sorted(set(domains) | set(ports.get("domains", [])))
    if not wanted:
        wanted = ["example.test"]
    mail = MailServer("127.0.0.1", int(ports.get("smtp", 0)), domains=wanted, maildir=maildir)
    ca = CAServer(ca_dir, host="127.0.0.1", port=int(ports.get("ca", 0)),
                  smarthost=("127.0.0.1", 0), clock=clock_from_env(),
                  settings={"rate_limits": scaled(EMBEDDED_RATE_FACTOR)})
    try:
        mail.start()
        stack.callback(mail.stop)
        ca.smarthost = ("127.0.0.1", mail.port)
        ca.start()
        stack.callback(ca.stop)
    except OSError as exc:
        raise CertwrightError(
            f"cannot start the embedded CA and mail server on the recorded ports "
            f"(ca {ports.get('ca')}, smtp {ports.get('smtp')}): {exc}; the run's links name "
            f"those ports, so free them and try again") from exc
    record = {"ca": ca.port, "smtp": mail.port, "domains": wanted, "ca_url": ca.url}
    tmp = ports_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, ports_file)
    paths = CAPaths(ca_dir)
    log.info("embedded_started", ca_url=ca.url, smtp_port=mail.port, domains=wanted,
             maildir=str(maildir))
    return Embedded(ca_url=ca.url, maildir=maildir, ca_dir=ca_dir, smtp_port=mail.port,
                    root_cert=paths.root_cert, intermediate_cert=paths.intermediate_cert)


def recorded(state_dir: Path) -> Embedded | None:
    """The embedded services as last started (by this or another process), or None."""
    _, ca_dir, maildir, ports_file = _paths(state_dir)
    ports = _read_ports(ports_file)
    if not ports.get("ca_url"):
        return None
    paths = CAPaths(ca_dir)
    return Embedded(ca_url=str(ports["ca_url"]), maildir=maildir, ca_dir=ca_dir,
                    smtp_port=int(ports.get("smtp", 0)), root_cert=paths.root_cert,
                    intermediate_cert=paths.intermediate_cert)


def find_embedded(state_dir: Path, given: Mapping[str, Any], spec: Any,
                  stack: ExitStack) -> Embedded | None:
    """For a resumed run whose ``ca`` input is the embedded CA's recorded URL."""
    _, _, _, ports_file = _paths(state_dir)
    ports = _read_ports(ports_file)
    if not ports or given.get("ca") != ports.get("ca_url"):
        return None
    return start(state_dir, domains_of(given), stack)
