"""``wait.mails``: wait in one state for several mails, each with its own link (the probes
of a certificate's domains, which the CA sent together).

Each expected mail (``expect``: ``to`` and the link's ``link_path``, optionally ``from``
and ``subject``) is looked for as ``wait.mail`` looks for one, under an idempotency key of
its own (the step's key, ``/`` and the mail's position), so the mail intake's processed
log records which mail each expectation took. The step is Done when every one is taken;
until then it Waits, correlated with the addresses still awaited, and its memo records
which are in (addresses, never links: links are secrets and memos are journalled).

Crash safety is ``wait.mail``'s: a mail taken before a crash is found again under its own
key, so a resumed run never waits for a mail it already took, and a call after a mail was
taken (another one's event) takes it again from ``cur/`` instead of from ``new/``.
The state's deadline is the pipeline's to set: the probes' links all live 48 hours from
when they were sent together, so one deadline serves every one of them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from certwright.engine.plugins.step import Done, StepContext, StepResult, Wait
from certwright.steps.mail import WaitMail

_ADDRESS = {"type": "string", "minLength": 3, "maxLength": 320}


class WaitMails:
    """Wait for every mail of ``expect``; outputs ``links`` (one per mail, in order),
    ``to``, ``files`` and ``message_ids``."""

    name: ClassVar[str] = "wait.mails"
    description: ClassVar[str] = "wait for several mails in a Maildir and take the link of each"
    idempotent: ClassVar[bool] = True
    secret_outputs: ClassVar[frozenset[str]] = frozenset({"links"})
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["maildir", "expect"],
        "properties": {
            "maildir": {"type": "string"}, "link_base": {"type": "string"},
            "since": {"type": ["boolean", "string"]}, "require_link": {"type": "boolean"},
            "expect": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
                "type": "object", "additionalProperties": False, "required": ["to"],
                "properties": {"to": _ADDRESS, "link_path": {"type": "string"},
                               "from": {"type": "string", "maxLength": 320},
                               "subject": {"type": "string"}}}},
        },
    }

    def run(self, ctx: StepContext) -> StepResult:
        """Look for each expected mail; Done when all are taken, else Wait for the rest.

        Raises PermanentError for bad parameters (as ``wait.mail`` does)."""
        one = WaitMail()
        shared = {k: v for k, v in ctx.params.items() if k != "expect"}
        memos = dict(ctx.memo.get("items") or {})
        taken: list[tuple[str, Mapping[str, Any]]] = []
        waits: list[Wait] = []
        pending: list[str] = []
        for number, expected in enumerate(ctx.params["expect"], start=1):
            sub = dataclasses.replace(
                ctx, params={**shared, **expected},
                idempotency_key=f"{ctx.idempotency_key}/{number}",
                memo=memos.get(str(number)) or {})
            result = one.run(sub)
            if isinstance(result, Done):
                taken.append((str(expected["to"]), result.outputs))
                memos.pop(str(number), None)
            else:
                waits.append(result)
                pending.append(str(expected["to"]))
                memos[str(number)] = dict(result.memo)
        if not waits:
            return Done({"links": [out.get("link") for _, out in taken],
                         "to": [to for to, _ in taken],
                         "files": [out.get("file") for _, out in taken],
                         "message_ids": [out.get("message_id") for _, out in taken]})
        total = len(ctx.params["expect"])
        return Wait(
            description=f"mail to {', '.join(pending)} ({len(taken)} of {total} in)",
            correlations=tuple(c for w in waits for c in w.correlations),
            watch=tuple(dict.fromkeys(p for w in waits for p in w.watch)),
            poll=min((w.poll for w in waits if w.poll is not None), default=None),
            memo={"items": memos, "taken": [to for to, _ in taken]})
