"""The checks of ``certwright doctor``: each looks at one part of the environment and says
what is wrong and what to do about it.

A check returns :class:`Finding` objects: ``ok``, ``warn`` (works, but something is off)
or ``fail`` (a run would fail here), a sentence of what was found, and for anything not ok
a fix. No check changes anything: the state folder is probed with a temporary file that
is removed again, the store is opened read-only, the web server's config test is run but
never its reload. Network checks time out after ``timeout`` seconds.

Hazard: ``reload_test`` is a command of the user's configuration and is run as this
user, as ``install.reload`` would run it.
"""
from __future__ import annotations

import errno
import imaplib
import os
import shlex
import socket
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail,
                "fix": self.fix}


def state_dir_writable(state_dir: Path) -> Finding:
    """The state folder exists (or can be made) and this user can write in it."""
    name = "state dir"
    if not state_dir.exists():
        parent = next((p for p in state_dir.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK | os.X_OK):
            return Finding(name, "ok", f"{state_dir} does not exist yet; the first run "
                                       f"creates it")
        return Finding(name, "fail", f"{state_dir} does not exist and {parent} is not "
                                     f"writable by this user",
                       f"create it (`mkdir -p {state_dir}`) as a user who may, and hand it "
                       f"to this one, or choose another with --state-dir")
    if not state_dir.is_dir():
        return Finding(name, "fail", f"{state_dir} is not a folder",
                       "remove it or choose another with --state-dir")
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=state_dir)
    except OSError as exc:
        return Finding(name, "fail", f"cannot create a file in {state_dir}: "
                                     f"{exc.strerror or exc}",
                       _write_fix(state_dir, exc))
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    except OSError as exc:
        return Finding(name, "fail", f"cannot write in {state_dir}: {exc.strerror or exc}",
                       _write_fix(state_dir, exc))
    finally:
        os.close(fd)
        os.unlink(probe)
    return Finding(name, "ok", f"{state_dir} is writable")


def _write_fix(folder: Path, exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return f"the file system of {folder} is mounted read-only: remount it read-write"
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {folder} is full: free some space"
    return (f"give this user write access (`chown -R {os.getuid()} {folder}`) or choose "
            f"another folder with --state-dir")


def store_integrity(state_dir: Path) -> Finding:
    """The store opens the way every command opens it, and ``PRAGMA quick_check`` finds
    its pages sound."""
    from certwright.state import names as N
    from certwright.state.faults import StoreFault
    from certwright.state.opening import check_integrity, open_reader
    from certwright.state.sqlite import SQLiteStore
    name = "store"
    path = state_dir / N.DB_FILE
    if not path.exists():
        return Finding(name, "ok", f"no store in {state_dir} yet; the first run creates it")
    fix = (f"stop every certwright process using it, move {path} aside (with its -wal and "
           f"-shm files) and restore it from a backup, or rebuild it with `sqlite3 {path} "
           f".recover`; a new store starts empty")
    try:
        SQLiteStore(path, readonly=True).close()
        db = open_reader(str(path), sqlite3.connect)
        try:
            check_integrity(db, path)
        finally:
            db.close()
    except StoreFault as exc:
        return Finding(name, "fail", str(exc).split(";")[0], fix)
    except sqlite3.Error as exc:
        return Finding(name, "fail", f"{path} cannot be read as a store: {exc}", fix)
    return Finding(name, "ok", f"{path} passes its integrity check (quick_check)")


def daemon_serving(state_dir: Path) -> Finding:
    """Whether a daemon serves the store, and whether parked runs need one."""
    from certwright.state import names as N
    from certwright.state.locks import daemon_lock
    from certwright.state.records import WAITING
    name = "daemon"
    pid = daemon_lock(state_dir).holder()
    if pid:
        return Finding(name, "ok", f"a daemon (pid {pid}) serves {state_dir}; `run` hands "
                                   f"it new runs with --no-wait")
    waiting = 0
    if (state_dir / N.DB_FILE).exists():
        from certwright.errors import CertwrightError
        from certwright.state.location import open_store
        try:
            store = open_store(state_dir, readonly=True)
        except (CertwrightError, OSError, sqlite3.Error):
            store = None  # the store check reports why
        if store is not None:
            try:
                waiting = sum(1 for r in store.list_runs() if r.status == WAITING)
            finally:
                store.close()
    if waiting:
        return Finding(name, "warn", f"no daemon serves {state_dir}, and {waiting} run(s) "
                                     f"wait for mail, a file or a deadline",
                       "start `certwright daemon` (or its systemd unit), or drive each "
                       "one on with `certwright resume RUN`")
    return Finding(name, "ok", f"no daemon serves {state_dir} (none is needed: no run "
                               f"waits)")


def store_key(args: Any) -> Finding:
    """The store key the command line, environment or configuration names: loadable and
    private, or none (then private keys stay on the host that made them)."""
    from certwright.engine.cli.storeargs import store_key_of
    from certwright.errors import InputError
    name = "store key"
    try:
        sealer = store_key_of(args)
    except InputError as exc:
        return Finding(name, "fail", str(exc), "name a 0600 file that `certwright store "
                                               "keygen FILE` made, or chmod 600 it")
    if sealer is None:
        return Finding(name, "ok", "none: secrets are kept in clear in a table of their own; "
                                   "private keys stay on the host that made them (a moved "
                                   "run does not take its key along)")
    return Finding(name, "ok", f"{sealer.key_id} ({sealer.origin}): secrets and "
                               f"kept keys, CSRs and certificates are sealed (AES-256-GCM)")


def ca_reachable(pipeline: str, key: str, url: str, *, cafile: str | None,
                 timeout: float) -> Finding:
    """An HTTP(S) answer, of any status below 500, from the CA at ``url``."""
    name = f"CA ({pipeline}: {key})"
    context = ssl.create_default_context(cafile=cafile or None)
    # the callers pass http:// and https:// URLs only (S310: no file: or custom schemes)
    request = urllib.request.Request(url, headers={"User-Agent": "certwright-doctor"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310 - as above
                                    context=context) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return Finding(name, "fail", f"{url}: its TLS certificate is not trusted "
                                         f"({reason.verify_message})",
                           "give the CA's root with --set ca_bundle=FILE (acme) or trust it "
                           "system-wide")
        return Finding(name, "fail", f"cannot reach {url}: {_reason(reason)}",
                       f"start the CA or correct the input {key!r} (in the configuration "
                       f"file's pipelines.{pipeline}, or --set {key}=URL)")
    if status >= 500:
        return Finding(name, "warn", f"{url} answers, with HTTP {status}",
                       "the CA is up but failing: see its log")
    return Finding(name, "ok", f"{url} answers (HTTP {status})")


def _reason(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "no answer in time"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return str(reason)


def maildir_ready(where: str, path: Path) -> Finding:
    """A Maildir (``cur``, ``new``, ``tmp``) that this user can read and deliver into."""
    name = f"mail ({where})"
    missing = [sub for sub in ("cur", "new", "tmp") if not (path / sub).is_dir()]
    if not path.exists():
        return Finding(name, "fail", f"the Maildir {path} does not exist",
                       f"point it at where the mail server delivers, or create it: "
                       f"`mkdir -p {' '.join(str(path / d) for d in ('cur', 'new', 'tmp'))}`")
    if missing:
        return Finding(name, "fail", f"{path} is no Maildir: it lacks {', '.join(missing)}",
                       f"`mkdir -p {' '.join(str(path / m) for m in missing)}`, or point it "
                       f"at the Maildir itself")
    unusable = [sub for sub in ("new", "cur", "tmp")
                if not os.access(path / sub, os.R_OK | os.W_OK | os.X_OK)]
    if unusable:
        return Finding(name, "fail", f"this user cannot read and move mail in "
                                     f"{', '.join(str(path / u) for u in unusable)}",
                       "give this user access (the daemon's maildir_owner/maildir_group "
                       "settings, or chmod/chgrp)")
    return Finding(name, "ok", f"{path} is a Maildir this user can read and write")


def imap_login(url: str, *, cafile: str | None, timeout: float) -> Finding:
    """Log in to the IMAP account of ``url`` and select its mailbox (read-only)."""
    from certwright.errors import InputError
    from certwright.mail.imap import ImapAccount
    try:
        account = ImapAccount(url)
        password = account.password()
    except InputError as exc:
        return Finding("mail (IMAP)", "fail", str(exc), "correct the daemon's imap URL")
    name = f"mail ({account.shown})"
    context = ssl.create_default_context(cafile=account.cafile or cafile or None)
    try:
        with imaplib.IMAP4_SSL(account.host, account.port, ssl_context=context,
                               timeout=timeout) as imap:
            imap.login(account.user, password)
            status, _ = imap.select(_quoted(account.mailbox), readonly=True)
            if status != "OK":
                return Finding(name, "fail", f"no mailbox {account.mailbox!r}",
                               "create it, or name the right one in the URL's path")
    except imaplib.IMAP4.error as exc:
        return Finding(name, "fail", f"the login was refused: {exc}",
                       "check the user and the password file")
    except (OSError, ssl.SSLError) as exc:
        return Finding(name, "fail", f"cannot reach {account.host}:{account.port}: "
                                     f"{_reason(exc)}", "check the host, port and cafile")
    return Finding(name, "ok", f"logged in and selected {account.mailbox!r}")


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_test(pipeline: str, inputs: dict[str, Any], *, timeout: float) -> Finding:
    """Run the pipeline's ``reload_test`` (the web server's config test), never its
    ``reload``."""
    from certwright.errors import CertwrightError
    from certwright.steps.install import run_command
    name = f"web server ({pipeline})"
    test = str(inputs.get("reload_test") or "").strip()
    reload = str(inputs.get("reload") or "").strip()
    if not test:
        if reload:
            return Finding(name, "warn", f"the reload {reload!r} runs without a config test",
                           "set reload_test (e.g. `apachectl -t`, `nginx -t`) so that a "
                           "broken configuration is never reloaded")
        return Finding(name, "ok", "no reload configured (reload_test and reload empty)")
    try:
        proc = run_command(shlex.split(test), shell=False, timeout=timeout,
                           what="config test")
    except (CertwrightError, ValueError) as exc:
        return Finding(name, "fail", str(exc), "install the server or correct reload_test")
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        tail = f": {said[0][:200]}" if said else " (and printed nothing)"
        return Finding(name, "fail", f"{test!r} failed with status {proc.returncode}{tail}",
                       "correct the server's configuration (the reload would be refused)")
    return Finding(name, "ok", f"{test!r} passes")
