"""The issuing half of the ACME steps: ``acme.finalize`` and ``acme.download``, and polling.

Polling schedule (:func:`poll_until`): when the CA sends ``Retry-After`` we wait that long
in place if it is at most ``max_retry_after`` seconds (default 10); a longer one ends the
step with a retryable StepError carrying it, so the run backs off durably (the engine
honours ``retry_after``) instead of holding a worker thread, and the next attempt only
polls again. Without it we start at 0.02 s and double up to 2 s: a test CA answers within
milliseconds and a public one within seconds, so this is quick on both without hammering.
An answer the step already holds (the order finalize returned, or "pending" right after
answering the challenges) counts as the first poll, so the step does not ask again at once
for what the CA has just said; a resumed step holds none and asks the CA first.
Polling stops after ``timeout`` seconds (default 300) with a retryable StepError.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import requests
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certwright.atomic import write_many_atomic
from certwright.clock import format_instant, monotonic
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError, StepError
from certwright.steps._kept import keep, restore
from certwright.steps.acme.client import (
    AcmeSession,
    as_step_error,
    check_params,
    read_json,
    session_for,
    step_schema,
    write_json,
)
from certwright.steps.acme.kept import ORDER_FILE, account_of, keep_order, restore_order
from certwright.steps.acme.network import problem_text, retry_after_seconds
from certwright.steps.acme.renewal import AriError, fetch_renewal_info

PEM_CHAIN = "application/pem-certificate-chain"


def sleep_of(ctx: StepContext) -> Callable[[float], None]:
    """The sleep function to use: ``ctx.services["sleep"]`` (tests) or ``time.sleep``."""
    sleep: Callable[[float], None] = ctx.services.get("sleep", time.sleep)
    return sleep


def keep_certificate_url(run_dir: Path, order_url: str, certificate_url: str) -> None:
    """Note the valid order's certificate URL beside the run's order, so that the download
    need not read the order again (one request fewer per certificate)."""
    saved = read_json(run_dir / ORDER_FILE)
    if saved and saved.get("order_url") == order_url:
        write_json(run_dir / ORDER_FILE, {**saved, "certificate_url": certificate_url})


def kept_certificate_url(run_dir: Path, order_url: str) -> str | None:
    """The certificate URL :func:`keep_certificate_url` noted for ``order_url``, or None."""
    saved = read_json(run_dir / ORDER_FILE) or {}
    found = saved.get("certificate_url") if saved.get("order_url") == order_url else None
    return str(found) if found else None


def load_order_url(run_dir: Path) -> str:
    """The run's order URL from ``run_dir/acme-order.json``; PermanentError when missing."""
    saved = read_json(run_dir / ORDER_FILE)
    if not saved or not saved.get("order_url"):
        raise PermanentError(f"no ACME order in {run_dir}: run acme.order first")
    return str(saved["order_url"])


Answer = tuple[bool, requests.Response | None]
"""A poll's outcome: done or not, and the response (for its Retry-After), if any."""

FIRST_BACKOFF = 0.02  # seconds; doubled after each poll up to MAX_BACKOFF
MAX_BACKOFF = 2.0


def poll_until(ctx: StepContext, check: Callable[[], Answer], what: str,
               first: Answer | None = None) -> None:
    """Call ``check`` until it returns (True, _), sleeping per the schedule in the module doc.

    ``first``, when given, is an answer already in hand used in place of the first call.
    Raises StepError (retryable) after ``timeout`` seconds; exceptions of ``check`` pass.
    """
    timeout = float(ctx.params.get("timeout", 300))
    cap = float(ctx.params.get("max_retry_after", 10))
    sleep = sleep_of(ctx)
    deadline = monotonic() + timeout
    backoff = FIRST_BACKOFF
    while True:
        done, resp = first if first is not None else check()
        first = None
        if done:
            return
        delay = backoff
        if resp is not None and "Retry-After" in resp.headers:
            delay = retry_after_seconds(resp, backoff)
            if delay > cap:
                raise StepError(f"the CA asks to poll {what} again in {delay:g}s (more than "
                                f"{cap:g}s): backing off until then", retry_after=delay)
        delay = max(0.0, min(delay, deadline - monotonic()))
        if monotonic() >= deadline:
            raise StepError(f"gave up waiting for {what} after {timeout:g}s")
        sleep(delay)
        backoff = min(backoff * 2, MAX_BACKOFF)


def open_session(ctx: StepContext) -> AcmeSession:
    """The (cached) session of the stored account; PermanentError if none is registered."""
    account = account_of(ctx, ctx.params)  # back from the store on another host (kept.py)
    if not account.url:
        raise PermanentError("no registered ACME account: run acme.account first")
    return session_for(ctx.services, ctx.params, account, ctx.clock.now())


class Finalize(BaseStep):
    """Send the CSR to finalize the run's order, then poll until the order is valid.

    Outputs ``order_url``, ``status`` ("valid") and ``certificate_url``. A repeat call (or a
    call after a crash) on a processing or valid order only polls; the CSR is sent only to
    a ``ready`` order. PermanentError when the order is invalid (with the CA's problem),
    still pending (challenges not done), or the CSR names other identifiers than the order.
    """

    name: ClassVar[str] = "acme.finalize"
    description: ClassVar[str] = "finalize the ACME order with a CSR"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = step_schema({
        "csr": {"type": "string", "minLength": 1, "description": "path of a PEM CSR"},
        "timeout": {"type": "number", "minimum": 1, "default": 300},
        "max_retry_after": {"type": "number", "minimum": 0, "default": 10},
    }, ("directory", "csr"))

    def run(self, ctx: StepContext) -> Done:
        check_params(ctx.params, ("directory", "csr"))
        csr_path = restore(ctx, ctx.params["csr"], "csr")
        try:
            csr = x509.load_pem_x509_csr(csr_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot read the CSR {csr_path}: {exc}") from exc
        session = open_session(ctx)
        restore_order(ctx)
        url = load_order_url(ctx.run_dir)
        log = ctx.log.bind(step=self.name, order_url=url)
        try:
            order = session.order(url)
            status = order.status.name
            if status == "pending":
                raise PermanentError(f"order {url} is still pending: its authorizations are not "
                                     "valid (run acme.challenge first)")
            final: dict[str, messages.Order] = {}

            def judge(resp: requests.Response) -> Answer:
                body = messages.Order.from_json(resp.json())
                if body.status.name == "invalid":
                    problem = problem_text(body.error) if body.error else "no problem document"
                    raise PermanentError(f"order {url} is invalid: the CA reported {problem}")
                final["order"] = body
                return body.status.name == "valid" and body.certificate is not None, resp

            first = None
            if status == "ready":
                self._check_names(csr, order, csr_path)
                try:
                    # finalize answers with the order: the first poll, already in hand
                    first = judge(session.post(order.finalize,
                                               messages.CertificateRequest(csr=csr)))
                    log.info("acme_order_finalizing")
                except messages.Error as err:
                    if err.code != "orderNotReady":  # a concurrent finalize got there first
                        raise
            poll_until(ctx, lambda: judge(session.post(url, None)), f"order {url} to be issued",
                       first)
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise as_step_error(exc, f"finalizing order {url} with {csr_path}") from exc
        log.info("acme_order_valid", certificate_url=final["order"].certificate)
        keep_certificate_url(ctx.run_dir, url, str(final["order"].certificate))
        return Done({"order_url": url, "status": "valid",
                     "certificate_url": final["order"].certificate}, kept=keep_order(ctx))

    @staticmethod
    def _check_names(csr: x509.CertificateSigningRequest, order: messages.Order,
                     where: Path) -> None:
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
            names |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            names = {str(a.value).lower()
                     for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        wanted = {i.value.lower() for i in order.identifiers}
        if names != wanted:
            raise PermanentError(f"CSR {where} names {sorted(names)} but the order is for "
                                 f"{sorted(wanted)}")


def read_renewal_info(session: AcmeSession, leaf: x509.Certificate,
                      ctx: StepContext) -> dict[str, Any] | None:
    """The CA's renewal window for ``leaf`` (RFC 9773), or None: the CA has no
    ``renewalInfo`` (Pebble 2.4: the 1/3-lifetime rule stays), or reading it failed (logged;
    the daemon asks again later, and a certificate is never refused for it)."""
    try:
        base = str(session.directory["renewalInfo"])
    except KeyError:
        return None
    verify: str | bool = str(ctx.params["ca_bundle"]) if ctx.params.get("ca_bundle") else True
    try:
        ari = fetch_renewal_info(base, leaf, ctx.clock.now(), verify=verify)
    except AriError as exc:
        ctx.log.bind(step="acme.download").warning("acme_renewal_info_failed", error=str(exc))
        return None
    ctx.log.bind(step="acme.download").info("acme_renewal_info", **ari["suggestedWindow"])
    return ari


def _issuer_cns(chain: list[x509.Certificate]) -> list[str]:
    out = []
    for cert in reversed(chain):  # topmost first, as certbot's preferred-chain does
        out += [str(a.value) for a in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return out


class Download(BaseStep):
    """Download the certificate of the run's valid order into ``out_dir`` (default run_dir).

    Writes ``cert.pem`` (leaf), ``chain.pem`` (intermediates) and ``fullchain.pem``;
    ``preferred_chain`` picks the alternate chain whose topmost issuer CN matches (else the
    default chain). Outputs ``cert_path``, ``chain_path``, ``fullchain_path``, ``serial``
    (hex), ``fingerprint_sha256`` (hex), ``not_after`` (ISO UTC). Repeat calls rewrite the
    same files. PermanentError when the order is not valid.
    """

    name: ClassVar[str] = "acme.download"
    description: ClassVar[str] = "download the issued certificate and its chain"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = step_schema({
        "out_dir": {"type": "string"},
        "preferred_chain": {"type": "string", "description": "issuer CN of the chain's top"},
    }, ("directory",))

    def run(self, ctx: StepContext) -> Done:
        session = open_session(ctx)
        restore_order(ctx)
        url = load_order_url(ctx.run_dir)
        headers = {"Content-Type": session.net.JOSE_CONTENT_TYPE, "Accept": PEM_CHAIN}
        try:
            resp = self._kept(session, kept_certificate_url(ctx.run_dir, url), headers)
            if resp is None:
                order = session.order(url)
                if order.status.name != "valid" or not order.certificate:
                    raise PermanentError(f"order {url} is {order.status.name}, not valid: "
                                         "nothing to download (run acme.finalize first)")
                resp = session.post(order.certificate, None, headers=headers)
            chains = [resp.text]
            preferred = ctx.params.get("preferred_chain")
            if preferred:
                links = requests.utils.parse_header_links(resp.headers.get("Link", ""))
                chains.extend(session.post(link["url"], None, headers=headers).text
                              for link in links
                              if link.get("rel") == "alternate" and link.get("url"))
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise as_step_error(exc, f"downloading the certificate of order {url}") from exc
        parsed = [x509.load_pem_x509_certificates(c.encode()) for c in chains]
        chosen = parsed[0]
        if preferred:
            chosen = next((c for c in parsed if preferred in _issuer_cns(c)), parsed[0])
        leaf, intermediates = chosen[0], chosen[1:]
        out = Path(str(ctx.params.get("out_dir") or ctx.run_dir))
        pem = serialization.Encoding.PEM
        cert_path, chain_path = out / "cert.pem", out / "chain.pem"
        full_path = out / "fullchain.pem"
        try:
            out.mkdir(parents=True, exist_ok=True)
            # public files, in a folder the user may have named (a symlinked one included)
            write_many_atomic([(cert_path, leaf.public_bytes(pem), 0o644),
                               (chain_path, b"".join(c.public_bytes(pem) for c in intermediates),
                                0o644),
                               (full_path, b"".join(c.public_bytes(pem) for c in chosen), 0o644)],
                              follow_folder=True)
        except OSError as exc:
            raise StepError(f"downloaded the certificate of order {url} but could not write "
                            f"it into {out}: {exc}") from exc
        outputs: dict[str, Any] = {
            "cert_path": str(cert_path), "chain_path": str(chain_path),
            "fullchain_path": str(full_path), "serial": format(leaf.serial_number, "x"),
            "fingerprint_sha256": leaf.fingerprint(hashes.SHA256()).hex(),
            "not_after": format_instant(leaf.not_valid_after_utc)}
        log = ctx.log.bind(step=self.name)
        log.info("acme_certificate_downloaded", order_url=url, serial=outputs["serial"])
        ari = read_renewal_info(session, leaf, ctx)
        if ari is not None:
            outputs["ari"] = {**ari, "serial": outputs["serial"]}
        return Done(outputs, kept=keep(ctx, cert_path, "cert") + keep(ctx, chain_path, "chain")
                    + keep(ctx, full_path, "chain"))

    @staticmethod
    def _kept(session: AcmeSession, url: str | None,
              headers: Mapping[str, str]) -> requests.Response | None:
        """The certificate from the URL finalize noted; None when there is none or the CA
        does not know it (404): then the order says where it is."""
        if url is None:
            return None
        try:
            return session.post(url, None, headers=dict(headers))
        except (messages.Error, acme_errors.ClientError):
            if session.net.last_status() in (404, 410):
                return None
            raise
