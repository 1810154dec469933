"""wait.mail and notify.check against a real Maildir fed by the real SMTP receiver."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from certwright.ca.mailserver import MailServer
from certwright.clock import FakeClock, SystemClock
from certwright.engine.plugins.step import Done, StepContext, Wait
from certwright.events import mail_key
from certwright.mail.books import books_dir
from certwright.mail.maildir import DEFAULT_MAX_READ, Maildir, ProcessedLog
from certwright.state.sqlite import SQLiteStore
from certwright.steps.mail import NotifyCheck, WaitMail
from tests.support.mail import (
    CA_BASE,
    PROBE_PATH,
    big_body,
    commit_take,
    html_lure,
    issuance_mail,
    nested_multipart,
    people_truncated,
    person_mail,
    probe_mail,
    send,
    truncated_mime,
)

TO = "postmaster@example.test"
LINK = f"{CA_BASE}{PROBE_PATH}?token=t0k3n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    with MailServer(domains=["example.test"], maildir=tmp_path / "mail") as srv:
        yield srv


_STORES: dict[Path, SQLiteStore] = {}


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _STORES:
        _STORES.popitem()[1].close()


def _store(tmp_path: Path) -> SQLiteStore:
    """The test's store (a real SQLite file), whose marks say which messages were taken."""
    if tmp_path not in _STORES:
        _STORES[tmp_path] = SQLiteStore(tmp_path / "certwright.sqlite")
    return _STORES[tmp_path]


def settled(tmp_path: Path, result: Any) -> Any:
    """The step's result after the engine's part: its marks committed, then its move."""
    if isinstance(result, Done | Wait):
        assert commit_take(_store(tmp_path), result)
    return result


def ctx(tmp_path: Path, **params: Any) -> StepContext:
    base = {"maildir": str(tmp_path / "mail"), "to": TO, "link_base": CA_BASE,
            "link_path": PROBE_PATH}
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="w",
                       idempotency_key="r1:1:0", attempt=1, params={**base, **params},
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock(),
                       processed=_store(tmp_path).is_processed)


def again(context: StepContext, result: Any) -> StepContext:
    """The context of the next call, carrying the memo the step left."""
    assert isinstance(result, Wait)
    return replace(context, memo=result.memo)


def quarantined(tmp_path: Path) -> dict[str, str]:
    """Quarantined message name -> its reason."""
    reasons = books_dir(tmp_path, tmp_path / "mail") / ".quarantine" / "reasons"
    if not reasons.exists():
        return {}
    return {p.name[: -len(".reason")]: p.read_text().strip() for p in reasons.iterdir()}


def test_waits_then_takes_the_link_from_smtp(tmp_path: Path, server: MailServer) -> None:
    """Wait first (with mail correlation and watch on new/), then Done with the link."""
    step, context = WaitMail(), ctx(tmp_path)
    first = settled(tmp_path, step.run(context))
    assert isinstance(first, Wait)
    assert first.correlations == (mail_key(TO),)
    assert first.watch == (str(tmp_path / "mail" / "new"),)
    assert first.poll == 30.0 and "started" in first.memo
    send(server.port, probe_mail(message_id="<probe1@ca.example>"))
    done = settled(tmp_path, step.run(again(context, first)))
    assert isinstance(done, Done)
    assert done.outputs["link"] == LINK and done.outputs["links"] == [LINK]
    assert done.outputs["message_id"] == "<probe1@ca.example>"
    assert done.outputs["from"] == "ca@ca.example"
    assert Path(done.outputs["file"]).parent == tmp_path / "mail" / "cur"
    assert Maildir(tmp_path / "mail").list_new() == []
    assert {"link", "links"} <= WaitMail.secret_outputs


def test_repeat_after_take_returns_same_message(tmp_path: Path, server: MailServer) -> None:
    """Called again with the same key after a crash before the engine's commit (its marks
    lost with it, the mail never moved), it gives the same mail."""
    send(server.port, probe_mail(message_id="<again@ca.example>"))
    step, context = WaitMail(), ctx(tmp_path)
    first = step.run(context)  # the commit that would carry it never happens
    assert isinstance(first, Done) and first.marks
    assert Maildir(tmp_path / "mail").list_cur() == []  # the move waits for the commit
    second = settled(tmp_path, step.run(context))
    assert isinstance(second, Done)
    assert second.outputs == first.outputs and second.marks == first.marks
    assert len(Maildir(tmp_path / "mail").list_cur()) == 1


def test_a_message_another_step_took_is_not_taken_again(tmp_path: Path,
                                                        server: MailServer) -> None:
    """Two steps return one message before either commits: the first commit takes it;
    the other's marks are refused, and that step, called again, sees it taken and waits."""
    send(server.port, probe_mail(message_id="<both@ca.example>"))
    mine, theirs = ctx(tmp_path), replace(ctx(tmp_path), run_id="r2", idempotency_key="r2:1:0")
    first, second = WaitMail().run(mine), WaitMail().run(theirs)
    assert isinstance(first, Done) and isinstance(second, Done)
    assert commit_take(_store(tmp_path), first)
    assert not commit_take(_store(tmp_path), second)
    assert isinstance(settled(tmp_path, WaitMail().run(theirs)), Wait)
    assert len(Maildir(tmp_path / "mail").list_cur()) == 1 and quarantined(tmp_path) == {}


def test_mail_for_another_address_left_alone(tmp_path: Path, server: MailServer) -> None:
    """A mail for webmaster@ stays in new/ and is remembered as judged, not re-parsed."""
    send(server.port, probe_mail(to="webmaster@example.test"), to="webmaster@example.test")
    step, context = WaitMail(), ctx(tmp_path)
    result = settled(tmp_path, step.run(context))
    assert isinstance(result, Wait)
    names = Maildir(tmp_path / "mail").list_new()
    assert len(names) == 1 and result.memo["judged"] == names
    assert isinstance(settled(tmp_path, step.run(again(context, result))), Wait)
    assert Maildir(tmp_path / "mail").list_new() == names
    assert quarantined(tmp_path) == {}


def test_other_probe_path_on_same_ca_left_alone(tmp_path: Path, server: MailServer) -> None:
    """A link for another request on the right CA is another run's mail: left in new/."""
    send(server.port, probe_mail(link=f"{CA_BASE}/domains/verify/p999?token=x"))
    result = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(result, Wait)
    assert len(Maildir(tmp_path / "mail").list_new()) == 1


def test_html_probe_taken_via_href(tmp_path: Path, server: MailServer) -> None:
    """The link in an HTML alternative's href is found; other links are ignored."""
    send(server.port, probe_mail(html=True, extra_text="see http://evil.example/x"))
    done = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(done, Done) and done.outputs["link"] == LINK


def test_subject_and_from_filters(tmp_path: Path, server: MailServer) -> None:
    """A mail failing the subject or from filter is left alone; a matching one is taken."""
    send(server.port, probe_mail(subject="Newsletter"))
    context = ctx(tmp_path, subject="verify", **{"from": "ca.example"})
    assert isinstance(settled(tmp_path, WaitMail().run(context)), Wait)
    send(server.port, probe_mail(sender="ca@other.example"))
    assert isinstance(settled(tmp_path, WaitMail().run(context)), Wait)
    send(server.port, probe_mail())
    assert isinstance(settled(tmp_path, WaitMail().run(context)), Done)
    assert len(Maildir(tmp_path / "mail").list_new()) == 2


def test_since_ignores_mail_delivered_before_the_wait(tmp_path: Path, server: MailServer) -> None:
    """With since: true, a mail already there when the wait began is ignored."""
    send(server.port, probe_mail(message_id="<old@ca.example>"))
    time.sleep(1.2)  # file times are compared with one second of slack
    step, context = WaitMail(), ctx(tmp_path, since=True)
    first = settled(tmp_path, step.run(context))
    assert isinstance(first, Wait)
    send(server.port, probe_mail(message_id="<new@ca.example>"))
    done = settled(tmp_path, step.run(again(context, first)))
    assert isinstance(done, Done) and done.outputs["message_id"] == "<new@ca.example>"


HOSTILE = {
    "truncated": (truncated_mime(), "truncated MIME"),
    "nested100": (nested_multipart(100), "MIME nesting"),
    "nested1000": (nested_multipart(1000), "MIME nesting"),
    "undecodable_cve_from": (b"From: alice@example.org)<bob@example.com>\nTo: "
                             + TO.encode() + b"\nSubject: =?utf-8?b?!!?= \xff\n\n" + LINK.encode(),
                             "ambiguous address"),
    "quoted_at_from": (b'From: "a@b.com"@evil.example\nTo: ' + TO.encode() + b"\n\n"
                       + LINK.encode(), "ambiguous address"),
    "other_host": (probe_mail(link="http://evil.example/domains/verify/p123?token=t0k3n"),
                   "suspicious"),
    "right_path_wrong_port": (probe_mail(link="http://127.0.0.1:9999/domains/verify/p123?t=1"),
                              "suspicious"),
    "userinfo": (probe_mail(link=f"http://ca.example@evil.example{PROBE_PATH}"), "suspicious"),
    "userinfo_same_host": (probe_mail(link=f"http://x@127.0.0.1:8443{PROBE_PATH}"), "suspicious"),
    "no_link": (probe_mail(link="(no link here)"), "no link"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_mail_moved_aside(tmp_path: Path, case: str) -> None:
    """Each hostile mail is moved aside with its reason; the step keeps waiting."""
    raw, reason = HOSTILE[case]
    md = Maildir(tmp_path / "mail")
    name = md.deliver(raw)
    with capture_logs() as logs:
        result = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(result, Wait)
    assert md.list_new() == [] and md.list_cur() == []
    assert reason in quarantined(tmp_path)[name]
    assert (books_dir(tmp_path, md.path) / ".quarantine" / "new" / name).read_bytes() == raw
    events = {entry["event"] for entry in logs}
    assert "mail_moved_aside" in events
    if reason == "suspicious":
        suspicious = [e for e in logs if e["event"] == "mail_link_suspicious"]
        assert suspicious and suspicious[0]["host"] and suspicious[0]["reason"]


def test_twenty_megabytes_moved_aside_unread(tmp_path: Path) -> None:
    """A 20 MB message is refused by its size on disk, before it is read into memory or
    parsed: the reason is the reader's cap (the parser's own limit words it otherwise)."""
    md = Maildir(tmp_path / "mail")
    raw = big_body(20 * 1024 * 1024)
    name = md.deliver(raw)
    result = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(result, Wait)
    assert quarantined(tmp_path)[name] == (f"message too large: {name} has {len(raw)} bytes "
                                           f"(limit {DEFAULT_MAX_READ})")


def test_duplicate_message_id_moved_aside(tmp_path: Path, server: MailServer) -> None:
    """A second delivery of a taken Message-ID is moved aside as a duplicate."""
    raw = probe_mail(message_id="<dup@ca.example>")
    send(server.port, raw)
    assert isinstance(settled(tmp_path, WaitMail().run(ctx(tmp_path))), Done)
    send(server.port, raw)
    (name,) = Maildir(tmp_path / "mail").list_new()
    later = replace(ctx(tmp_path), idempotency_key="r1:2:0")
    assert isinstance(settled(tmp_path, WaitMail().run(later)), Wait)
    assert quarantined(tmp_path)[name].startswith("duplicate")


def notify_ctx(tmp_path: Path, **params: Any) -> StepContext:
    base = {"maildir": str(tmp_path / "mail"), "to": "admin@example.test",
            "serial": "0a1b2c", "fingerprint": ":".join(["AB"] * 32)}
    return replace(ctx(tmp_path), step_id="n", params={**base, **params})


def test_notify_check_match(tmp_path: Path, server: MailServer) -> None:
    """The issuance mail naming this serial and fingerprint: matched, mail in cur/."""
    context = notify_ctx(tmp_path)
    assert isinstance(settled(tmp_path, NotifyCheck().run(context)), Wait)
    send(server.port, issuance_mail(), to="admin@example.test")
    done = settled(tmp_path, NotifyCheck().run(context))
    assert isinstance(done, Done)
    assert done.outputs["matched"] is True and done.outputs["message_id"]
    assert len(Maildir(tmp_path / "mail").list_cur()) == 1


def test_notify_check_mismatch_raises_alarm(tmp_path: Path, server: MailServer) -> None:
    """This serial with another fingerprint: issuance_mismatch logged at error, Done with
    matched false and the alarm."""
    send(server.port, issuance_mail(fingerprint="cd" * 32), to="admin@example.test")
    with capture_logs() as logs:
        done = settled(tmp_path, NotifyCheck().run(notify_ctx(tmp_path)))
    assert isinstance(done, Done)
    assert done.outputs["matched"] is False
    assert "fingerprint" in done.outputs["alarm"] and "cd" * 32 in done.outputs["alarm"]
    assert "serial" not in done.outputs["alarm"]
    alarm = [e for e in logs if e["event"] == "issuance_mismatch"]
    assert alarm and alarm[0]["log_level"] == "error"
    assert alarm[0]["expected_serial"] == "0a1b2c" and alarm[0]["found_serials"] == ["0a1b2c"]
    assert len(Maildir(tmp_path / "mail").list_cur()) == 1


def test_notify_check_leaves_other_certificates_mail_to_their_runs(
        tmp_path: Path, server: MailServer) -> None:
    """Runs of one account share its mailbox: the mail naming another serial arrives first
    and is left in new/ (no alarm); each run takes the mail naming its own serial."""
    send(server.port, issuance_mail(serial="FF:EE", fingerprint="cd" * 32),
         to="admin@example.test")
    send(server.port, issuance_mail(), to="admin@example.test")
    with capture_logs() as logs:
        mine = settled(tmp_path, NotifyCheck().run(notify_ctx(tmp_path)))
    assert isinstance(mine, Done) and mine.outputs["matched"] is True
    assert not [e for e in logs if e["event"] == "issuance_mismatch"]
    assert len(Maildir(tmp_path / "mail").list_new()) == 1
    other = replace(notify_ctx(tmp_path, serial="ffee", fingerprint="cd" * 32),
                    run_id="r2", idempotency_key="r2:1:0")
    theirs = settled(tmp_path, NotifyCheck().run(other))
    assert isinstance(theirs, Done) and theirs.outputs["matched"] is True
    assert Maildir(tmp_path / "mail").list_new() == []


def test_notify_check_ignores_other_subjects(tmp_path: Path, server: MailServer) -> None:
    """A mail to the account without the subject is left alone."""
    send(server.port, issuance_mail(subject="Welcome"), to="admin@example.test")
    assert isinstance(settled(tmp_path, NotifyCheck().run(notify_ctx(tmp_path))), Wait)
    assert len(Maildir(tmp_path / "mail").list_new()) == 1


def test_each_message_is_parsed_once_however_many_runs_scan_the_folder(
        tmp_path: Path, server: MailServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten runs wait for ten addresses in one Maildir: every message is read and parsed
    once in all (certwright.mail.cache), not once per run that scans past it."""
    import certwright.mail.intake as intake_mod
    calls: list[int] = []
    real = intake_mod.parse_message

    def counting(raw: bytes, **kw: Any) -> Any:
        calls.append(len(raw))
        return real(raw, **kw)
    monkeypatch.setattr(intake_mod, "parse_message", counting)
    addresses = [f"admin{i}@example.test" for i in range(10)]
    for i, addr in reversed(list(enumerate(addresses))):  # each run's mail comes last
        send(server.port, probe_mail(to=addr, link=f"{CA_BASE}{PROBE_PATH}?token=t{i}"), to=addr)
    taken = []
    for i, addr in enumerate(addresses):
        context = replace(ctx(tmp_path, to=addr), run_id=f"r{i}", idempotency_key=f"r{i}:1:0")
        result = settled(tmp_path, WaitMail().run(context))
        assert isinstance(result, Done), result
        taken.append(result.outputs["link"])
    assert taken == [f"{CA_BASE}{PROBE_PATH}?token=t{i}" for i in range(10)]
    assert len(calls) == 10


def test_a_message_taken_whose_move_was_lost_is_moved_not_taken_again(
        tmp_path: Path, server: MailServer) -> None:
    """The take is recorded durably (ProcessedLog mark) before a move to cur/ that is not
    fsynced; a power cut can put the message back in new/. Another run finds it there:
    it finishes the move and does not take it."""
    send(server.port, probe_mail(message_id="<lost-move@ca.example>"))
    md = Maildir(tmp_path / "mail")
    name = md.list_new()[0]
    Maildir(md.path, books=books_dir(tmp_path, md.path)).processed_log().mark(
        "<lost-move@ca.example>", name, "earlier-run:1:0")
    result = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(result, Wait)
    assert md.list_new() == [] and md.list_cur() == [f"{name}:2,S"]
    assert quarantined(tmp_path) == {}


def test_notify_check_alarms_when_no_issuance_mail_comes(tmp_path: Path) -> None:
    """No issuance mail within ``within`` (2 days by default): the step waits until that
    instant, then is Done with matched false and the alarm naming the serial; it never
    passes as if the mail had come."""
    clock = FakeClock()
    context = replace(notify_ctx(tmp_path), clock=clock)
    first = settled(tmp_path, NotifyCheck().run(context))
    assert isinstance(first, Wait)
    assert first.until == clock.now() + timedelta(days=2)
    clock.advance(days=2)
    done = settled(tmp_path, NotifyCheck().run(again(context, first)))
    assert isinstance(done, Done)
    assert done.outputs["matched"] is False
    assert done.outputs["alarm"] == "no issuance mail for serial 0a1b2c within 2d"


def test_people_mail_in_a_shared_mailbox_is_left_unread(tmp_path: Path) -> None:
    """A postmaster mailbox shared with people: their mail to the probed address (no link,
    a link elsewhere, even MIME that does not parse) stays in new/ untouched while the probe
    waits; the CA's mail is then taken."""
    md = Maildir(tmp_path / "mail")
    people = [md.deliver(person_mail(to=TO)),
              md.deliver(person_mail(to=TO, body="see http://wiki.people.example/x\n")),
              md.deliver(people_truncated(TO))]
    first = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(first, Wait)
    assert sorted(md.list_new()) == sorted(people) and quarantined(tmp_path) == {}
    md.deliver(probe_mail(to=TO, link=LINK))
    done = settled(tmp_path, WaitMail().run(again(ctx(tmp_path), first)))
    assert isinstance(done, Done) and done.outputs["link"] == LINK
    assert sorted(md.list_new()) == sorted(people)


@pytest.mark.parametrize(("shown", "target"), [
    (LINK, "http://evil.example/domains/verify/p123?token=t0k3n"),
    ("http://evil.example/domains/verify/p123?token=t0k3n", LINK),
])
def test_html_link_whose_text_and_target_differ_is_never_followed(
        tmp_path: Path, shown: str, target: str) -> None:
    """The CA's-looking mail whose HTML link shows one URL and points to another is moved
    aside as suspicious, whichever of the two is the CA's; nothing is taken."""
    md = Maildir(tmp_path / "mail")
    name = md.deliver(html_lure(to=TO, shown=shown, target=target))
    assert isinstance(settled(tmp_path, WaitMail().run(ctx(tmp_path))), Wait)
    assert md.list_new() == [] and md.list_cur() == []
    assert "suspicious" in quarantined(tmp_path)[name]


def test_bookkeeping_lives_in_the_state_dir_not_the_maildir(tmp_path: Path) -> None:
    """After a take and a quarantine the Maildir holds only cur/, new/ and tmp/: the
    quarantine is the state dir's (an MTA owns the mailbox), the take the store's."""
    md = Maildir(tmp_path / "mail")
    bad = md.deliver(probe_mail(link="(no link here)"))
    md.deliver(probe_mail(link=LINK))
    assert isinstance(settled(tmp_path, WaitMail().run(ctx(tmp_path))), Done)
    assert sorted(p.name for p in md.path.iterdir()) == ["cur", "new", "tmp"]
    books = books_dir(tmp_path, md.path)
    assert not (books / "certwright-processed.sqlite3").exists()  # takes are the store's
    assert (books / ".quarantine" / "new" / bad).is_file()
    assert "no link" in quarantined(tmp_path)[bad]


def test_a_processed_log_an_older_version_left_in_the_maildir_is_carried_over(
        tmp_path: Path) -> None:
    """A run from before the move: its take, recorded in the Maildir's old processed log,
    is found again (same idempotency key), so a resumed run does not wait for it again."""
    md = Maildir(tmp_path / "mail")
    md.ensure()
    name = md.deliver(probe_mail(link=LINK, message_id="<old@ca.example>"))
    ProcessedLog(md.path / "certwright-processed.sqlite3").mark("<old@ca.example>", name,
                                                                "r1:1:0")
    md.move_to_cur(name)
    done = settled(tmp_path, WaitMail().run(ctx(tmp_path)))
    assert isinstance(done, Done) and done.outputs["link"] == LINK


def test_a_missing_maildir_of_an_mta_is_waited_for_not_created(tmp_path: Path) -> None:
    """A Maildir outside the state dir that does not exist (yet: an MTA may create it on
    its first delivery) is not created with the wrong owner: the step waits and says how
    to create it."""
    box = tmp_path / "spool" / "postmaster"
    context = replace(ctx(tmp_path, maildir=str(box)), state_dir=tmp_path / "state")
    with capture_logs() as logs:
        result = settled(tmp_path, WaitMail().run(context))
    assert isinstance(result, Wait) and "does not exist" in result.description
    assert "install -d" in result.description and not box.exists()
    assert any(e["event"] == "maildir_missing" for e in logs)
