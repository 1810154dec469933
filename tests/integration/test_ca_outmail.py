"""The CA's mailer: a small pool of kept SMTP sessions per host, probed only after idle,
reconnecting once when a session died before the message went out."""
from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.ca import outmail
from certwright.ca.mailserver import MailServer
from certwright.ca.outmail import Mailer, MailError
from certwright.mail.maildir import Maildir

TO = "postmaster@example.test"


def test_kept_session_is_reused_and_reopened_after_the_server_restarts(tmp_path: Path):
    md = Maildir(tmp_path / "md")
    first = MailServer("127.0.0.1", 0, domains=["example.test"], maildir=md.path)
    first.start()
    port = first.port
    mailer = Mailer(smarthost=("127.0.0.1", port), mail_from="ca@certwright.invalid")
    try:
        mailer.send("postmaster@example.test", "one", "body one", kind="test")
        mailer.send("postmaster@example.test", "two", "body two", kind="test")
        pool = mailer._pools[("127.0.0.1", port)]
        assert pool.open == 1  # one sender: one session, reused
        session = pool.idle[-1].smtp
        assert len(md.list_new()) == 2
        first.stop()
        second = MailServer("127.0.0.1", port, domains=["example.test"], maildir=md.path)
        second.start()
        try:
            mailer.send("postmaster@example.test", "three", "body three", kind="test")
            assert pool.idle[-1].smtp is not session  # reconnected
            assert pool.open == 1
        finally:
            second.stop()
    finally:
        mailer.close()
    subjects = sorted(b"Subject: " + s for s in (b"one", b"two", b"three"))
    found = sorted(line for name in md.list_new() for line in md.read(name).splitlines()
                   if line.startswith(b"Subject: "))
    assert found == subjects


def test_concurrent_senders_use_several_sessions_at_once(tmp_path: Path):
    """Senders do not queue behind one session: up to max_sessions messages are in
    delivery at the same time, never more, and every one arrives. Each delivery waits
    until three are in delivery together (a barrier), so senders served one session at a
    time would break it and fail."""
    md = Maildir(tmp_path / "md")
    busy = 0
    peak = 0
    lock = threading.Lock()
    together = threading.Barrier(3, timeout=30)  # the timeout bounds a broken build only
    with MailServer("127.0.0.1", 0, domains=["example.test"], maildir=md.path) as server:
        real = server.maildir.deliver

        def slow_deliver(raw: bytes) -> str:
            nonlocal busy, peak
            with lock:
                busy += 1
                peak = max(peak, busy)
            together.wait()
            with lock:
                busy -= 1
            return real(raw)

        server.maildir.deliver = slow_deliver  # type: ignore[method-assign]
        mailer = Mailer(smarthost=("127.0.0.1", server.port), mail_from="ca@certwright.invalid",
                        max_sessions=3)
        errors: list[BaseException] = []

        def send(i: int) -> None:
            try:
                mailer.send(TO, f"m{i}", "body", kind="test")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert mailer._pools[("127.0.0.1", server.port)].open == 3
        mailer.close()
    assert errors == []
    assert not together.broken
    assert peak == 3
    assert len(md.list_new()) == 6


class FakeSMTP:
    """A scripted SMTP server on loopback that records what clients do.

    ``hang()`` makes the connections open now stop answering without closing them (a
    server that went away); ``drop_after_data`` closes the connection once a message's
    content arrived, without replying; recipients starting with ``refused`` get 550.
    """

    def __init__(self, *, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.drop_after_data = False
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self._hung: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                fake._serve(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, verb: str) -> int:
        with self._lock:
            return sum(1 for c in self.commands if c.split(" ")[0].upper() == verb)

    def hang(self) -> None:
        with self._lock:
            self._hung.update(range(1, self.connections + 1))

    def release(self) -> None:
        """Let the hung connections end (closed without an answer)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, h: socketserver.StreamRequestHandler) -> None:
        with self._lock:
            self.connections += 1
            me = self.connections
        h.wfile.write(b"220 fake ESMTP\r\n")
        recipients = 0
        while True:
            line = h.rfile.readline()
            if not line:
                return
            with self._lock:
                hung = me in self._hung
            if hung:
                self._stop.wait()
                return
            command = line.decode().rstrip("\r\n")
            with self._lock:
                self.commands.append(command)
            verb = command.split(" ")[0].upper()
            if verb == "EHLO":
                h.wfile.write(b"250-fake\r\n" + (b"250-PIPELINING\r\n" if self.pipelining
                                                 else b"") + b"250 SIZE 100000\r\n")
            elif verb == "RCPT" and command[9:].startswith("refused"):
                h.wfile.write(b"550 5.1.1 no such user here\r\n")
            elif verb == "DATA" and not recipients:
                h.wfile.write(b"554 5.5.1 no valid recipients\r\n")
            elif verb == "DATA":
                recipients = 0
                h.wfile.write(b"354 go ahead\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = h.rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                with self._lock:
                    self.messages.append(data)
                if self.drop_after_data:
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                h.wfile.write(b"250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                h.wfile.write(b"221 bye\r\n")
                return
            else:
                recipients += verb == "RCPT"
                if verb in ("RSET", "MAIL"):
                    recipients = 0
                h.wfile.write(b"250 OK\r\n")


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeSMTP]:
    server = FakeSMTP(pipelining=request.param)
    yield server
    server.close()


def _mailer(fake: FakeSMTP, **kw: object) -> Mailer:
    return Mailer(smarthost=("127.0.0.1", fake.port), mail_from="ca@certwright.invalid",
                  timeout=10.0, **kw)  # type: ignore[arg-type]


def test_noop_probe_only_after_idle(fake: FakeSMTP, monkeypatch: pytest.MonkeyPatch):
    """A session used a moment ago is reused as it is; one idle for longer than FRESH_S
    answers a NOOP first."""
    monkeypatch.setattr(outmail, "FRESH_S", 0.2)
    mailer = _mailer(fake)
    try:
        for i in range(3):
            mailer.send(TO, f"m{i}", "body", kind="test")
        assert fake.count("NOOP") == 0
        time.sleep(0.3)
        mailer.send(TO, "late", "body", kind="test")
        assert fake.count("NOOP") == 1
    finally:
        mailer.close()
    assert fake.connections == 1
    assert len(fake.messages) == 4


@pytest.mark.parametrize("idle", [False, True], ids=["fresh-session", "idle-session"])
def test_server_gone_without_closing_is_detected_quickly(
        fake: FakeSMTP, monkeypatch: pytest.MonkeyPatch, idle: bool):
    """A kept session whose server stopped answering (connection still open) is given
    up after PROBE_S, not the full timeout, whether it was used a moment ago (its MAIL
    reply is awaited only that long) or idle (the NOOP probe is); the message goes over
    a new connection. The full timeout here is an hour, so a send that returned at all
    was saved by the probe."""
    monkeypatch.setattr(outmail, "PROBE_S", 0.5)
    monkeypatch.setattr(outmail, "FRESH_S", 0.2)
    mailer = Mailer(smarthost=("127.0.0.1", fake.port), mail_from="ca@certwright.invalid",
                    timeout=3600.0)
    try:
        mailer.send(TO, "first", "body", kind="test")
        fake.hang()
        if idle:
            time.sleep(0.3)
        sender = threading.Thread(target=mailer.send, args=(TO, "second", "body"),
                                  kwargs={"kind": "test"}, daemon=True)
        sender.start()
        sender.join(timeout=60)  # bounds a broken build; the probe gives up in PROBE_S
        assert not sender.is_alive(), "the send waits for the full timeout"
    finally:
        fake.release()  # so a send still waiting (a broken build) ends too
        mailer.close()
    assert fake.connections == 2
    assert len(fake.messages) == 2


def test_refused_recipient_reported_and_session_kept(fake: FakeSMTP):
    """A refused recipient raises MailError with the server's reply; the session is reset
    (RSET) and carries the next message."""
    mailer = _mailer(fake)
    try:
        with pytest.raises(MailError) as info:
            mailer.send("refused@example.test", "x", "body", kind="test")
        assert "refused the recipient: 550 5.1.1 no such user here" in info.value.reason
        assert fake.count("RSET") == 1
        mailer.send(TO, "next", "body", kind="test")
    finally:
        mailer.close()
    assert fake.connections == 1
    assert len(fake.messages) == 1


def test_lost_connection_after_the_content_is_not_retried(fake: FakeSMTP):
    """Once the content went out, a connection lost before the reply is reported, not
    retried: the server may have taken the message, and nothing is sent twice."""
    mailer = _mailer(fake)
    try:
        mailer.send(TO, "first", "body", kind="test")
        fake.drop_after_data = True
        with pytest.raises(MailError):
            mailer.send(TO, "second", "body", kind="test")
    finally:
        mailer.close()
    assert len(fake.messages) == 2  # "second" arrived once
    assert fake.connections == 1


def test_close_quits_every_session(fake: FakeSMTP):
    """close() sends QUIT over every kept session; the mailer opens new ones afterwards."""
    mailer = _mailer(fake, max_sessions=4)
    gate = threading.Barrier(4)

    def send(i: int) -> None:
        gate.wait()
        mailer.send(TO, f"m{i}", "body", kind="test")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = fake.connections
    assert 1 <= opened <= 4
    mailer.close()
    deadline = time.monotonic() + 5
    while fake.count("QUIT") < opened and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.count("QUIT") == opened
    mailer.send(TO, "after", "body", kind="test")
    mailer.close()
    assert fake.connections == opened + 1


def test_smtp_error_reason_in_mail_error(tmp_path: Path):
    """An SMTP error reply reaches the caller as MailError.reason; a refused connection too."""
    md = Maildir(tmp_path / "md")
    with MailServer("127.0.0.1", 0, domains=["example.test"], maildir=md.path) as server:
        mailer = Mailer(smarthost=("127.0.0.1", server.port), mail_from="ca@certwright.invalid")
        try:
            with pytest.raises(MailError) as info:
                mailer.send("someone@elsewhere.example", "x", "body", kind="test")
            assert info.value.reason.endswith(
                "refused the recipient: 550 5.7.1 relay not permitted")

            def broken(raw: bytes) -> str:
                raise OSError("disk full")

            server.maildir.deliver = broken  # type: ignore[method-assign]
            with pytest.raises(MailError) as info:
                mailer.send(TO, "x", "body", kind="test")
            assert "said 451 4.3.0 local delivery failed" in info.value.reason
        finally:
            mailer.close()
        port = server.port
    with pytest.raises(MailError) as info:
        Mailer(smarthost=("127.0.0.1", port), mail_from="ca@certwright.invalid").send(
            TO, "x", "body", kind="test")
    assert info.value.reason.startswith(f"127.0.0.1:{port}: ")
