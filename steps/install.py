"""Install steps: put a certificate in place, reload the server, check what it serves.

* ``install.files`` writes key, certificate, chain and full chain into a folder, keeping the
  files it replaces as a version (see ``steps/_install_files.py`` for the crash-safe switch).
* ``install.reload`` runs a config test and then the reload command; a failing test means
  the reload never runs, so a broken config never takes a running server down.
* ``install.check`` makes a TLS handshake and compares the presented leaf with the expected
  one; on a mismatch it restores the previous version, reloads, and fails permanently.

Hazards: commands run without a shell unless ``shell: true``; their output is bounded. The
check retries because a graceful reload is asynchronous (old workers keep serving the old
certificate for a moment).
"""
from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError, StepError
from certwright.state.location import default_live_dir
from certwright.steps import _install_files as files
from certwright.steps import _install_layout as layout_mod
from certwright.steps import _install_lineage as lineage
from certwright.steps import _install_tls as tls
from certwright.steps._install_tls import Presented
from certwright.steps._kept import restored as from_store
from certwright.steps.keys import parse_private_key, public_key_sha256

_OUTPUT_CAP = 16 * 1024  # characters of stdout/stderr kept in outputs and messages
_sleep: Callable[[float], None] = time.sleep  # replaced by tests that must not wait

_NAME_PROPS = {f"{r}_name": {"type": "string", "minLength": 1} for r in layout_mod.ROLES}
_ARGV = {"type": ["array", "string"], "items": {"type": ["string", "number"]}}


def _read(path_value: Any, what: str) -> bytes:
    path = Path(str(path_value))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PermanentError(f"install.files: cannot read {what} {path}: {exc.strerror}") from exc


def _load_certs(path_value: Any, what: str) -> list[x509.Certificate]:
    data = _read(path_value, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise PermanentError(f"install.files: {what} {path_value} holds no PEM certificate")
    return certs


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class InstallFiles(BaseStep):
    """Install key, certificate, chain and full chain into ``dir``, keeping old versions.

    The certificate is called ``name`` (default: its first DNS name). Without ``dir`` it
    goes into its own folder under the certificates root, ``<root>/<name>/`` (a numbered
    suffix when another lineage owns that one); an explicit ``dir`` owned by a certificate
    of another name is refused (:mod:`certwright.steps._install_lineage`). Outputs the
    paths, the folder (``dir``), the certificate's ``name``, ``names``, ``serial``,
    ``not_before``, ``not_after`` and ``issuer`` (its subject), for the inventory.

    Raises PermanentError, before writing anything, when the key does not match the
    certificate, an input is unreadable, the folder is a symlink, group/world-writable or
    cannot be created safely, or a target is a symlink. Repeat calls with the same input
    change nothing (``changed: false``). A crash mid-switch is finished (or rolled back) by
    the next call for the same folder, which logs what it did.
    """

    name: ClassVar[str] = "install.files"
    description: ClassVar[str] = "Install key and certificate files, keeping previous versions"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["cert", "key"],
        "properties": {
            "cert": {"type": "string", "minLength": 1},
            "chain": {"type": "string"},
            "key": {"type": "string", "minLength": 1},
            "dir": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "keep": {"type": "integer", "minimum": 0, "default": 5},
            **_NAME_PROPS,
        },
    }

    def run(self, ctx: StepContext) -> Done:
        p = from_store(ctx, ctx.params, (("cert", "cert"), ("chain", "chain"), ("key", "key")))
        certs = _load_certs(p["cert"], "certificate")
        p, name, asked, names = lineage.resolve(p, certs[0], default_live_dir)
        layout = layout_mod.Layout.from_params(p)
        keep = p.get("keep", 5)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise PermanentError(f"install.files: keep must be a whole number >= 0, got {keep!r}")
        log = ctx.log.bind(step="install.files", dir=str(layout.dir))

        # 1. Validate every input before touching the target folder.
        leaf, extra = certs[0], certs[1:]
        chain = extra + (_load_certs(p["chain"], "chain") if p.get("chain") else [])
        key_pem = _read(p["key"], "key")  # parsed and installed from the same bytes
        key = parse_private_key(key_pem, str(p["key"]))
        if public_key_sha256(key) != public_key_sha256(leaf.public_key()):
            raise PermanentError(
                f"install.files: key {p['key']} does not match the public key of certificate "
                f"{p['cert']} (serial {leaf.serial_number:x}); nothing was written to "
                f"{layout.dir}")
        leaf_pem = _pem([leaf])
        fingerprint = layout_mod.sha256_hex(leaf.public_bytes(serialization.Encoding.DER))
        wanted: dict[str, bytes | None] = {
            "key": key_pem, "cert": leaf_pem,
            "chain": _pem(chain) if chain else None, "fullchain": leaf_pem + _pem(chain)}

        # 2. The folder and targets must be safe; finish a deploy a crash interrupted.
        layout_mod.check_folder(layout.dir, "target folder", create_mode=0o755)
        for role in layout_mod.ROLES:
            layout_mod.check_target(layout.path(role))
        with files.locked(layout):
            lineage.check_owner(layout.dir, name)  # again, under the lock
            lineage.write_owner(layout.dir, name, asked, names)
            done = self._install(ctx, layout, wanted, fingerprint, keep, bool(chain), log)
        return Done({**done.outputs, "dir": str(layout.dir), "name": name, "names": names,
                     **lineage.describe(leaf)})

    @staticmethod
    def _install(ctx: StepContext, layout: layout_mod.Layout, wanted: dict[str, bytes | None],
                 fingerprint: str, keep: int, chain: bool, log: Any) -> Done:
        """Steps 2b-3 of :meth:`run`, under the folder's lock."""
        files.recover(layout, log)

        out = {"cert_path": str(layout.path("cert")), "key_path": str(layout.path("key")),
               "chain_path": str(layout.path("chain")) if chain else "",
               "fullchain_path": str(layout.path("fullchain")),
               "fingerprint_sha256": fingerprint}
        if layout_mod.matches(layout, wanted):
            log.info("install_unchanged", fingerprint_sha256=fingerprint)
            return Done({**out, "previous": "", "changed": False})

        # 3. Keep what is there, then switch.
        current = layout_mod.read_current(layout)
        version = files.save_version(layout, current, fingerprint, ctx.clock)
        files.switch(layout, wanted, current, version.name if version else "", log)
        pruned = files.prune_versions(layout, keep)
        log.info("install_files_written", fingerprint_sha256=fingerprint,
                 previous=str(version or ""), pruned=len(pruned))
        return Done({**out, "previous": str(version or ""), "changed": True})


# -- commands ------------------------------------------------------------------------------

def _command(value: Any, shell: bool) -> list[str] | str | None:
    """An argv list (or a shell string when ``shell``); None when empty."""
    if value is None or value in ("", []):
        return None
    if isinstance(value, (list, tuple)):
        argv = [str(a) for a in value]
        return shlex.join(argv) if shell else argv
    text = str(value)
    return text if shell else shlex.split(text)


def _shown(cmd: list[str] | str) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def run_command(cmd: list[str] | str, *, shell: bool, timeout: float,
                what: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing bounded output; StepError on timeout, Permanent if missing."""
    try:
        proc = subprocess.run(cmd, shell=shell, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, text=True, errors="replace",
                              check=False)  # the callers read the return code
    except FileNotFoundError as exc:
        raise PermanentError(f"{what}: cannot run {_shown(cmd)!r}: {exc.strerror}: "
                             f"{exc.filename}") from exc
    except PermissionError as exc:
        raise PermanentError(f"{what}: cannot run {_shown(cmd)!r}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired:
        raise StepError(f"{what}: {_shown(cmd)!r} did not finish within {timeout} s; "
                        "it was killed") from None
    proc.stdout = (proc.stdout or "")[:_OUTPUT_CAP]
    proc.stderr = (proc.stderr or "")[:_OUTPUT_CAP]
    return proc


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr.strip() or proc.stdout.strip())
    return "\n".join(text.splitlines()[-10:])


def reload_server(test: Any, command: Any, *, shell: bool, timeout: float,
                  log: Any, what: str = "install.reload") -> dict[str, Any]:
    """Config test (if any) then reload; returns outputs. See :class:`InstallReload`."""
    test_cmd = _command(test, shell)
    cmd = _command(command, shell)
    out: dict[str, Any] = {"skipped": cmd is None}
    if test_cmd is not None:
        proc = run_command(test_cmd, shell=shell, timeout=timeout, what=what)
        out.update(test_stdout=proc.stdout, test_stderr=proc.stderr)
        if proc.returncode != 0:
            raise PermanentError(
                f"{what}: config test {_shown(test_cmd)!r} failed with status "
                f"{proc.returncode}, so the server was not reloaded:\n{_tail(proc)}")
        log.info("config_tested", command=_shown(test_cmd))
    if cmd is None:
        log.info("reload_skipped", reason="no command")
        return out
    proc = run_command(cmd, shell=shell, timeout=timeout, what=what)
    out.update(stdout=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)
    if proc.returncode != 0:
        raise StepError(f"{what}: reload {_shown(cmd)!r} failed with status "
                        f"{proc.returncode}:\n{_tail(proc)}")
    log.info("server_reloaded", command=_shown(cmd))
    return out


class InstallReload(BaseStep):
    """Run the config test, then the reload command; outputs their (bounded) output.

    Raises PermanentError when the config test fails (the reload is not run) or a program
    is missing, StepError (retryable) when the reload fails or times out. An empty
    ``command`` gives ``{skipped: true}`` (the test still runs if given). Repeat calls
    reload again, which is harmless for a graceful reload.
    """

    name: ClassVar[str] = "install.reload"
    description: ClassVar[str] = "Test the server config, then reload the server"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "test": _ARGV, "command": _ARGV,
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 60},
            "shell": {"type": "boolean", "default": False},
        },
    }

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        log = ctx.log.bind(step="install.reload")
        return Done(reload_server(p.get("test"), p.get("command"),
                                  shell=bool(p.get("shell", False)),
                                  timeout=float(p.get("timeout") or 60), log=log))


# -- install.check -------------------------------------------------------------------------

def _restore_previous(layout: layout_mod.Layout, previous: Any, log: Any) -> tuple[Path, str]:
    """Put back the version that the current files replaced; (folder, its cert SHA-256).

    ``previous`` names the version folder (``install.files``' output); when empty, the
    newest version whose ``replaced_by`` is the installed certificate is used. Raises
    PermanentError when there is none (nothing is changed then).
    """
    layout_mod.check_folder(layout.dir, "target folder")
    with files.locked(layout):
        return _restore_locked(layout, previous, log)


def _restore_locked(layout: layout_mod.Layout, previous: Any, log: Any) -> tuple[Path, str]:
    files.recover(layout, log)  # a crash mid-deploy: settle it before choosing
    current_fp = layout_mod.leaf_fingerprint(layout_mod.read_file(layout.path("cert")) or b"")
    if previous:
        folder = Path(str(previous))
        if folder.parent.resolve() != layout.versions.resolve():
            raise PermanentError(f"install.check: previous {folder} is not a version folder "
                                 f"under {layout.versions}; nothing was restored")
    else:
        found = [v for v in files.list_versions(layout)
                 if files.load_version(v)[0].get("replaced_by_cert_sha256") == current_fp]
        if not found:
            raise PermanentError(f"install.check: no saved version in {layout.versions} was "
                                 f"replaced by the installed certificate; nothing restored")
        folder = found[0]
    meta, old = files.load_version(folder)
    if old.get("cert") is None or old.get("key") is None:
        raise PermanentError(f"install.check: version {folder} lacks a certificate or key; "
                             "nothing was restored")
    files.switch(layout, old, layout_mod.read_current(layout), "", log)
    log.warning("install_rolled_back", version=str(folder), restored=meta.get("cert_sha256"))
    return folder, str(meta.get("cert_sha256") or layout_mod.leaf_fingerprint(old["cert"] or b""))


class InstallCheck(BaseStep):
    """Check by TLS handshake that ``address`` serves exactly ``cert``; roll back if not.

    Tries ``attempts`` handshakes ``delay`` seconds apart. On success outputs the
    fingerprint. On failure with ``rollback`` (default): restores the previous version
    (see :func:`_restore_previous`), runs ``reload``, and raises PermanentError naming what
    was presented, what was expected and what was restored. Without rollback (or without
    ``dir``, which rollback needs) a mismatch is a PermanentError and an unreachable server
    a StepError. Checking has no side effect, so repeat calls are safe; a rollback restores
    only the version that the installed certificate replaced, and a crash in the middle of
    one is settled (finished) by the next install step on the folder.
    """

    name: ClassVar[str] = "install.check"
    description: ClassVar[str] = "Check the served certificate by TLS handshake; roll back"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "address": {"type": "string"},
            "server_name": {"type": "string"},
            "cert": {"type": "string"},
            "rollback": {"type": "boolean", "default": True},
            "dir": {"type": "string"},
            "previous": {"type": "string"},
            "reload": _ARGV,
            "shell": {"type": "boolean", "default": False},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 10},
            "attempts": {"type": "integer", "minimum": 1, "default": 5},
            "delay": {"type": "number", "minimum": 0, "default": 1.0},
            **_NAME_PROPS,
        },
    }

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        address = str(p.get("address") or "")
        if not address:
            return Done({"skipped": True, "address": ""})
        host, port = tls.split_address(address)
        sni = str(p.get("server_name") or "") or tls.default_server_name(host)
        if not p.get("cert"):
            raise PermanentError("install.check: parameter 'cert' (the expected PEM) is required")
        p = from_store(ctx, p, (("cert", "cert"),))
        expected = layout_mod.leaf_fingerprint(_read(p["cert"], "expected certificate"))
        if not expected:
            raise PermanentError(f"install.check: {p['cert']} holds no PEM certificate")
        rollback = bool(p.get("rollback", True))
        # Without 'dir' there is nothing to put back: the check still runs, and says so.
        layout = layout_mod.Layout.from_params(p) if rollback and p.get("dir") else None
        timeout = float(p.get("timeout") or 10)
        log = ctx.log.bind(step="install.check", address=address, server_name=sni)

        seen = self._handshake(host, port, sni, expected, int(p.get("attempts") or 5),
                               float(p.get("delay", 1.0)), timeout)
        if isinstance(seen, Presented) and seen.fingerprint_sha256 == expected:
            log.info("tls_check_passed", fingerprint_sha256=expected)
            return Done({"fingerprint_sha256": expected, "address": address})
        what = (f"presented {seen.describe()}" if isinstance(seen, Presented)
                else f"no TLS handshake completed ({seen})")
        problem = f"install.check: {address} (SNI {sni}) {what}; expected SHA-256 {expected}"
        log.warning("tls_check_failed", expected=expected,
                    presented=seen.fingerprint_sha256 if isinstance(seen, Presented) else "")
        if layout is None:
            why = "rollback is off" if not rollback else "no 'dir' was given to roll back"
            if isinstance(seen, Presented):
                raise PermanentError(f"{problem}; {why}, nothing was restored")
            raise StepError(f"{problem}; {why}")
        try:
            folder, restored = _restore_previous(layout, p.get("previous"), log)
        except PermanentError as exc:
            raise PermanentError(f"{problem}; rollback failed: {exc}") from exc
        reloaded = ""
        if _command(p.get("reload"), bool(p.get("shell", False))) is not None:
            try:
                reload_server(None, p.get("reload"), shell=bool(p.get("shell", False)),
                              timeout=60.0, log=log, what="install.check")
                reloaded = " and the server was reloaded"
            except StepError as exc:
                reloaded = f", but reloading the server failed: {exc}"
        raise PermanentError(f"{problem}; the previous certificate (SHA-256 {restored}) was "
                             f"restored from {folder}{reloaded}")

    @staticmethod
    def _handshake(host: str, port: int, sni: str | None, expected: str, attempts: int,
                   delay: float, timeout: float) -> Presented | str:
        """The first presented certificate matching ``expected``, else the last result."""
        last: Presented | str = "no attempt made"
        for attempt in range(attempts):
            try:
                last = tls.fetch_certificate(host, port, sni, timeout=timeout)
                if last.fingerprint_sha256 == expected:
                    return last
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                _sleep(delay)
        return last
