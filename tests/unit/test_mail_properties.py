"""Property-based fuzzing (bounded) of the mail parser, the link checker and the claims.

Whatever bytes arrive, :func:`parse_message` either parses or raises HostileMail (never
anything else); :func:`link_problem` never raises and only passes links on the CA's
origin; an HTML lure (text naming another URL than the href) is always flagged.
"""
from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certwright.mail.claims import Claims
from certwright.mail.links import link_problem, scan_html
from certwright.mail.parse import HostileMail, parse_message
from tests.support.mail import CA_BASE, PROBE_PATH, probe_mail

BOUNDED = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
_HEADER_NAMES = st.sampled_from(["From", "To", "Cc", "Subject", "Message-ID", "Date",
                                 "Content-Type", "Delivered-To", "X-Certwright-Kind",
                                 "Content-Transfer-Encoding", "MIME-Version"])
_BYTES_LINE = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" "))


@BOUNDED
@given(st.lists(st.tuples(_HEADER_NAMES, _BYTES_LINE), max_size=12), st.binary(max_size=2000))
def test_any_header_soup_parses_or_is_refused_as_hostile(headers: list[tuple[str, bytes]],
                                                         body: bytes) -> None:
    """Random headers and body: a ParsedMail or HostileMail, nothing else escapes."""
    raw = b"".join(name.encode() + b": " + value + b"\n" for name, value in headers)
    raw += b"\n" + body
    try:
        mail = parse_message(raw)
    except HostileMail as exc:
        reason = exc.reason
        mail = None
    if mail is None:
        assert reason
        return
    assert "\n" not in mail.subject and all("\ufffd" not in a for a in mail.to_addrs)
    Claims().claim(mail)  # never raises either


@BOUNDED
@given(st.binary(max_size=4000))
def test_mutated_probe_mail_parses_or_is_refused(noise: bytes) -> None:
    """A real probe mail with bytes spliced in: parsed or refused, never a crash; the raw
    claim check never raises."""
    raw = probe_mail()
    cut = len(noise) % (len(raw) + 1)
    mutated = raw[:cut] + noise + raw[cut:]
    with contextlib.suppress(HostileMail):
        parse_message(mutated)
    Claims.of(origins=(CA_BASE,)).claim_raw(mutated)


@BOUNDED
@given(st.text(max_size=200))
def test_link_problem_never_raises_and_passes_only_the_cas_origin(tail: str) -> None:
    """Any URL text: a reason or None; None only for the CA's scheme, host and port."""
    for url in (tail, f"{CA_BASE}{tail}", f"http://evil.example/{tail}",
                f"{CA_BASE}@evil.example/{tail}"):
        problem = link_problem(url, CA_BASE, PROBE_PATH)
        if problem is None:
            assert url.startswith(f"{CA_BASE}{PROBE_PATH}")


@BOUNDED
@given(st.from_regex(r"[a-z0-9/._-]{0,40}", fullmatch=True),
       st.from_regex(r"[a-z0-9/._-]{1,40}", fullmatch=True))
def test_an_html_lure_is_always_flagged(shown_path: str, target_path: str) -> None:
    """An anchor whose text names one URL and whose href is another is reported with both."""
    shown = f"{CA_BASE}/{shown_path}"
    target = f"http://evil.example/{target_path}"
    scan = scan_html(f'<p>go <a href="{target}">{shown}</a> now</p>')
    assert target in scan.mismatched


@BOUNDED
@given(st.text(max_size=3000))
def test_the_html_scanner_survives_any_text(doc: str) -> None:
    """Any text as HTML: a scan whose work is linear in its length, never an exception."""
    scan = scan_html(doc)
    assert scan.examined <= 4 * len(doc) + 16
