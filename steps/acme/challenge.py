"""Presenting ACME challenges (http-01 and dns-01) and taking them down again.

A presented challenge is described by a :class:`Presented` record, saved in
``run_dir/acme-challenges.json`` *before* it is put in place, so :func:`unpresent` can
remove it after a crash. Each way of presenting is idempotent: serving a token twice, or
writing the same webroot file twice, changes nothing; a dns-01 ``add`` hook is run once per
record per run (the record file remembers it) and its ``del`` hook once.

Hazards: hooks are user programs run with an argv (never a shell) and a timeout; their
exit status and the tail of their stderr go into the error, never the environment.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dnslib import DNSRecord

from certwright.errors import PermanentError, StepError
from certwright.steps.acme import responder as acme_responder
from certwright.steps.acme.client import read_json, write_json

HOOK_TIMEOUT = 120.0
RECORDS_FILE = "acme-challenges.json"


@dataclass
class Presented:
    """One challenge put in place: where (``how``) and what is needed to take it down."""

    identifier: str
    type: str
    token: str
    how: str  # "responder", "webroot" or "dns"
    key_authorization: str = ""
    address: str = ""  # responder address
    webroot: str = ""
    name: str = ""  # dns record name
    value: str = ""  # dns record value
    added: bool = False  # dns add hook ran


def record_name(identifier: str) -> str:
    """The TXT record name for dns-01: ``_acme-challenge.<domain>`` (wildcard stripped)."""
    return "_acme-challenge." + identifier.removeprefix("*.").rstrip(".")


def load_records(run_dir: Path) -> list[Presented]:
    data = read_json(run_dir / RECORDS_FILE) or {}
    return [Presented(**item) for item in data.get("presented", [])]


def save_records(run_dir: Path, records: Sequence[Presented]) -> None:
    write_json(run_dir / RECORDS_FILE, {"presented": [asdict(r) for r in records]})


# (run_dir, address) pairs holding a responder in this process, so that presenting twice in
# one run (wait: false, then wait: true) counts one user of the responder, not two.
_holders: set[tuple[str, str]] = set()
_holders_lock = threading.Lock()


def _hold_responder(run_dir: Path, address: str) -> acme_responder.Responder:
    key = (str(run_dir), address)
    with _holders_lock:
        if key in _holders:
            found = acme_responder.find(address)
            if found is not None:
                return found
            _holders.discard(key)
        try:
            responder = acme_responder.acquire(address)
        except (OSError, ValueError) as exc:
            raise StepError(f"cannot start the http-01 responder on {address}: {exc}") from exc
        _holders.add(key)
        return responder


def _drop_responder(run_dir: Path, address: str) -> None:
    key = (str(run_dir), address)
    with _holders_lock:
        if key not in _holders:
            return
        _holders.discard(key)
    acme_responder.release(address)


def run_hook(argv_template: Sequence[str] | str, record: Presented, doing: str) -> None:
    """Run a dns hook, ``{name}``, ``{value}``, ``{domain}``, ``{token}`` substituted.

    The hook is an argv list, or a string split like a shell would (no shell runs).
    Raises StepError with the exit status and the end of stderr when it fails.
    """
    if isinstance(argv_template, str):
        argv_template = shlex.split(argv_template)
    fields = {"name": record.name, "value": record.value,
              "domain": record.identifier.removeprefix("*."), "token": record.token}
    try:
        argv = [str(part).format(**fields) for part in argv_template]
    except (KeyError, IndexError, ValueError) as exc:
        raise PermanentError(f"{doing}: bad placeholder in hook {list(argv_template)}: "
                             f"{exc}") from exc
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=HOOK_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepError(f"{doing}: running hook {argv[0]!r} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise StepError(f"{doing}: hook {argv[0]!r} exited with status {proc.returncode}: {tail}")


def merge_records(old: Sequence[Presented], new: Sequence[Presented]) -> list[Presented]:
    """``old`` records (so cleanup still finds them) updated by ``new``, keyed by token.

    A record already presented keeps its ``added`` flag, so a dns hook is not run twice.
    """
    merged = {(r.how, r.token): r for r in old}
    for r in new:
        before = merged.get((r.how, r.token))
        if before is not None:
            r.added = before.added
        merged[(r.how, r.token)] = r
    return list(merged.values())


def present(run_dir: Path, params: Mapping[str, Any], records: list[Presented]) -> None:
    """Put every record in place (idempotent); the records file is updated as hooks run."""
    for record in records:
        if record.how == "responder":
            _hold_responder(run_dir, record.address).add(record.token, record.key_authorization)
        elif record.how == "webroot":
            folder = Path(record.webroot) / ".well-known" / "acme-challenge"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / record.token).write_text(record.key_authorization)
                os.chmod(folder / record.token, 0o644)
            except OSError as exc:
                raise StepError(f"writing the http-01 answer for {record.identifier} into "
                                f"{folder}: {exc}") from exc
        elif record.how == "dns" and not record.added:
            run_hook(params["dns_hook"], record,
                     f"adding TXT {record.name} for {record.identifier}")
            record.added = True
            save_records(run_dir, records)


def unpresent(run_dir: Path, params: Mapping[str, Any]) -> list[str]:
    """Take down every record of the run; returns the problems met (never raises)."""
    problems: list[str] = []
    records = load_records(run_dir)
    addresses = set()
    for record in records:
        if record.how == "responder":
            addresses.add(record.address)
            found = acme_responder.find(record.address)
            if found is not None:
                found.remove(record.token)
        elif record.how == "webroot":
            try:
                (Path(record.webroot) / ".well-known" / "acme-challenge" / record.token).unlink(
                    missing_ok=True)
            except OSError as exc:
                problems.append(f"removing webroot answer for {record.identifier}: {exc}")
        elif record.how == "dns" and record.added and params.get("dns_cleanup_hook"):
            try:
                run_hook(params["dns_cleanup_hook"], record,
                         f"removing TXT {record.name} for {record.identifier}")
                record.added = False
            except StepError as exc:
                problems.append(str(exc))
    for address in addresses:
        _drop_responder(run_dir, address)
    remaining = [r for r in records if r.how == "dns" and r.added]
    if remaining:
        save_records(run_dir, remaining)
    else:
        (run_dir / RECORDS_FILE).unlink(missing_ok=True)
    return problems


def txt_values(resolver: str, name: str, timeout: float = 2.0) -> list[str]:
    """The TXT values of ``name`` at ``resolver`` (host:port); empty on any failure."""
    host, port = acme_responder.parse_address(resolver)
    try:
        raw = DNSRecord.question(name, "TXT").send(host, port, timeout=timeout)
        reply = DNSRecord.parse(raw)
    except Exception:  # noqa: BLE001 - socket errors, timeouts and dnslib's parse errors alike
        return []
    out = []
    for rr in reply.rr:
        data = getattr(rr.rdata, "data", None)
        if isinstance(data, list):
            out.append(b"".join(bytes(p) for p in data).decode(errors="replace"))
    return out


def wait_propagation(records: Sequence[Presented], params: Mapping[str, Any],
                     sleep: Callable[[float], None]) -> None:
    """Wait until the TXT records are visible at ``dns_resolver``, or ``propagation_wait`` s.

    With a resolver, checks every second up to ``propagation_wait`` seconds and raises
    StepError naming the missing records when they never show; without one, just sleeps.
    """
    dns = [r for r in records if r.how == "dns"]
    wait = float(params.get("propagation_wait", 30))
    resolver = params.get("dns_resolver")
    if not dns:
        return
    if not resolver:
        sleep(wait)
        return
    deadline = time.monotonic() + wait
    while True:
        missing = [r for r in dns if r.value not in txt_values(resolver, r.name)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(r.name for r in missing)
            raise StepError(f"TXT record(s) {names} not visible at {resolver} after {wait:g}s")
        sleep(1.0)
