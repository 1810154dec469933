"""The daemon's mail routing on a real Maildir and SQLite store: hostile mail, duplicates,
unmatched mail, and a run taking its mail; the daemon runs in a thread of this process."""
from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from certwright.engine.daemon.config import DaemonConfig
from certwright.engine.daemon.service import Daemon
from certwright.engine.model.loader import load_pipeline
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.errors import InputError
from certwright.mail.books import books_dir
from certwright.mail.maildir import Maildir
from certwright.state.location import open_store
from tests.fixtures.daemon.harness import FIXTURES, wait_for
from tests.support.mail import (
    CA_BASE,
    PROBE_PATH,
    big_body,
    headers,
    html_lure,
    nested_multipart,
    people_truncated,
    person_mail,
    probe_mail,
    truncated_mime,
)

TO = "postmaster@h.test"


class Running:
    """A daemon serving ``state`` in a background thread."""

    def __init__(self, state: Path, cfg: DaemonConfig) -> None:
        self.daemon = Daemon(state, cfg, workers=2)
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.daemon.ready.wait(30):
            raise AssertionError(f"daemon not ready: {self.result}")

    def _run(self) -> None:
        try:
            self.result.append(self.daemon.run())
        except BaseException as exc:  # noqa: BLE001 - shown by the test
            self.result.append(exc)
            self.daemon.ready.set()

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)


def park(state: Path, maildir: Path, to: str, run_id: str) -> None:
    """Start a waitmail run with a separate engine and leave it waiting (as `run --no-wait`)."""
    spec = load_pipeline(FIXTURES / "waitmail.yaml")
    store = open_store(state)
    eng = Engine(store, state, options=EngineOptions(inline=True))
    eng.open()
    eng.start_run(spec, {"to": to, "maildir": str(maildir), "link_base": CA_BASE}, run_id)
    eng.run_until_idle()
    eng.close()
    store.close()


def run_state(state: Path, run_id: str) -> str:
    store = open_store(state)
    try:
        return store.load_run(run_id).state
    finally:
        store.close()


def aside(md: Maildir) -> Path:
    """The mailbox's quarantine: in the state dir (the setup's is ``<tmp>/state``)."""
    return books_dir(md.path.parent / "state", md.path) / ".quarantine"


def reason_of(md: Maildir, name: str) -> str:
    return (aside(md) / "reasons" / f"{name}.reason").read_text()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Maildir, Running, list[dict[str, Any]]]]:
    state, md = tmp_path / "state", Maildir(tmp_path / "Maildir")
    md.ensure()
    park(state, md.path, TO, "r1")
    with structlog.testing.capture_logs() as logs:
        running = Running(state, DaemonConfig(maildirs=(md.path,), unmatched_grace=1.5))
        try:
            yield state, md, running, logs
        finally:
            running.stop()


HOSTILE = {
    "truncated": (truncated_mime(TO), "truncated MIME"),
    "twenty_mb": (big_body(20 * 1024 * 1024, TO), "message too large"),
    "nested_100": (nested_multipart(100, to=TO), "MIME nesting"),
    "undecodable_from": (headers(TO, "<u@ca.example>").replace(
        b"From: ca@ca.example", b"From: \xff\xfe <@@\xc3>") + b"\n\nx\n", "undecodable"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_mail_is_moved_aside_with_its_reason_and_the_daemon_serves_on(setup, case):
    """Each hostile message is logged with its reason and quarantined; a good one then works."""
    state, md, running, logs = setup
    raw, why = HOSTILE[case]
    name = md.deliver(raw)
    wait_for((aside(md) / "new" / name).exists, 10, "quarantine")
    assert why in reason_of(md, name)
    assert any(e["event"] == "mail_hostile" and e["file"] == name and why in e["reason"]
               for e in logs)
    good = md.deliver(probe_mail(to=TO, link=f"{CA_BASE}{PROBE_PATH}?token=t0k3n"))
    wait_for(lambda: run_state(state, "r1") == "verified", 10, "the run to take good mail")
    assert next(iter(md.cur.iterdir())).name.startswith(good)
    assert running.thread.is_alive()


@pytest.mark.parametrize(("link", "why"), [
    ("http://evil.example/domains/verify/p123?token=t0k3n", "suspicious"),
    ("http://127.0.0.2:8443/domains/verify/p123?token=t0k3n", "suspicious"),
])
def test_link_to_another_host_is_never_taken(setup, link, why):
    """Another host, or the right token on the wrong host: moved aside, the run still waits."""
    state, md, _running, logs = setup
    name = md.deliver(probe_mail(to=TO, link=link))
    wait_for((aside(md) / "new" / name).exists, 10, "quarantine")
    assert why in reason_of(md, name)
    assert run_state(state, "r1") == "probed"
    assert any(e["event"] == "mail_link_suspicious" for e in logs)


def test_duplicate_delivery_is_moved_aside_as_duplicate(setup):
    """The same Message-ID delivered again after the run took it is quarantined at once."""
    state, md, _running, logs = setup
    raw = probe_mail(to=TO, message_id="<same@ca.example>")
    md.deliver(raw)
    wait_for(lambda: run_state(state, "r1") == "verified", 10, "the run to take the mail")
    again = md.deliver(raw)
    wait_for((aside(md) / "new" / again).exists, 10, "quarantine")
    assert reason_of(md, again).startswith("duplicate")
    assert any(e["event"] == "mail_duplicate" and e["file"] == again for e in logs)
    assert len(list(md.cur.iterdir())) == 1


def test_unmatched_mail_waits_its_grace_then_is_moved_aside(setup):
    """Mail for nobody stays in new/ during the grace period, then goes aside as unmatched."""
    _state, md, _running, _logs = setup
    name = md.deliver(probe_mail(to="nobody@h.test"))
    time.sleep(0.5)
    assert (md.new / name).exists()
    wait_for((aside(md) / "new" / name).exists, 10, "quarantine")
    assert "unmatched" in reason_of(md, name)


def test_mail_arriving_before_its_run_parks_is_routed_once_it_does(tmp_path):
    """A mail that is in new/ before the daemon starts (downtime) is taken on start-up."""
    state, md = tmp_path / "state", Maildir(tmp_path / "Maildir")
    md.ensure()
    park(state, md.path, "webmaster@late.test", "late")
    md.deliver(probe_mail(to="webmaster@late.test"))
    running = Running(state, DaemonConfig(maildirs=(md.path,)))
    try:
        wait_for(lambda: run_state(state, "late") == "verified", 10, "start-up scan")
    finally:
        running.stop()
    assert running.result == [0]


def test_parked_runs_get_no_poll_timer_under_the_daemon(setup):
    """A wait the daemon watches by inotify is re-parked without a 30 s poll timer."""
    state, md, running, logs = setup
    md.deliver(probe_mail(to=TO, link="http://evil.example/domains/verify/p1?token=x"))
    wait_for(lambda: running.daemon.router and running.daemon.router.counts, 10, "routing")
    wait_for(lambda: any(e["event"] == "mail_link_suspicious" for e in logs), 10, "check")
    time.sleep(0.3)
    store = open_store(state)
    try:
        kinds = [r[0] for r in store._db.execute("SELECT kind FROM timers WHERE run_id='r1'")]
    finally:
        store.close()
    assert kinds == ["timeout"]


def test_router_finishes_a_move_to_cur_a_power_cut_undid(tmp_path):
    """A message in new/ that the processed log says was taken from this very file (its
    unsynced move to cur/ was lost) is moved to cur/, not offered or quarantined."""
    from certwright.engine.daemon.mailroute import GONE, MailRouter
    md = Maildir(tmp_path / "Maildir")
    md.ensure()
    from tests.support.mail import probe_mail
    name = md.deliver(probe_mail(to="postmaster@lost.test", message_id="<lost@ca.example>"))
    md.processed_log().mark("<lost@ca.example>", name, "run-x:2:0")
    offered: list[Any] = []
    router = MailRouter(lambda key: ["someone"], offered.append, grace=0.0)
    assert router.route(md, name) == GONE
    assert offered == [] and md.list_new() == [] and md.list_cur() == [f"{name}:2,S"]


def test_people_mail_in_a_shared_mailbox_stays_unread_after_the_grace(setup):
    """A postmaster mailbox shared with people: their mail (to the waiting address without
    a link, to nobody, or not even parseable) stays in new/ unread past the grace period,
    while the CA's unmatched mail delivered with it is moved aside."""
    state, md, running, logs = setup
    people = [md.deliver(person_mail(to=TO)), md.deliver(person_mail(to="nobody@h.test")),
              md.deliver(people_truncated(TO))]
    ours = md.deliver(probe_mail(to="nobody@h.test"))
    wait_for((aside(md) / "new" / ours).exists, 10, "quarantine")
    running.daemon.router.sweep()  # type: ignore[union-attr]
    assert sorted(md.list_new()) == sorted(people)
    assert run_state(state, "r1") == "probed"
    touched = {e["event"] for e in logs if e.get("file") in people}
    assert not touched & {"mail_hostile", "mail_moved_aside", "mail_taken", "mail_unmatched",
                          "mail_duplicate"}, touched


def test_the_cas_mail_failing_a_check_is_moved_aside_whoever_waits(setup):
    """Mail that claims to be the CA's with a lure link (shown and real URL differ), for an
    address no run waits for (its run has moved on): moved aside at once as suspicious,
    not left for the grace period as unmatched."""
    _state, md, _running, _logs = setup
    name = md.deliver(html_lure(to="gone@h.test", shown=f"{CA_BASE}{PROBE_PATH}?token=t",
                                target="http://evil.example/x"))
    wait_for((aside(md) / "new" / name).exists, 10, "quarantine")
    assert "suspicious" in reason_of(md, name)


def test_a_missing_maildir_is_refused_at_start_unless_its_owner_and_mode_are_set(tmp_path):
    """A configured Maildir that does not exist is not created with the daemon's defaults
    (an MTA could not deliver into it): the daemon refuses to start, saying how to create
    it; with maildir_mode (and owner/group) set it creates it so."""
    (tmp_path / "spool").mkdir()
    box = tmp_path / "spool" / "pm"
    with pytest.raises(InputError, match="install -d"):
        Daemon(tmp_path / "state", DaemonConfig(maildirs=(box,)), workers=1).run()
    assert not box.exists()
    running = Running(tmp_path / "state", DaemonConfig(maildirs=(box,), maildir_mode=0o750))
    try:
        assert {stat.S_IMODE(p.stat().st_mode) for p in (box, box / "new")} == {0o750}
    finally:
        running.stop()
