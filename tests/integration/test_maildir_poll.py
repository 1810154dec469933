"""The daemon's Maildir poll (``maildir_poll``, ``--maildir-poll``): a message that arrives
without any file event, as another host's write to an NFS Maildir does, is routed within
the poll interval; with no poll it is not routed at all."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from certwright.engine.cli.main import parse_args
from certwright.engine.daemon.cli import build_config
from certwright.engine.daemon.config import from_mapping
from certwright.engine.daemon.maildirpoll import MaildirPoll
from certwright.engine.daemon.mailroute import MaildirSource, MailRouter
from certwright.errors import InputError
from certwright.events import Event, mail_key
from certwright.mail import cache as mailcache
from certwright.mail.books import books_dir
from tests.support.mail import probe_mail

TO = "postmaster@example.test"
EVERY = 0.3


class _Deaf:
    """An observer that never reports a write (the writes of another host, on NFS)."""

    def schedule(self, *args: Any, **kwargs: Any) -> None:
        pass


def _deliver_from_another_process(maildir: Path) -> None:
    script = ("import sys; from certwright.mail.maildir import Maildir; "
              "Maildir(sys.argv[1]).deliver(sys.stdin.buffer.read())")
    subprocess.run([sys.executable, "-c", script, str(maildir)], input=probe_mail(to=TO),
                   check=True, timeout=60)


def _source(tmp_path: Path, events: list[Event]) -> MaildirSource:
    mailcache.clear()
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    router = MailRouter(lambda key: ["r1"] if key == mail_key(TO) else [], events.append)
    return MaildirSource(maildir, router, _Deaf(), books=books_dir(tmp_path / "state", maildir))


@pytest.mark.parametrize("every", [EVERY, 0.0])
def test_a_message_written_without_an_event_is_routed_within_the_poll(
        tmp_path: Path, every: float) -> None:
    """Watched by an observer that sees nothing, a message another process delivers is
    routed within one poll interval (and a bit); without a poll it is never routed."""
    events: list[Event] = []
    source = _source(tmp_path, events)
    with MaildirPoll([source], every) as poll:
        assert events == []  # the start-up scan found nothing
        _deliver_from_another_process(source.md.path)
        written = time.monotonic()
        while not events and time.monotonic() - written < EVERY * 2 + 1.0:
            time.sleep(0.02)
        took = time.monotonic() - written
        if not every:
            assert events == []
            return
        assert [e.key for e in events] == [mail_key(TO)]
        assert took < every + 0.5, took
        assert poll.poll() == 0  # a poll now finds nothing new: each name is routed once


def test_the_poll_is_a_setting_of_the_file_and_of_the_command_line(tmp_path: Path) -> None:
    """``maildir_poll`` is a duration of the file; ``--maildir-poll`` overrides it; a
    negative or unreadable value is an error naming it; none means 0 (inotify only)."""
    assert from_mapping({}, Path("/")).maildir_poll == 0.0
    assert from_mapping({"maildir_poll": "10s"}, Path("/")).maildir_poll == 10.0
    with pytest.raises(InputError, match="maildir_poll"):
        from_mapping({"maildir_poll": "-5"}, Path("/"))
    config = tmp_path / "config.yaml"
    config.write_text("daemon:\n  maildir_poll: 30s\n")
    base = ["--state-dir", str(tmp_path), "daemon", "--config", str(config)]
    assert build_config(parse_args(base)).maildir_poll == 30.0
    assert build_config(parse_args([*base, "--maildir-poll", "2.5"])).maildir_poll == 2.5
    assert build_config(parse_args([*base, "--maildir-poll", "0"])).maildir_poll == 0.0
    with pytest.raises(SystemExit):
        parse_args([*base, "--maildir-poll", "soon"])
