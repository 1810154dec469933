"""The bytes the CA's mailer builds: a valid RFC 5322 / MIME text message, folded and
encoded so that any parser gets back exactly the headers and body that were given."""
from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from certwright.ca.outmail import Mailer
from certwright.clock import FakeClock

SERIAL = "5F:3A:91:0C:77:E2:4B:18:A0:33:9D:61:C4:08:F7:2E:95:1B:6D:40"


def _mailer(mail_from: str = "ca@ca.example") -> Mailer:
    return Mailer(smarthost=("127.0.0.1", 1), mail_from=mail_from)


def _parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _check_wire_form(raw: bytes) -> None:
    assert raw.isascii()
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(len(line) <= 78 for line in lines)


def test_headers_and_plain_body() -> None:
    """Every header the CA's mail carries, once each; a short ASCII body goes as 7bit."""
    mailer = _mailer()
    raw = mailer.build("postmaster@example.test", "Verify example.test", "Hello,\n\nlink\n",
                       kind="domain_probe")
    _check_wire_form(raw)
    msg = _parse(raw)
    assert msg["From"] == "ca@ca.example"
    assert msg["To"] == "postmaster@example.test"
    assert msg["Subject"] == "Verify example.test"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Certwright-Kind"] == "domain_probe"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@ca.example>")
    assert msg["Date"].datetime is not None
    assert msg.get_content() == "Hello,\n\nlink\n"
    assert not msg.defects
    for name in ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                 "X-Certwright-Kind", "MIME-Version", "Content-Type",
                 "Content-Transfer-Encoding"):
        assert len(msg.get_all(name) or []) == 1, name


def test_date_comes_from_the_clock() -> None:
    clock = FakeClock()
    mailer = Mailer(smarthost=None, mail_from="ca@ca.example", clock=clock)
    msg = _parse(mailer.build("a@example.test", "s", "b", kind="k"))
    assert msg["Date"].datetime == clock.now().replace(microsecond=0)


def test_long_lines_and_non_ascii_body_round_trip() -> None:
    """Lines over 78 characters and non-ASCII text go quoted-printable; decoded, the body
    is exactly what was given (newline-terminated)."""
    url = "http://127.0.0.1:8443/certificates/" + SERIAL + "?token=" + "x" * 90
    for body in (f"Open this:\n{url}\n", "Grüße aus Köln — ✓\n", "no newline at end",
                 "trailing space \n= sign\n.\n..dots\nFrom here\n", f"{'é' * 120}\n"):
        raw = _mailer().build("a@example.test", "s", body, kind="k")
        _check_wire_form(raw)
        msg = _parse(raw)
        assert msg["Content-Transfer-Encoding"] in ("7bit", "quoted-printable")
        expected = body if body.endswith("\n") else body + "\n"
        assert msg.get_content() == expected
    assert b"quoted-printable" in _mailer().build("a@example.test", "s", f"{url}\n", kind="k")


def test_long_and_non_ascii_subjects_are_folded_and_encoded() -> None:
    """A long subject is folded at spaces (unfolding restores it); non-ASCII or unbreakable
    text is RFC 2047 encoded; the parsed value is the one given either way."""
    for subject in (f"Your certificate for www.example.test (serial {SERIAL})",
                    "word " * 40,
                    "Vérifiez le domaine exemple.test pour un compte de l'AC certwright",
                    "x" * 200,
                    "tab\there"):
        raw = _mailer().build("a@example.test", subject, "b", kind="k")
        _check_wire_form(raw)
        assert _parse(raw)["Subject"] == " ".join(subject.split()) or \
            _parse(raw)["Subject"] == subject
    folded = _mailer().build("a@example.test", f"Your certificate for www.example.test "
                             f"(serial {SERIAL})", "b", kind="k")
    assert b"\r\n (serial " in folded or b"\r\n " + SERIAL[:10].encode() in folded


@pytest.mark.parametrize("field", ["to", "subject", "kind"])
def test_header_injection_refused(field: str) -> None:
    """A CR or LF in a header value raises ValueError; nothing is built."""
    args = {"to": "a@example.test", "subject": "s", "kind": "k"}
    args[field] = args[field] + "\r\nBcc: victim@example.test"
    with pytest.raises(ValueError, match="may not contain linefeed or carriage return"):
        _mailer().build(args["to"], args["subject"], "body", kind=args["kind"])


def test_matches_what_email_message_would_say() -> None:
    """Parsed, the fast build and EmailMessage's agree on every header and the body."""
    subject, body = f"Your certificate for d1.example.test (serial {SERIAL})", (
        f"Serial: {SERIAL}\nSHA256 Fingerprint: {'ab' * 32}\n\n"
        f"http://127.0.0.1:8443/certificates/{SERIAL}\n")
    ours = _parse(_mailer().build("admin@example.test", subject, body, kind="cert_issued"))
    ref = EmailMessage()
    ref["From"], ref["To"], ref["Subject"] = "ca@ca.example", "admin@example.test", subject
    ref["Auto-Submitted"], ref["X-Certwright-Kind"] = "auto-generated", "cert_issued"
    ref.set_content(body)
    theirs = _parse(ref.as_bytes())
    for name in ("From", "To", "Subject", "Auto-Submitted", "X-Certwright-Kind",
                 "MIME-Version", "Content-Type"):
        assert str(ours[name]) == str(theirs[name]), name
    assert ours.get_content() == theirs.get_content()


def test_non_ascii_address_needs_smtputf8() -> None:
    """A non-ASCII address makes an RFC 6532 message (sent only with SMTPUTF8)."""
    data, utf8 = _mailer().messages.build("jörg@example.test", "s", "b", kind="k")
    assert utf8
    assert "jörg@example.test".encode() in data
    assert not _mailer().messages.build("a@example.test", "s", "b", kind="k")[1]
