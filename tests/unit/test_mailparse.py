"""Hostile-mail-proof parsing: limits, MIME structure, headers, addresses, links.

Hostile input is checked on the work the parser reports in a ParseStats (lines pre-scanned,
bytes parsed, characters examined), never on wall time: bench/hostile_inputs.py has the
timings.
"""
from __future__ import annotations

from collections.abc import Callable
from email.utils import getaddresses, parseaddr

import pytest

from certwright.errors import CertwrightError
from certwright.mail.parse import (
    HostileMail,
    MailLimits,
    ParseStats,
    link_problem,
    parse_address_list,
    parse_message,
    safe_link,
)
from tests.support.mail import (
    CA_BASE,
    PROBE_PATH,
    big_body,
    headers,
    nested_multipart,
    probe_mail,
    truncated_mime,
)

LINK = f"{CA_BASE}{PROBE_PATH}?token=t0k3n"


def refused(raw: bytes, **kw: object) -> str:
    with pytest.raises(HostileMail) as info:
        parse_message(raw, **kw)  # type: ignore[arg-type]
    return info.value.reason


def html_mail(body: bytes) -> bytes:
    return headers(extra="Content-Type: text/html\n") + b"\n" + body


def test_hostile_mail_is_a_certwright_error() -> None:
    """HostileMail derives from the project's base error and carries its reason."""
    err = HostileMail("x")
    assert isinstance(err, CertwrightError) and err.reason == "x"


def test_probe_mail_fields() -> None:
    """A well-formed probe yields sender, recipients, subject, text and its one link."""
    mail = parse_message(probe_mail(message_id="<p1@ca.example>"))
    assert mail.from_addr == "ca@ca.example"
    assert mail.to_addrs == ["postmaster@example.test"]
    assert mail.subject == "Please verify your domain"
    assert mail.message_id == "<p1@ca.example>"
    assert mail.date is not None and mail.date.year == 2026
    assert LINK in mail.text
    assert mail.links == [LINK]
    assert mail.authenticated is False


def test_html_links_deduplicated_and_script_ignored() -> None:
    """hrefs from HTML join the text links once each; script content is not a link."""
    mail = parse_message(probe_mail(html=True))
    assert mail.links == [LINK]


def test_html_only_text_is_stripped_of_tags() -> None:
    """With only text/html, text is the visible text with tags removed."""
    raw = headers(extra="Content-Type: text/html\n") + (
        b"\n<html><body><p>Go <a href='http://a.example/x?a=1&amp;b=2'>there</a>"
        b"</p><style>p{}</style></body></html>\n")
    mail = parse_message(raw)
    assert "<" not in mail.text and "Go there" in mail.text
    assert mail.links == ["http://a.example/x?a=1&b=2"]


def test_overlong_links_dropped() -> None:
    """Links longer than the limit are not offered."""
    long_link = "http://a.example/" + "x" * 3000
    mail = parse_message(probe_mail(link=long_link, extra_text="http://b.example/ok"))
    assert mail.links == ["http://b.example/ok"]


def test_twenty_megabytes_refused_without_parsing() -> None:
    """A 20 MB message is refused on its size: not a line scanned, not a byte parsed."""
    raw = big_body(20 * 1024 * 1024)
    stats = ParseStats()
    reason = refused(raw, stats=stats)
    assert reason.startswith("message too large")
    assert stats == ParseStats()


@pytest.mark.parametrize("depth", [100, 1000, 20000])
def test_deep_nesting_refused_by_the_prescan(depth: int) -> None:
    """Multiparts nested 100, 1000 and 20000 deep are refused by the pre-scan once it
    reaches the depth limit (about three lines a level, whatever the depth beyond), and
    the email package never sees them."""
    stats = ParseStats()
    reason = refused(nested_multipart(depth), stats=stats)
    assert "MIME nesting" in reason
    assert stats.parsed_bytes == 0
    assert stats.prescan_lines <= 3 * MailLimits().max_mime_depth + 10


def test_nesting_below_limit_parses() -> None:
    """99 levels (just under the limit) still parse, and the link inside is found."""
    mail = parse_message(nested_multipart(99))
    assert mail.links == [f"{CA_BASE}{PROBE_PATH}"]


def test_message_rfc822_chain_counts_as_nesting() -> None:
    """message/rfc822 parts nest messages too; a long chain is refused."""
    raw = headers() + b"Content-Type: message/rfc822\n\n" + (
        b"From: a@b.example\nContent-Type: message/rfc822\n\n" * 500) + b"From: a@b.example\n\nx\n"
    assert "MIME nesting" in refused(raw)


def test_truncated_mime_refused() -> None:
    """A multipart without its closing boundary is refused as truncated."""
    assert refused(truncated_mime()).startswith("truncated MIME")


def test_too_many_parts_refused() -> None:
    """More parts than the limit are refused."""
    raw = headers(extra='Content-Type: multipart/mixed; boundary="q"\n') + b"\n" + (
        b"--q\nContent-Type: text/plain\n\nx\n" * 20) + b"--q--\n"
    assert "MIME parts" in refused(raw, limits=MailLimits(max_parts=10))


def test_header_limits() -> None:
    """An overlong header line and an oversized header block are refused."""
    assert "header line longer" in refused(headers(extra="X-A: " + "a" * 5000 + "\n") + b"\nx")
    many = "".join(f"X-{i}: {'b' * 90}\n" for i in range(1200))
    assert "headers larger" in refused(headers(extra=many) + b"\nx")


def test_undecodable_headers_do_not_crash() -> None:
    """Bad RFC 2047 words, unknown charsets and invalid UTF-8 decode with replacement."""
    raw = headers().replace(
        b"Subject: verify",
        b"Subject: =?utf-8?b?!!!notbase64?= =?x-unknown?q?abc?= \xff\xfe caf\xc3\xa9")
    mail = parse_message(raw + b"\n\nbody\n")
    assert "\ufffd" in mail.subject and "café" in mail.subject
    assert mail.subject.isprintable()


def test_encoded_words_decoded() -> None:
    """Valid RFC 2047 words are decoded."""
    raw = headers().replace(b"Subject: verify", b"Subject: =?utf-8?q?Caf=C3=A9?= ok")
    assert parse_message(raw + b"\n\nx\n").subject == "Café ok"


def test_garbage_is_refused_not_crashing() -> None:
    """Random bytes are refused with a reason (no From), never another exception."""
    assert refused(bytes(range(256)) * 40) == "no From header"


def test_duplicate_from_refused() -> None:
    """Two From headers are ambiguous and refused."""
    assert "2 From headers" in refused(b"From: a@b.example\nFrom: c@d.example\n\nx")


def test_from_must_be_one_address() -> None:
    """A From with two addresses is refused."""
    assert "exactly one" in refused(b"From: a@b.example, c@d.example\n\nx")


def test_authenticated_only_from_trusted_authserv() -> None:
    """Authentication-Results count only from trusted ids: dkim/spf=pass or our MTA's none."""
    base = b"From: a@b.example\n\nx"
    forged = b"Authentication-Results: evil.example; dkim=pass\n" + base
    ours = b"Authentication-Results: certwright.local; none\n" + base
    passed = b"Authentication-Results: mx.example; spf=pass smtp.mailfrom=b.example\n" + base
    failed = b"Authentication-Results: mx.example; dkim=fail\n" + base
    trusted = ["certwright.local", "mx.example"]
    assert not parse_message(forged, trusted_authserv_ids=trusted).authenticated
    assert parse_message(ours, trusted_authserv_ids=trusted).authenticated
    assert parse_message(passed, trusted_authserv_ids=trusted).authenticated
    assert not parse_message(failed, trusted_authserv_ids=trusted).authenticated
    assert not parse_message(ours).authenticated


CVE_CASES = [
    # (input, what Python 3.11.7's stdlib wrongly returns as an address)
    ("alice@example.org)<bob@example.com>", "alice@example.org"),
    ('"a@b.com"@evil.example', '"a@b.com"@evil.example'),
    ("alice@example.org <bob@example.com>", None),
    ("a@b.example@evil.example", None),
]


@pytest.mark.parametrize(("value", "stdlib_answer"), CVE_CASES)
def test_cve_2023_27043_addresses_refused(value: str, stdlib_answer: str | None) -> None:
    """Our parser refuses what the unfixed stdlib mis-parses into a plausible address."""
    if stdlib_answer is not None:  # document the stdlib's wrong answer on this Python
        assert stdlib_answer in [addr for _, addr in getaddresses([value])] + [parseaddr(value)[1]]
    with pytest.raises(HostileMail) as info:
        parse_address_list(value)
    assert info.value.reason.startswith("ambiguous address")


def test_cve_address_in_from_refuses_the_message() -> None:
    """A CVE-2023-27043 address in From makes the whole message hostile."""
    assert "ambiguous address" in refused(b"From: alice@example.org)<bob@example.com>\n\nx")


@pytest.mark.parametrize(("value", "expected"), [
    ("a@B.Example", ["a@b.example"]),
    ('Alice <a@b.example>, "Bob, Jr." <c@d.example>', ["a@b.example", "c@d.example"]),
    ("a@b.example (Alice)", ["a@b.example"]),
    ("=?utf-8?q?Al=C3=ADce?= <a@b.example>", ["a@b.example"]),
    ("undisclosed-recipients:;", []),
    ("team: a@b.example, c@d.example;", ["a@b.example", "c@d.example"]),
])
def test_valid_address_lists(value: str, expected: list[str]) -> None:
    """Ordinary address forms parse; domains are lower-cased."""
    assert parse_address_list(value) == expected


@pytest.mark.parametrize("value", [
    "<a@b.example", "a@[10.0.0.1]", "a @b.example", "a\\b@c.example", '"open <a@b.example>',
    "x: a@b.example", "a@b.example;", "(unclosed a@b.example",
])
def test_malformed_address_lists_refused(value: str) -> None:
    """Unbalanced, literal, spaced or stray-special addresses are refused."""
    with pytest.raises(HostileMail):
        parse_address_list(value)


BASE = "http://127.0.0.1:8443"


@pytest.mark.parametrize("url", [
    f"{BASE}{PROBE_PATH}?token=1", f"{BASE}{PROBE_PATH}/confirm", f"HTTP://127.0.0.1:8443{PROBE_PATH}",
])
def test_safe_link_accepts_same_origin_under_prefix(url: str) -> None:
    """Same scheme, host and port, and a path under the prefix: safe."""
    assert safe_link(url, BASE, PROBE_PATH)


@pytest.mark.parametrize(("url", "why"), [
    (f"http://127.0.0.1:9999{PROBE_PATH}", "origin"),
    (f"http://evil.example{PROBE_PATH}", "origin"),
    (f"https://127.0.0.1:8443{PROBE_PATH}", "origin"),
    (f"http://ca.example@127.0.0.1:8443{PROBE_PATH}", "userinfo"),
    (f"{BASE}\\@evil.example{PROBE_PATH}", "backslash"),
    (f"{BASE}{PROBE_PATH}4", "not under"),
    (f"{BASE}/domains/verify/other", "not under"),
    (f"{BASE}{PROBE_PATH}/../../admin", "dot segment"),
    (f"{BASE}{PROBE_PATH}%2f..%2fadmin", "encoded"),
    (f"{BASE}{PROBE_PATH}%2E%2E", "encoded"),
    (f"{BASE}{PROBE_PATH}\x00", "control"),
    (f"{BASE}{PROBE_PATH} x", "whitespace"),
    ("javascript:alert(1)", "scheme"),
])
def test_safe_link_refuses(url: str, why: str) -> None:
    """Other origins, userinfo, escapes from the prefix and odd characters are refused."""
    problem = link_problem(url, BASE, PROBE_PATH)
    assert problem is not None and why in problem
    assert not safe_link(url, BASE, PROBE_PATH)


def test_safe_link_normalizes_host_and_default_port() -> None:
    """Hosts compare case-insensitively and IDNA-normalized; port 80 is http's default."""
    assert safe_link("http://CA.Example/x", "http://ca.example:80/")
    assert safe_link("http://bücher.example/x", "http://xn--bcher-kva.example/")
    assert not safe_link("http://ca.example.evil/x", "http://ca.example/")


@pytest.mark.parametrize(("make", "size"), [
    (lambda n: b"<a " * n, 600_000),
    (lambda n: b"<" * n, 2_000_000),
    (lambda n: b"<!--" + b"a" * n, 2_000_000),
    (lambda n: b"".join(b"<a href='http://x.example/%d'>x</a>" % i for i in range(n)), 100_000),
], ids=["open-tags", "lt", "open-comment", "many-links"])
def test_pathological_html_is_linear(make: Callable[[int], bytes], size: int) -> None:
    """HTML built to make parsers quadratic costs the link finder work linear in its size:
    at most three characters examined per character of the document, and twice the
    document is at most about twice the work."""
    work: list[tuple[int, int]] = []
    for n in (size // 2, size):
        body = make(n)
        stats = ParseStats()
        mail = parse_message(html_mail(body), stats=stats)
        assert len(mail.links) <= MailLimits().max_links
        assert stats.html_chars <= 3 * len(body)
        work.append((len(body), stats.html_chars))
    (half_len, half_work), (full_len, full_work) = work
    assert full_work / full_len <= 1.05 * half_work / half_len


def test_overlong_header_field_refused() -> None:
    """A folded Content-Type over the field limit is refused before the email package
    parses its parameters (which is quadratic)."""
    folded = 'Content-Type: multipart/mixed; boundary="' + "\n ;;;;;;;;" * 2000 + '"\n'
    assert "header field is longer" in refused(headers(extra=folded) + b"\nx")


def test_headers_of_all_parts_bounded() -> None:
    """Header bytes summed over all parts are bounded too, not only the top level."""
    part = b"--q\nContent-Type: text/plain\n" + b"X-Pad: " + b"p" * 2000 + b"\n\nx\n"
    raw = headers(extra='Content-Type: multipart/mixed; boundary="q"\n') + b"\n" + part * 900
    assert "headers of all parts" in refused(raw + b"--q--\n")


@pytest.mark.parametrize("header", [
    b"From: =?utf-8?b?AAAA////?= <ca@ca.example>",
    b"From: \xff\xfe caller <ca@ca.example>",
    b"To: =?x-unknown-charset?q?abc?= <postmaster@example.test>",
    b"To: \xc3\x28 <postmaster@example.test>",
])
def test_undecodable_from_or_to_is_refused(header: bytes) -> None:
    """A From or To whose bytes or encoded words do not decode is refused, saying which
    header (it could hide who sent the mail or whom it is for)."""
    name = header.split(b":")[0].decode()
    base = {b"From": b"From: ca@ca.example", b"To": b"To: postmaster@example.test"}
    lines = [header if header.startswith(k + b":") else v for k, v in base.items()]
    raw = b"\n".join([*lines, b"Subject: verify", b"Message-ID: <u1@ca.example>",
                      b"", b"body", b""])
    reason = refused(raw)
    assert name in reason and "undecodable" in reason


def test_html_link_whose_text_names_another_url_is_suspicious() -> None:
    """An HTML anchor showing one URL and pointing to another: both URLs are listed as
    suspicious; an anchor whose text is its own URL, or plain words, is not."""
    other = "http://evil.example/steal"
    raw = probe_mail(link=LINK)
    html = (f'<p><a href="{other}">{LINK}</a> <a href="{LINK}">{LINK}</a>'
            f' <a href="{LINK}">click here</a></p>')
    msg = (b"From: ca@ca.example\nTo: postmaster@example.test\nSubject: verify\n"
           b"Message-ID: <h1@ca.example>\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + html.encode() + b"\n")
    mail = parse_message(msg)
    assert set(mail.suspicious_links) == {other, LINK}
    same = msg.replace(f'<a href="{other}">'.encode(), f'<a href="{LINK}">'.encode())
    assert parse_message(same).suspicious_links == ()
    assert parse_message(raw).suspicious_links == ()
