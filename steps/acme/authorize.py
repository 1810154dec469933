"""The ``acme.challenge`` step: present the order's challenges, answer them, poll.

It reloads the order from ``run_dir/acme-order.json`` and the presented answers from
``run_dir/acme-challenges.json``, so a repeat call (after a crash too) skips valid
authorizations, presents the same answers again and answers only pending challenges.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from acme import errors as acme_errors
from acme import messages

from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.acme.challenge import (
    Presented,
    load_records,
    merge_records,
    present,
    record_name,
    save_records,
    unpresent,
    wait_propagation,
)
from certwright.steps.acme.client import (
    AcmeSession,
    as_step_error,
    check_params,
    session_for,
    step_schema,
)
from certwright.steps.acme.issue import Answer, load_order_url, poll_until, sleep_of
from certwright.steps.acme.kept import account_of, restore_order
from certwright.steps.acme.network import problem_text

__all__ = ["Challenge"]


class Challenge(BaseStep):
    """Present and answer the order's challenges, then poll until every authorization is valid.

    ``type: http-01`` serves answers from the built-in responder on ``http_address`` or
    from files in ``webroot``; ``type: dns-01`` runs ``dns_hook`` (then waits for
    propagation) and ``dns_cleanup_hook`` afterwards. With ``wait: false`` it only presents
    (for a pipeline state "challenges presented"); the next call with ``wait: true``
    presents again (idempotently), answers and polls.

    Raises PermanentError with the CA's problem (type, detail, identifier) when an
    authorization turns invalid, StepError when polling exceeds ``timeout`` seconds.
    ``cleanup(ctx)`` takes the answers down; ``run`` calls it once the authorizations
    settled, and it is safe after a crash (it reads ``run_dir/acme-challenges.json``).
    """

    name: ClassVar[str] = "acme.challenge"
    description: ClassVar[str] = "answer ACME challenges and wait for valid authorizations"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = step_schema({
        "type": {"enum": ["http-01", "dns-01"], "default": "http-01"},
        "http_address": {"type": "string", "default": "0.0.0.0:80"},
        "webroot": {"type": "string"},
        "dns_hook": {"type": ["array", "string"], "items": {"type": "string"},
                     "description": "argv (or a string split shell-like) adding the TXT record"},
        "dns_cleanup_hook": {"type": ["array", "string"], "items": {"type": "string"}},
        "propagation_wait": {"type": "number", "minimum": 0, "default": 30},
        "dns_resolver": {"type": "string"},
        "wait": {"type": "boolean", "default": True},
        "timeout": {"type": "number", "minimum": 1, "default": 300},
        "max_retry_after": {"type": "number", "minimum": 0, "default": 10},
    })

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        ctype = str(p.get("type", "http-01"))
        if ctype == "dns-01":
            check_params(p, ("dns_hook",))
        account = account_of(ctx, p)  # back from the store on another host (kept.py)
        session = session_for(ctx.services, p, account, ctx.clock.now())
        restore_order(ctx)
        order_url = load_order_url(ctx.run_dir)
        log = ctx.log.bind(step=self.name, order_url=order_url, type=ctype)
        doing = f"answering {ctype} challenges of order {order_url}"
        try:
            order = session.order(order_url)
            pending = self._pending(session, order, ctype)
            fresh = [self._record(ctx, account.key, ident, chall, ctype)
                     for ident, chall in pending]
            records = merge_records(load_records(ctx.run_dir), fresh)
            save_records(ctx.run_dir, records)  # before presenting: cleanup must find them
            present(ctx.run_dir, p, records)
            wait_propagation(records, p, sleep_of(ctx))
            log.info("acme_challenges_presented", count=len(records))
            if not p.get("wait", True):
                return Done({"presented": len(fresh), "status": "presented"})
            answered = valid = 0
            for _ident, chall in pending:
                if chall.status.name == "pending":
                    valid += _says_valid(session.post(chall.uri,
                                                      chall.chall.response(account.key)))
                    answered += 1
            log.info("acme_challenges_answered", count=len(pending))
            # A CA that validates as it is answered (the built-in one) says so in its
            # answer: a valid challenge makes its authorization valid (RFC 8555 section
            # 7.1.6), so with every one valid there is nothing to poll. Else the CA has
            # not validated yet, and the first poll waits first.
            if not (answered and valid == len(pending)):
                self._poll(ctx, session, order, (False, None) if answered else None)
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            self.cleanup(ctx)
            raise as_step_error(exc, doing) from exc
        except BaseException:
            self.cleanup(ctx)
            raise
        problems = unpresent(ctx.run_dir, p)
        log.info("acme_authorizations_valid", cleanup_problems=problems or None)
        return Done({"presented": len(fresh), "status": "valid"})

    def cleanup(self, ctx: StepContext) -> None:
        """Take down every answer this run presented; never raises."""
        problems = unpresent(ctx.run_dir, ctx.params)
        if problems:
            ctx.log.warning("acme_challenge_cleanup_failed", problems=problems)

    @staticmethod
    def _pending(session: AcmeSession, order: messages.Order, ctype: str) -> list[tuple[str, Any]]:
        """(identifier, challenge body) for each authorization that still needs answering."""
        out = []
        for url in order.authorizations:
            authz, _ = session.authorization(url)
            ident = authz.identifier.value
            status = authz.status.name
            if status == "valid":
                continue
            if status != "pending":
                raise PermanentError(_authz_failure(url, authz))
            chall = next((c for c in authz.challenges if c.chall.typ == ctype), None)
            if chall is None:
                offered = ", ".join(c.chall.typ for c in authz.challenges)
                raise PermanentError(f"the CA offers no {ctype} challenge for {ident} "
                                     f"(offered: {offered})")
            out.append((("*." + ident) if authz.wildcard else ident, chall))
        return out

    @staticmethod
    def _record(ctx: StepContext, key: Any, ident: str, chall: Any, ctype: str) -> Presented:
        token = chall.chall.encode("token")
        if ctype == "dns-01":
            return Presented(ident, ctype, token, "dns", name=record_name(ident),
                             value=chall.chall.validation(key))
        keyauth = chall.chall.key_authorization(key)
        if ctx.params.get("webroot"):
            return Presented(ident, ctype, token, "webroot", keyauth,
                             webroot=str(ctx.params["webroot"]))
        return Presented(ident, ctype, token, "responder", keyauth,
                         address=str(ctx.params.get("http_address", "0.0.0.0:80")))

    @staticmethod
    def _poll(ctx: StepContext, session: AcmeSession, order: messages.Order,
              first: Answer | None) -> None:
        def check() -> Answer:
            last = None
            for url in order.authorizations:
                authz, resp = session.authorization(url)
                if authz.status.name == "valid":
                    continue
                if authz.status.name != "pending":
                    raise PermanentError(_authz_failure(url, authz))
                return False, resp
            return True, last

        poll_until(ctx, check, "authorizations of the order to become valid", first)


def _says_valid(resp: requests.Response) -> bool:
    """Whether the CA's answer to a challenge says it is valid already."""
    try:
        return bool(resp.json().get("status") == "valid")
    except (ValueError, AttributeError):
        return False


def _authz_failure(url: str, authz: messages.Authorization) -> str:
    ident = authz.identifier.value
    errors = [problem_text(c.error) for c in authz.challenges if c.error is not None]
    detail = "; ".join(errors) or "no problem document"
    return (f"authorization {url} for identifier {ident} is {authz.status.name}: "
            f"the CA reported {detail}")
