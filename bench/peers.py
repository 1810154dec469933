"""The ACME clients of ``bench/acme_vs_peers.py``: how each is set up and how one
certificate is asked of it, as a command line (a process per certificate).

Every client gets its documented defaults (polling included) and the same things: one
Pebble, one webroot served over HTTP on Pebble's http-01 port, its own key and CSR made by
itself (acme-tiny, which takes a CSR, gets it from an ``openssl req`` in the same timed
command), an account registered before the clock starts (:meth:`Client.prepare`), and the
test CA trusted without changing anything on the machine:

* certbot (Debian): ``certonly --webroot``, ``REQUESTS_CA_BUNDLE``. certbot refuses a second
  instance on one config folder, so each of the parallel slots has its own config, work and
  logs folders and its own account (all registered in ``prepare``).
* acme-tiny (Debian): ``--acme-dir`` in the webroot, ``--disable-check`` (its self-check
  would resolve the test names through the machine's DNS), ``SSL_CERT_FILE``; it looks its
  account up with a newAccount POST on every run, which is how it works.
* lego (Debian): ``run --http --http.webroot``, ``LEGO_CA_CERTIFICATES``; polls on its fixed
  interval.
* uacme (Debian): ``issue`` with a hook script writing into the webroot (``-t EC``, the
  P-256 key every other client makes by default), run under ``unshare -m`` with the test
  root bind-mounted over the system bundle it alone trusts, so nothing on the machine
  changes (needs root, as the bench's machine has).
* certwright as a process per certificate: ``certwright run acme`` with ``webroot=``, one
  state folder (one account) for all, as a cron user runs it.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

UACME_HOOK = """#!/bin/sh
# uacme hook: METHOD TYPE IDENT TOKEN AUTH; answer http-01 from the webroot, decline others.
[ "$2" = "http-01" ] || exit 1
dir="{webroot}/.well-known/acme-challenge"
case "$1" in
  begin) mkdir -p "$dir" && printf '%s' "$5" > "$dir/$4" ;;
  done|failed) rm -f "$dir/$4" ;;
esac
"""
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class Setting:
    """What every client is given: the CA, the webroot, the contact, a work folder."""

    directory: str
    ca_bundle: Path
    webroot: Path
    contact: str
    work: Path
    slots: int = 8
    extra: dict[str, str] = field(default_factory=dict)  # more pipeline inputs (engine)


@dataclass
class Client:
    """One client: ``name``, the Debian package (or None), and its slots (folders that one
    process at a time may use; a command takes one and gives it back)."""

    name: str
    package: str | None
    s: Setting
    env: dict[str, str] = field(default_factory=dict)
    free: queue.SimpleQueue[int] = field(default_factory=queue.SimpleQueue)

    def __post_init__(self) -> None:
        for slot in range(self.s.slots):
            self.free.put(slot)
        # A Python client runs as installed: with its bytecode cached. (Debian's certbot
        # and acme-tiny ship theirs; an editable certwright under PYTHONDONTWRITEBYTECODE
        # would compile ~80 modules from source in every process, ~0.3 s that no
        # installed copy pays.)
        self.env = {k: v for k, v in {**os.environ, **self.env}.items()
                    if k != "PYTHONDONTWRITEBYTECODE"}

    def available(self) -> str | None:
        """None when the client can run here, else why not."""
        binary = self.package and shutil.which(self.binary())
        if self.package and not binary:
            return f"{self.binary()} is not installed (Debian package {self.package!r})"
        return None

    def binary(self) -> str:
        return self.package or ""

    def prepare(self) -> None:
        """Register the account(s); runs before the clock starts."""

    def command(self, domain: str, slot: int) -> Sequence[str]:
        raise NotImplementedError

    def issue(self, domain: str) -> None:
        """Ask for one certificate in a process; RuntimeError with its output if it fails."""
        slot = self.free.get()
        try:
            proc = subprocess.run(list(self.command(domain, slot)), env=self.env,
                                  capture_output=True, text=True, check=False, timeout=300)
        finally:
            self.free.put(slot)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed for {domain} (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout)[-1500:]}")

    def folder(self, *parts: str) -> Path:
        path = self.s.work.joinpath(self.name, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class Certbot(Client):
    def __init__(self, s: Setting) -> None:
        super().__init__("certbot", "certbot", s, {"REQUESTS_CA_BUNDLE": str(s.ca_bundle)})

    def _dirs(self, slot: int) -> list[str]:
        return ["--config-dir", str(self.folder(f"s{slot}", "config")),
                "--work-dir", str(self.folder(f"s{slot}", "work")),
                "--logs-dir", str(self.folder(f"s{slot}", "logs")),
                "--server", self.s.directory, "--non-interactive"]

    def prepare(self) -> None:
        for slot in range(self.s.slots):
            subprocess.run(["certbot", "register", "--agree-tos", "-m", self.s.contact,
                            "--no-eff-email", *self._dirs(slot)], env=self.env, check=True,
                           capture_output=True)

    def command(self, domain: str, slot: int) -> Sequence[str]:
        return ["certbot", "certonly", "--webroot", "-w", str(self.s.webroot), "-d", domain,
                "--agree-tos", "-m", self.s.contact, "--no-eff-email", "--quiet",
                *self._dirs(slot)]


class AcmeTiny(Client):
    def __init__(self, s: Setting) -> None:
        super().__init__("acme-tiny", "acme-tiny", s, {"SSL_CERT_FILE": str(s.ca_bundle)})
        self.account = self.folder() / "account.key"

    def prepare(self) -> None:
        subprocess.run(["openssl", "genrsa", "-out", str(self.account), "2048"], check=True,
                       capture_output=True)

    def command(self, domain: str, slot: int) -> Sequence[str]:
        d = self.folder(domain)
        challenges = self.s.webroot / ".well-known" / "acme-challenge"
        challenges.mkdir(parents=True, exist_ok=True)
        script = (
            f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            f"-keyout {d}/key.pem -subj /CN={domain} -addext subjectAltName=DNS:{domain} "
            f"-out {d}/csr.pem 2>/dev/null && "
            f"acme-tiny --account-key {self.account} --csr {d}/csr.pem --acme-dir {challenges} "
            f"--directory-url {self.s.directory} --disable-check --quiet > {d}/chain.pem && "
            f"grep -q 'BEGIN CERTIFICATE' {d}/chain.pem")
        return ["sh", "-c", script]


class Lego(Client):
    def __init__(self, s: Setting) -> None:
        super().__init__("lego", "lego", s, {"LEGO_CA_CERTIFICATES": str(s.ca_bundle)})

    def command(self, domain: str, slot: int) -> Sequence[str]:
        return ["lego", "--server", self.s.directory, "--email", self.s.contact,
                "--accept-tos", "--path", str(self.folder("data")), "--http",
                "--http.webroot", str(self.s.webroot), "--domains", domain, "run"]

    def prepare(self) -> None:
        pass  # lego registers on its first run: the warm-up certificate does it


class Uacme(Client):
    def __init__(self, s: Setting) -> None:
        super().__init__("uacme", "uacme", s)
        self.hook = self.folder() / "hook.sh"
        self.hook.write_text(UACME_HOOK.format(webroot=s.webroot))
        self.hook.chmod(0o755)

    def available(self) -> str | None:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            return "uacme is run under 'unshare -m' with a bind mount, which needs root"
        return super().available()

    def _argv(self, *args: str) -> list[str]:
        # A mount namespace of its own: the test root over the system bundle for this
        # process only (unshare makes the namespace's mounts private by default).
        inner = (f"mount --bind {self.s.ca_bundle} {SYSTEM_BUNDLE} && exec uacme -a "
                 f"{self.s.directory} -c {self.folder('conf')} -y -t EC -h {self.hook} "
                 + " ".join(args))
        return ["unshare", "-m", "sh", "-c", inner]

    def prepare(self) -> None:
        subprocess.run(self._argv("new", self.s.contact), env=self.env, check=True,
                       capture_output=True)

    def command(self, domain: str, slot: int) -> Sequence[str]:
        return self._argv("issue", domain)


class CertwrightProcess(Client):
    def __init__(self, s: Setting) -> None:
        super().__init__("certwright-process", None, s, {
            "CERTWRIGHT_STATE_DIR": str(s.work / "certwright-process" / "state"),
            "CERTWRIGHT_CACHE_DIR": str(s.work / "certwright-process" / "cache")})

    def command(self, domain: str, slot: int) -> Sequence[str]:
        args = [sys.executable, "-m", "certwright", "run", "acme"]
        for key, value in inputs(self.s, domain, self.folder("certs") / domain).items():
            args += ["--set", f"{key}={value}"]
        return args

    def prepare(self) -> None:
        pass  # the warm-up certificate registers the account and fills the caches


def inputs(s: Setting, domain: str, cert_dir: Path) -> dict[str, str]:
    """The ``acme`` pipeline's inputs for one certificate (process and engine alike)."""
    return {"domain": domain, "directory": s.directory, "ca_bundle": str(s.ca_bundle),
            "contact": s.contact, "webroot": str(s.webroot), "cert_dir": str(cert_dir),
            **s.extra}


PEERS = {"certbot": Certbot, "acme-tiny": AcmeTiny, "lego": Lego, "uacme": Uacme}
