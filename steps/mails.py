"""``wait.mails``: wait in one state for several mails, each with its own link (the probes
of a certificate's domains, which the CA sent together).

Each expected mail (``expect``: ``to`` and the link's ``link_path``, optionally ``from``
and ``subject``) is looked for as ``wait.mail`` looks for one, under an idempotency key of
its own (the step's key, ``/`` and the mail's position). The step is Done when every one
is taken; until then it Waits, correlated with the addresses still awaited.

Taking is ``wait.mail``'s (:mod:`certwright.mail.ledger`): the mails found by a call go
with its result (a Wait too) as marks the engine commits with it, and are moved to
``cur/`` after that commit; the memo records which file each expectation took (file
names and addresses, never links: links are secrets and memos are journalled), so a later
call judges that mail again from ``cur/`` instead of looking for it. A crash before the
commit leaves those mails in ``new/``, unmarked, and the next call finds them there.
The state's deadline is the pipeline's to set: the probes' links all live 48 hours from
when they were sent together, so one deadline serves every one of them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from certwright.engine.plugins.step import Done, Mark, StepContext, StepResult, Wait
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
        marks: list[Mark] = []
        afters: list[Callable[[], object]] = []
        for number, expected in enumerate(ctx.params["expect"], start=1):
            sub = dataclasses.replace(
                ctx, params={**shared, **expected},
                idempotency_key=f"{ctx.idempotency_key}/{number}",
                memo=memos.get(str(number)) or {})
            took = str(sub.memo.get("took") or "")
            again = one.taken_again(sub, took) if took else None
            result = again or one.run(dataclasses.replace(sub, memo={}) if took else sub)
            if isinstance(result, Done):
                taken.append((str(expected["to"]), result.outputs))
                marks.extend(result.marks)
                afters.extend([result.after] if result.after else [])
                name = Path(str(result.outputs.get("file") or "")).name.rpartition(":2,")[0]
                memos[str(number)] = {"took": name}
            else:
                waits.append(result)
                pending.append(str(expected["to"]))
                memos[str(number)] = dict(result.memo)
        after = _all(afters) if afters else None
        if not waits:
            return Done({"links": [out.get("link") for _, out in taken],
                         "to": [to for to, _ in taken],
                         "files": [out.get("file") for _, out in taken],
                         "message_ids": [out.get("message_id") for _, out in taken]},
                        marks=tuple(marks), after=after)
        total = len(ctx.params["expect"])
        return Wait(
            description=f"mail to {', '.join(pending)} ({len(taken)} of {total} in)",
            correlations=tuple(c for w in waits for c in w.correlations),
            watch=tuple(dict.fromkeys(p for w in waits for p in w.watch)),
            poll=min((w.poll for w in waits if w.poll is not None), default=None),
            memo={"items": memos, "taken": [to for to, _ in taken]},
            marks=tuple(marks), after=after)


def _all(actions: list[Callable[[], object]]) -> Callable[[], object]:
    """One follow-up that calls each of ``actions`` in turn (the moves of several mails)."""
    def run() -> None:
        for action in actions:
            action()
    return run
