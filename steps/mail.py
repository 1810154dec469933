"""Steps that wait for mail in a Maildir: ``wait.mail`` (a probe link) and ``notify.check``.

Both scan ``new/`` of a shared Maildir on every call, taking each message in through the
mail intake (:class:`certwright.mail.intake.Intake`, which the daemon's router uses too).
Only mail that claims to be the CA's (:mod:`certwright.mail.claims`: its header, its
sender, a link to the step's ``link_base``) is touched: a person's mail in a shared mailbox
stays in ``new/`` unread. Such a message that fails to parse is hostile for everyone: it
is logged and quarantined. One for our address is judged by the step: taken, moved aside
(suspicious links, duplicate Message-ID), or left alone. Messages for other addresses are
always left alone: other runs may wait for them. The quarantine lives in the state dir
(:mod:`certwright.mail.books`).

Taking is the engine's commit (:mod:`certwright.mail.ledger`): the step returns Done with
the message's marks and the move to ``cur/`` as its ``after``; the engine writes the marks
into the store with the step's ``step_done`` (one commit, no fsync of its own), then moves
the file (not fsynced). Crash safety follows from that one commit: a crash before it
leaves the message in ``new/`` and no mark, and the step, called again, takes it then; a
crash after it leaves the step done and the mark committed, and whoever finds the file
still in ``new/`` (the router, a step) finishes the move from the store's mark. Two steps
racing for one message (two runs, two processes): both may return it, the first commit's
marks win, and the other engine calls its step again, which sees it taken. A run that
took a mail under an older version (its processed log) finds it again by its key.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from certwright.clock import format_instant, parse_instant
from certwright.engine.model.spec import parse_duration
from certwright.engine.plugins.step import Done, StepContext, StepResult, Wait
from certwright.errors import PermanentError
from certwright.events import mail_key
from certwright.mail.books import books_dir
from certwright.mail.claims import Claims
from certwright.mail.intake import Admitted, Foreign, Intake, Refused, parse
from certwright.mail.maildir import Maildir, MessageTooLarge
from certwright.mail.parse import HostileMail, ParsedMail, link_problem, parse_address_list
from certwright.mail.provision import MaildirMissing, MaildirPolicy, prepare_maildir

MAX_JUDGED = 256  # names judged "not for us" remembered in the memo (keeps the memo small)
SINCE_SLACK = timedelta(seconds=1)  # file times are coarser than the clock

_ADDRESS_SCHEMA = {"type": "string", "minLength": 3, "maxLength": 320}


class _Skip:
    """Verdict: not for this step; leave the message where it is."""


class _Aside:
    """Verdict: move the message aside with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


SKIP = _Skip()
Verdict = _Skip | _Aside | dict[str, Any]  # a dict: take the message, these are the outputs


def _single_address(value: str, what: str) -> str:
    try:
        found = parse_address_list(value)
    except HostileMail as exc:
        raise PermanentError(f"parameter {what}: {exc.reason}") from None
    if len(found) != 1:
        raise PermanentError(f"parameter {what}: wants exactly one address, got {value!r}")
    return found[0].lower()


def _regex(value: str | None, what: str) -> re.Pattern[str] | None:
    try:
        return re.compile(value, re.IGNORECASE) if value else None
    except re.error as exc:
        raise PermanentError(f"parameter {what}: bad regular expression: {exc}") from None


class _MailWait:
    """Shared scanning: subclasses decide what to do with a parsed message for ``to``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_schema: ClassVar[Mapping[str, Any]] = {}
    idempotent: ClassVar[bool] = True
    secret_outputs: ClassVar[frozenset[str]] = frozenset()

    def judge(self, ctx: StepContext, name: str, mail: ParsedMail) -> Verdict:
        raise NotImplementedError  # pragma: no cover

    def run(self, ctx: StepContext) -> StepResult:
        """Take the first matching message in ``new/``, or Wait for mail to ``to``.

        Raises PermanentError for bad parameters. Repeat calls are cheap: messages judged
        not for us are remembered in the memo (bounded) and not parsed again.
        """
        path = self._maildir_path(ctx)
        md = Maildir(path, books=books_dir(ctx.state_dir, path))
        to = _single_address(str(ctx.params["to"]), "to")
        log = ctx.log.bind(step=self.name, to=to, maildir=str(md.path))
        memo = dict(ctx.memo)
        started = str(memo.get("started") or format_instant(ctx.clock.now()))
        try:  # an MTA's Maildir is not ours to create (see mail.provision)
            prepare_maildir(md, state_dir=ctx.state_dir, policy=MaildirPolicy())
        except MaildirMissing as exc:
            log.warning("maildir_missing", error=str(exc))
            return Wait(description=f"mail to {to}: {exc}", correlations=(mail_key(to),),
                        poll=30.0, memo={**memo, "started": started})
        intake = Intake(md, log, self._claims(ctx), ctx.processed)
        recovered = self._recover(ctx, intake, log)
        if recovered is not None:
            return recovered
        cutoff = self._cutoff(ctx, started)
        judged = [str(n) for n in memo.get("judged", [])]
        known = set(judged)
        names = md.list_new()
        hinted = str((ctx.event.payload or {}).get("file") or "") if ctx.event else ""
        if hinted in names:  # the message the router offered us: look at it first
            names.remove(hinted)
            names.insert(0, hinted)
        for name in names:
            if name in known:
                continue
            result = self._consider(ctx, intake, name, to, cutoff, log)
            if isinstance(result, Done):
                return result
            if result is SKIP:
                judged.append(name)
        present = set(names)
        judged = [n for n in judged if n in present][-MAX_JUDGED:]
        return Wait(description=f"mail to {to} in {md.path}", correlations=(mail_key(to),),
                    watch=(str(md.new),), poll=30.0,
                    memo={"started": started, "judged": judged})

    @staticmethod
    def _claims(ctx: StepContext) -> Claims:
        """The CA's mail, as this step knows it: its link base and sender (see mail.claims)."""
        sender = str(ctx.params.get("from") or "").strip()
        if sender and "@" not in sender:
            sender = "@" + sender
        return Claims.of(senders=(sender,), origins=(str(ctx.params.get("link_base") or ""),))

    def _maildir_path(self, ctx: StepContext) -> Path:
        path = Path(str(ctx.params["maildir"])).expanduser()
        return path if path.is_absolute() else ctx.state_dir / path

    def _cutoff(self, ctx: StepContext, started: str) -> datetime | None:
        since = ctx.params.get("since")
        if since is None or since is False:
            return None
        try:
            when = parse_instant(started if since is True else str(since))
        except ValueError:
            raise PermanentError(f"parameter since: not an ISO 8601 instant: {since!r}") from None
        return when - SINCE_SLACK

    def taken_again(self, ctx: StepContext, name: str) -> Done | None:
        """As :meth:`retake`, for a caller with no intake of its own (``wait.mails``)."""
        path = self._maildir_path(ctx)
        md = Maildir(path, books=books_dir(ctx.state_dir, path))
        log = ctx.log.bind(step=self.name, maildir=str(md.path))
        return self.retake(ctx, Intake(md, log, self._claims(ctx), ctx.processed), name, log)

    def _recover(self, ctx: StepContext, intake: Intake, log: Any) -> Done | None:
        """The message this step (same idempotency key) took under an older version."""
        found = intake.ledger.find_by_key(ctx.idempotency_key)
        if found is None:
            return None
        return self.retake(ctx, intake, found[1], log)

    def retake(self, ctx: StepContext, intake: Intake, name: str, log: Any) -> Done | None:
        """The message ``name`` this step took already, judged again from ``cur/`` (moved
        there first if its move was not done); None when it cannot be read again."""
        md = intake.md
        try:
            cur = md.move_to_cur(name)
            mail = parse(md.read(cur))
        except (FileNotFoundError, HostileMail, MessageTooLarge) as exc:
            log.warning("mail_recovery_failed", file=name, error=str(exc))
            return None
        verdict = self.judge(ctx, name, mail)
        if not isinstance(verdict, dict):
            return None
        log.info("mail_taken_again", file=cur)
        return Done({**verdict, "file": str(md.cur / cur)})

    @staticmethod
    def _log_if_vanished(refused: Refused, name: str, log: Any) -> None:
        """What the steps add to a move aside: a line when the message had vanished."""
        if not refused.moved:
            log.info("mail_vanished", file=name)

    def _consider(self, ctx: StepContext, intake: Intake, name: str, to: str,
                  cutoff: datetime | None, log: Any) -> Done | _Skip | None:
        """Judge one message; Done if taken, SKIP if left alone, None if gone or aside."""
        md = intake.md
        try:
            if cutoff is not None:
                mtime = (md.new / name).stat().st_mtime
                if datetime.fromtimestamp(mtime, UTC) < cutoff:
                    return SKIP
        except FileNotFoundError:
            return None  # another process took it
        admitted = intake.admit(name)  # parsed once per process; hostile mail moved aside
        if isinstance(admitted, Foreign):
            return SKIP  # does not parse and is not the CA's: someone else's, left alone
        if not isinstance(admitted, Admitted):
            if admitted is not None:
                self._log_if_vanished(admitted, name, log)
            return None
        mail, message_id = admitted.mail, admitted.message_id
        if to not in {a.lower() for a in mail.to_addrs + mail.delivered_to}:
            return SKIP  # other runs may wait for it: no processed-log check of ours
        if intake.claims.claim(mail) is None:
            return SKIP  # a person's mail in a shared mailbox: never touched
        if intake.finish_taken(name, message_id, own_key=ctx.idempotency_key):
            return None  # taken by another step; its move was not done, and is finished now
        refused = intake.refuse_duplicate(name, message_id)
        if refused is not None:
            self._log_if_vanished(refused, name, log)
            return None
        verdict = self.judge(ctx, name, mail)
        if isinstance(verdict, _Skip):
            return SKIP
        if isinstance(verdict, _Aside):
            self._log_if_vanished(intake.set_aside(name, verdict.reason), name, log)
            return None
        cur = md.cur_name(name)
        log.info("mail_taken", file=cur, message_id=message_id, sender=mail.from_addr)
        return Done({**verdict, "file": str(md.cur / cur)},
                    marks=intake.ledger.marks(message_id, name),
                    after=partial(_move_taken, md, name, log))


def _move_taken(md: Maildir, name: str, log: Any) -> None:
    """After the take's commit: the message to ``cur/``, unsynced (the store's marks are the
    durable record; a move undone is finished by whoever finds it in ``new/``)."""
    try:
        md.move_to_cur(name, sync=False)
    except FileNotFoundError:
        log.warning("mail_vanished", file=name)


class WaitMail(_MailWait):
    """``wait.mail``: wait for a mail to ``to`` and take its (safe) link."""

    name = "wait.mail"
    description = "wait for a mail to an address in a Maildir and take the link in it"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["maildir", "to"],
        "properties": {
            "maildir": {"type": "string"}, "to": _ADDRESS_SCHEMA,
            "from": {"type": "string", "maxLength": 320},
            "subject": {"type": "string"}, "link_base": {"type": "string"},
            "link_path": {"type": "string"}, "since": {"type": ["boolean", "string"]},
            "require_link": {"type": "boolean"},
        },
    }
    secret_outputs = frozenset({"link", "links"})

    def judge(self, ctx: StepContext, name: str, mail: ParsedMail) -> Verdict:
        params = ctx.params
        sender = str(params.get("from") or "").strip().lower()
        if sender and (mail.from_addr.lower() if "@" in sender
                       else mail.from_addr.rpartition("@")[2].lower()) != sender:
            return SKIP
        subject = _regex(params.get("subject"), "subject")
        if subject and not subject.search(mail.subject):
            return SKIP
        if mail.suspicious_links:  # a lure: neither the shown nor the real URL is followed
            ctx.log.warning("mail_link_suspicious", file=name,
                            reason="HTML link text and target differ")
            return _Aside("suspicious: an HTML link shows one URL and points to another ("
                          + ", ".join(u[:100] for u in mail.suspicious_links[:4]) + ")")
        base = params.get("link_base")
        path = str(params.get("link_path") or "")
        links = list(mail.links)
        if base:
            problems = {link: link_problem(link, str(base), path) for link in links}
            links = [link for link, problem in problems.items() if problem is None]
            if not links and any(link_problem(link, str(base)) is None for link in problems):
                return SKIP  # right CA, another request's path: another run's mail
            for link, problem in problems.items():
                if problem is not None and not links:
                    ctx.log.warning("mail_link_suspicious", file=name,
                                    host=urlsplit(link).hostname, reason=problem)
        if params.get("require_link", bool(base)) and not links:
            if mail.links:
                return _Aside(f"suspicious: no link passes the check for {base}{path}")
            return _Aside("no link in the mail")
        return {"link": links[0] if links else None, "links": links,
                "message_id": mail.message_id, "subject": mail.subject,
                "from": mail.from_addr}


_SERIAL = re.compile(r"^[ \t]*Serial(?:[ \t]+Number)?[ \t]*:[ \t]*([0-9A-Fa-f:]+)[ \t]*$",
                     re.IGNORECASE | re.MULTILINE)
_FINGERPRINT = re.compile(r"^[ \t]*SHA-?256[ \t]+Fingerprint[ \t]*:[ \t]*([0-9A-Fa-f:]+)[ \t]*$",
                          re.IGNORECASE | re.MULTILINE)


def _hex(value: str) -> str:
    return value.replace(":", "").strip().lower()


class NotifyCheck(_MailWait):
    """``notify.check``: wait for the CA's issuance mail and check serial and fingerprint.

    The mail for this certificate is the one naming its serial (mail naming other serials
    belongs to other runs of the account and is left alone). Done ``{matched: true,
    message_id}`` when it names exactly this serial and SHA-256 fingerprint; otherwise
    (another fingerprint, or more serials) logs ``issuance_mismatch`` (error) and is Done
    ``{matched: false, alarm, message_id}``. The mail goes to ``cur/`` either way. No
    such mail within ``within``: Done ``{matched: false, alarm}`` (the CA's cross-check
    cannot pass on a mail that never came).
    """

    name = "notify.check"
    description = "wait for the CA's issuance mail and check it names this certificate"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "required": ["maildir", "to", "serial", "fingerprint"],
        "properties": {
            "maildir": {"type": "string"}, "to": _ADDRESS_SCHEMA,
            "serial": {"type": "string", "pattern": "^[0-9A-Fa-f:]+$"},
            "fingerprint": {"type": "string", "pattern": "^[0-9A-Fa-f:]+$"},
            "subject": {"type": "string", "default": "certificate"},
            "link_base": {"type": "string"},
            "within": {"type": ["string", "number"], "default": "2d"},
        },
    }

    def run(self, ctx: StepContext) -> StepResult:
        """As :meth:`_MailWait.run`, with a deadline: no mail for this serial ``within``
        (default 2d) of the first call is Done ``{matched: false, alarm}``, never a pass."""
        within = ctx.params.get("within", "2d")
        try:
            seconds = parse_duration(within)
        except ValueError as exc:
            raise PermanentError(f"parameter within: {exc}") from None
        result = super().run(ctx)
        if not isinstance(result, Wait):
            return result
        deadline = parse_instant(str(result.memo["started"])) + timedelta(seconds=seconds)
        if ctx.clock.now() < deadline:
            return replace(result, until=deadline)
        serial = _hex(str(ctx.params["serial"]))
        ctx.log.error("issuance_mail_missing", serial=serial, within=str(within))
        return Done({"matched": False, "message_id": None,
                     "alarm": f"no issuance mail for serial {serial} within {within}"})

    def judge(self, ctx: StepContext, name: str, mail: ParsedMail) -> Verdict:
        subject = _regex(str(ctx.params.get("subject") or "certificate"), "subject")
        if subject and not subject.search(mail.subject):
            return SKIP
        base = ctx.params.get("link_base")
        for link in mail.links if base else []:
            problem = link_problem(link, str(base))
            if problem:
                ctx.log.warning("mail_link_suspicious", file=name,
                                host=urlsplit(link).hostname, reason=problem)
        want_serial, want_fp = _hex(str(ctx.params["serial"])), _hex(str(ctx.params["fingerprint"]))
        serials = {_hex(s) for s in _SERIAL.findall(mail.text)}
        fps = {_hex(f) for f in _FINGERPRINT.findall(mail.text)}
        if want_serial.lstrip("0") not in {s.lstrip("0") for s in serials}:
            # Another certificate's mail (runs of one account share its mailbox): leave it
            # for the run it belongs to.
            ctx.log.debug("issuance_mail_not_ours", file=name, serials=sorted(serials))
            return SKIP
        problems = []
        if len(serials) > 1:
            problems.append(f"serial: expected {want_serial}, mail names "
                            f"{', '.join(sorted(serials))}")
        if fps != {want_fp}:
            problems.append(f"SHA-256 fingerprint: expected {want_fp}, mail names "
                            f"{', '.join(sorted(fps)) or 'none'}")
        if not problems:
            ctx.log.info("issuance_confirmed", file=name, serial=want_serial)
            return {"matched": True, "message_id": mail.message_id}
        ctx.log.error("issuance_mismatch", file=name, expected_serial=want_serial,
                      found_serials=sorted(serials), expected_fingerprint=want_fp,
                      found_fingerprints=sorted(fps))
        return {"matched": False, "message_id": mail.message_id,
                "alarm": "CA issuance mail does not match this certificate: "
                         + "; ".join(problems)}
