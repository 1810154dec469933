"""The local SMTP receiver on loopback: delivery, relay refusal, size limit, the CLI."""
from __future__ import annotations

import smtplib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.ca.mailserver import MailServer
from certwright.mail.maildir import Maildir
from certwright.mail.parse import parse_message
from tests.support.mail import crlf, probe_mail, send

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    with MailServer(domains=["example.test", "Other.Test"], maildir=tmp_path / "mail",
                    max_message_size=200_000) as srv:
        yield srv


def test_delivers_into_new_with_trace_headers(server: MailServer) -> None:
    """An accepted mail appears in new/ with Delivered-To, Received, Authentication-Results."""
    assert server.port > 0
    send(server.port, probe_mail(message_id="<a1@ca.example>"))
    md = Maildir(server.maildir.path)
    names = md.list_new()
    assert len(names) == 1
    raw = md.read(names[0])
    head = raw.split(b"\n\n", 1)[0]
    assert b"Delivered-To: postmaster@example.test" in head
    assert b"Received: from " in head
    assert b"Authentication-Results: certwright.local; none" in head
    assert b"\r\n" not in raw
    mail = parse_message(raw, trusted_authserv_ids=["certwright.local"])
    assert mail.message_id == "<a1@ca.example>"
    assert mail.delivered_to == ["postmaster@example.test"]
    assert mail.authenticated


def test_forged_own_authentication_results_removed(server: MailServer) -> None:
    """An incoming header claiming our authserv-id is stripped; only ours remains."""
    raw = b"Authentication-Results: certwright.local; dkim=pass\r\n" + probe_mail()
    send(server.port, raw)
    md = Maildir(server.maildir.path)
    stored = md.read(md.list_new()[0])
    assert stored.count(b"Authentication-Results:") == 1
    assert b"certwright.local; dkim=pass" not in stored


def test_refuses_other_domains_and_delivers_nothing(server: MailServer) -> None:
    """RCPT for a domain not served gets 550 relay not permitted; nothing is delivered."""
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        send(server.port, probe_mail(to="victim@elsewhere.example"), to="victim@elsewhere.example")
    code, text = info.value.recipients["victim@elsewhere.example"]
    assert code == 550 and b"relay not permitted" in text
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server.port, probe_mail(), to="postmaster@sub.example.test")
    assert Maildir(server.maildir.path).list_new() == []


def test_domain_match_is_case_insensitive(server: MailServer) -> None:
    """Recipient domains match regardless of case."""
    send(server.port, probe_mail(to="Postmaster@EXAMPLE.test"), to="Postmaster@EXAMPLE.test")
    send(server.port, probe_mail(to="a@other.test"), to="a@OTHER.TEST")
    assert len(Maildir(server.maildir.path).list_new()) == 2


def test_refuses_oversize_with_552_and_advertises_size(server: MailServer) -> None:
    """EHLO advertises SIZE; an oversize message gets 552 whether declared in MAIL FROM
    or only sent in DATA; nothing is delivered."""
    big = probe_mail(extra_text=("z" * 70 + "\n") * 4000)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("size") and client.esmtp_features["size"] == "200000"
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("ca@ca.example", ["postmaster@example.test"], big)
        assert declared.value.smtp_code == 552
        client.rset()
        assert client.mail("ca@ca.example")[0] == 250  # no SIZE= this time
        assert client.rcpt("postmaster@example.test")[0] == 250
        code, _ = client.data(crlf(big))
    assert code == 552
    assert Maildir(server.maildir.path).list_new() == []


def test_multiple_recipients_one_copy(server: MailServer) -> None:
    """One message to several of our addresses is stored once with a Delivered-To each;
    a foreign recipient among them is refused alone."""
    refused = send(server.port, probe_mail(), to=["postmaster@example.test",
                                                  "webmaster@example.test", "x@evil.example"])
    assert list(refused) == ["x@evil.example"]
    md = Maildir(server.maildir.path)
    (name,) = md.list_new()
    mail = parse_message(md.read(name))
    assert mail.delivered_to == ["postmaster@example.test", "webmaster@example.test"]


def test_no_partial_file_ever_visible(server: MailServer) -> None:
    """While many mails arrive, every file seen in new/ is complete."""
    body = probe_mail(extra_text=("q" * 70 + "\n") * 700 + "END-OF-MESSAGE")
    count = 30
    stop = threading.Event()
    bad: list[str] = []
    seen: set[str] = set()
    md = Maildir(server.maildir.path)

    def reader() -> None:
        while not stop.is_set():
            for name in md.list_new():
                try:
                    data = md.read(name)
                except FileNotFoundError:
                    continue
                seen.add(name)
                if b"END-OF-MESSAGE" not in data:
                    bad.append(name)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(count):
            send(server.port, body)
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert len(md.list_new()) == count
    assert seen  # the reader did look at files while delivery went on


def test_stop_is_idempotent_and_frees_port(tmp_path: Path) -> None:
    """stop() twice is fine; afterwards the port no longer accepts connections."""
    srv = MailServer(domains=["example.test"], maildir=tmp_path / "m").start()
    port = srv.port
    srv.stop()
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)


def test_mail_serve_cli_accepts_a_mail(tmp_path: Path) -> None:
    """`mail serve` runs as a process, prints its port, accepts mail, exits on SIGTERM."""
    driver = ("import argparse, sys; from certwright.ca import mail_cli; "
              "p = argparse.ArgumentParser(); "
              "mail_cli.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); "
              "sys.exit(a.func(a))")
    maildir = tmp_path / "cli-mail"
    proc = subprocess.Popen(
        [sys.executable, "-c", driver, "mail", "serve", "--listen", "127.0.0.1:0",
         "--domain", "example.test", "--maildir", str(maildir), "--max-size", "100000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        for _ in range(10):  # structlog's own lines may come first on stdout
            line = proc.stdout.readline()
            if "listening on" in line or not line:
                break
        assert "listening on 127.0.0.1:" in line
        port = int(line.split("127.0.0.1:")[1].split(",")[0])
        send(port, probe_mail())
        assert len(Maildir(maildir).list_new()) == 1
    finally:
        proc.terminate()
        rc = proc.wait(timeout=10)
    assert rc == 0


def test_pipelined_transaction(server: MailServer) -> None:
    """EHLO advertises PIPELINING; MAIL, RCPT and DATA sent in one write get their three
    replies in order and the message is delivered; a pipelined group whose only recipient
    is refused delivers nothing and leaves the session usable."""
    import socket

    def reply(f) -> bytes:  # type: ignore[no-untyped-def]
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        return line

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert reply(f).startswith(b"220")
        sock.sendall(b"EHLO client.test\r\n")
        ehlo = [f.readline()]
        while ehlo[-1][3:4] == b"-":
            ehlo.append(f.readline())
        assert b"250-PIPELINING\r\n" in ehlo and ehlo[-1].startswith(b"250 ")
        sock.sendall(b"MAIL FROM:<ca@ca.example>\r\nRCPT TO:<x@evil.example>\r\nDATA\r\n")
        assert reply(f).startswith(b"250")
        assert reply(f).startswith(b"550")
        assert reply(f)[:1] == b"5"  # no valid recipient: no DATA
        sock.sendall(b"RSET\r\nMAIL FROM:<ca@ca.example> SIZE=100\r\n"
                     b"RCPT TO:<postmaster@example.test>\r\nDATA\r\n")
        assert [reply(f)[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(crlf(probe_mail(message_id="<pipe@ca.example>")) + b".\r\n")
        assert reply(f).startswith(b"250 2.0.0 OK delivered as ")
        sock.sendall(b"QUIT\r\n")
        assert reply(f).startswith(b"221")
    md = Maildir(server.maildir.path)
    (name,) = md.list_new()
    assert parse_message(md.read(name)).message_id == "<pipe@ca.example>"


def test_quick_address_parse_agrees_with_aiosmtpd() -> None:
    """The server's quick MAIL/RCPT argument parse gives what aiosmtpd's own would."""
    from aiosmtpd.smtp import SMTP

    from certwright.ca.mailserver import _SMTP

    class Handler:
        pass

    theirs, ours = SMTP(Handler()), _SMTP(Handler())
    samples = ["<a@b.c>", "<a@b.c> SIZE=12", "<a@b.c>  SIZE=12 BODY=8BITMIME  ", "<a.b@c>",
               "<a..b@c>", "<.a@c>", "<a@b..c>", '<"q r"@x>', "<>", "a@b", "<a@[1.2.3.4]>",
               "<a@b> (comment)", "<a@b>x", "< a@b >", "<A!#$%&'*+/=?^_`{|}~-@Z_z.y-x>  ",
               "<a@b.>", "<a@-b>", "<a@b>\tSIZE=1", "<a@b> x(y)", "<@route:a@b>", "<a@b>>",
               "<jörg@example.test>", "", "<a@b", "<" + "l" * 70 + "@x>"]
    for arg in samples:
        assert ours._getaddr(arg) == theirs._getaddr(arg), arg
    theirs.local_part_limit = ours.local_part_limit = 64
    for arg in samples:
        assert ours._getaddr(arg) == theirs._getaddr(arg), arg


def test_forged_auth_results_found_in_any_spelling(server: MailServer) -> None:
    """The quick check for an Authentication-Results header misses no spelling of it."""
    for forged in (b"authentication-results: certwright.local; dkim=pass\r\n",
                   b"AUTHENTICATION-RESULTS : Certwright.Local ; spf=pass\r\n"):
        send(server.port, forged + probe_mail())
    md = Maildir(server.maildir.path)
    for name in md.list_new():
        stored = md.read(name)
        assert stored.lower().count(b"authentication-results") == 1
        assert b"pass" not in stored.split(b"\n\n", 1)[0]
