"""The link checker and the mail parser under property-based fuzzing (the fault campaign,
part d; the CSR checks are fuzzed in tests/unit/test_csr_checks.py, the YAML loader in
tests/unit/test_fuzz_yaml.py).

Bounded and derandomized examples, no deadline. The link checker is held to an oracle of
its own written here from its contract: a URL it lets through has the base's scheme, host
and port, a path under the base's path and prefix at a segment boundary, and none of the
forbidden characters, userinfo or dot segments; a URL built inside the base is let
through; the classic escapes from a good URL (another host, userinfo, a port, ``..``,
encoded slashes, a backslash) are stopped. The HTML scanner's reported work stays linear
in the document. The parser, on any bytes and on mutations of a real probe mail, returns a
ParsedMail or raises HostileMail, nothing else, and what it returns holds to its contract
(one-line strings, links that are http(s) URLs present in the message, within limits).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certwright.mail.links import link_problem, scan_html, urls_in
from certwright.mail.parse import HostileMail, MailLimits, ParseStats, parse_message
from tests.support.mail import CA_BASE, PROBE_PATH, probe_mail

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

BASES = ["http://127.0.0.1:8443", "https://ca.example", "https://ca.example/base/",
         "http://[::1]:8080/ca", "https://CA.Example:443"]
PREFIXES = ["", "/domains/verify/", "/domains/verify/p123", "account/confirm"]
SEGMENT = st.text(alphabet="abcXYZ019-_~.%2fe5c", min_size=1, max_size=8)
URL_CHARS = st.sampled_from([*"/:@?#%.\\ \t\x00[]", "..", "%2f", "%2e", "%5c", "//",
                             "http://", "https://", "ca.example", "127.0.0.1", ":8443",
                             "\u0430", "\uff0e", "xn--", "evil"])
URLISH = st.lists(st.one_of(URL_CHARS, st.text(max_size=3)), max_size=20).map("".join)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _oracle_allows(url: str, base: str, prefix: str) -> bool:
    """The contract, checked independently on a URL the checker let through."""
    if any(c <= " " or c in "\x7f\\" for c in url):
        return False
    parts = urlsplit(url)
    if "@" in parts.netloc or _origin(url) != _origin(base):
        return False
    path = parts.path or "/"
    if any(s in (".", "..") for s in path.split("/")):
        return False
    if any(e in path.lower() for e in ("%2f", "%2e", "%5c")):
        return False
    want = urlsplit(base).path.rstrip("/") + ("/" + prefix.lstrip("/") if prefix else "")
    if not want or want.endswith("/"):
        return path.startswith(want or "/")
    return path == want or path.startswith(want + "/")


@FUZZ
@given(st.one_of(URLISH, st.sampled_from(BASES).flatmap(lambda b: URLISH.map(b.__add__))),
       st.sampled_from(BASES), st.sampled_from(PREFIXES))
def test_a_url_the_checker_lets_through_holds_to_its_contract(url: str, base: str,
                                                               prefix: str) -> None:
    problem = link_problem(url, base, prefix)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        assert _oracle_allows(url, base, prefix), url


@FUZZ
@given(st.sampled_from(BASES), st.sampled_from(PREFIXES), st.lists(SEGMENT, max_size=4),
       st.text(alphabet="abc=&0129", max_size=12))
def test_a_url_inside_the_base_is_let_through(base: str, prefix: str, segments: list[str],
                                              query: str) -> None:
    segments = [s for s in segments if s not in (".", "..") and "%2" not in s.lower()
                and "%5c" not in s.lower()]
    path = urlsplit(base).path.rstrip("/") + "/" + prefix.strip("/")
    url = (f"{base.split('/', 3)[0]}//{urlsplit(base).netloc}{path.rstrip('/')}/"
           + "/".join(segments) + (f"?{query}" if query else ""))
    assert link_problem(url, base, prefix) is None, url


ESCAPES = [
    lambda u: u.replace("://", "://evil.example@", 1),
    lambda u: u.replace("://", "://evil.", 1),
    lambda u: u.replace("127.0.0.1:8443", "127.0.0.1:8444", 1),
    lambda u: u.replace("127.0.0.1", "127.0.0.1.evil.example", 1),
    lambda u: u.replace("http://", "https://", 1),
    lambda u: u.replace("/verify/", "/verify/../", 1),
    lambda u: u.replace("/verify/", "/verify/%2e%2e/", 1),
    lambda u: u.replace("/verify/", "/verify%2f", 1),
    lambda u: u.replace("/verify/", "/verify\\", 1),
    lambda u: u.replace("/verify/", "/verify/ ", 1),
    lambda u: u.replace("/domains/", "/domainsx/", 1),
    lambda u: u.replace("http://", "javascript://", 1),
]


@FUZZ
@given(st.lists(st.text(alphabet="abc019-_~", min_size=1, max_size=8), max_size=3),
       st.sampled_from(range(len(ESCAPES))))
def test_the_escapes_from_a_good_link_are_stopped(segments: list[str], escape: int) -> None:
    good = f"{CA_BASE}{PROBE_PATH}/" + "/".join(segments)
    assert link_problem(good, CA_BASE, PROBE_PATH) is None, good
    bad = ESCAPES[escape](good)
    assert bad != good
    assert link_problem(bad, CA_BASE, PROBE_PATH) is not None, bad


HTMLISH = st.lists(st.one_of(
    st.sampled_from(["<", ">", "<a ", "<a href=", 'href="', "'", '"', "<!--", "-->",
                     "<script>", "</script>", "<style>", "</a>", "<br>", "&amp;", "&#x",
                     "http://", f"{CA_BASE}{PROBE_PATH}", " ", "\n"]),
    st.text(max_size=5)), max_size=60).map("".join)


@FUZZ
@given(HTMLISH)
def test_the_html_scanner_is_linear_and_finds_only_what_is_there(doc: str) -> None:
    scan = scan_html(doc)
    assert scan.examined <= 3 * len(doc) + 3
    assert scan.tags <= doc.count("<")
    for url in urls_in(scan.text):
        assert url.lower().startswith(("http://", "https://"))
        assert url in scan.text


def _check_parsed(mail: Any, raw: bytes, limits: MailLimits) -> None:
    for text in (mail.from_addr, mail.subject, *mail.to_addrs, *mail.delivered_to):
        assert "\n" not in text and "\r" not in text, text
    assert len(mail.links) <= limits.max_links
    for link in mail.links:
        assert link.lower().startswith(("http://", "https://")), link
        assert len(link) <= limits.max_link_length


def _parse(raw: bytes) -> Any:
    """The ParsedMail, checked, or None when refused with a reason."""
    limits = MailLimits()
    reason = ""
    try:
        mail = parse_message(raw, limits=limits, stats=ParseStats())
    except HostileMail as exc:
        reason = exc.reason
    if reason:
        return None
    _check_parsed(mail, raw, limits)
    return mail


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_are_refused_as_hostile(raw: bytes) -> None:
    _parse(raw)


# built once: the email package draws MIME boundaries from the random module
SEEDS = [probe_mail(message_id="<seed@ca.example>"), probe_mail(html=True)]


@st.composite
def mutated_mails(draw: st.DrawFn) -> bytes:
    """A real probe mail (plain, or with an HTML part) with bytes inserted, deleted or
    replaced at drawn places, some of them MIME's and headers' own."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    pieces = st.sampled_from([b"\n", b"\r\n", b": ", b"From: a@b\n", b"To: \n", b"--",
                              b"Content-Type: multipart/mixed; boundary=x\n", b"=?utf-8?q?",
                              b"=?x?b?", b"?=", b"\xff\xfe", b"\x00", b"<a href='", b"\n\n",
                              b"Message-ID: <a@b>\n", b"Content-Transfer-Encoding: base64\n"])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(pieces | st.binary(min_size=1, max_size=6))
        if action == "insert":
            raw[at:at] = piece
        elif action == "delete":
            del raw[at:at + draw(st.integers(1, 40))]
        else:
            raw[at:at + len(piece)] = piece
    return bytes(raw)


@FUZZ
@given(mutated_mails())
def test_a_mutated_probe_mail_parses_or_is_refused_as_hostile(raw: bytes) -> None:
    _parse(raw)


def test_the_unmutated_probe_mail_parses_with_its_link() -> None:
    """The seed of the mutations is a good mail, so mutants start from the parsing path."""
    mail = _parse(SEEDS[1])
    assert mail is not None and mail.links == [f"{CA_BASE}{PROBE_PATH}?token=t0k3n"]
