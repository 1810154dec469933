"""Parse mail from outside, which is hostile: refuse what is too big, deep or ambiguous.

:func:`parse_message` checks sizes and the MIME structure on the raw bytes *before* the
``email`` package sees them (a linear scan of the lines that tracks boundaries with a depth
counter), so a 20 MB body is refused unparsed and 1000-deep nesting never reaches the
package's recursive parser. Everything it raises on purpose is :class:`HostileMail` with a
reason; any other exception from the ``email`` package is turned into one as well.

Hazards: Python 3.11.7's ``email.utils.getaddresses``/``parseaddr`` lack the
CVE-2023-27043 fix, so addresses go through our strict :func:`parse_address_list`; header
values may hold invalid RFC 2047 words or raw 8-bit bytes (decoded with replacement);
links may carry userinfo, encoded slashes or another host (see :func:`safe_link`).

What a parse examined is counted in a :class:`ParseStats` when one is passed in, so tests
and benchmarks check that hostile mail costs work linear in its size, not wall time.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.utils import parsedate_to_datetime

from certwright.mail.addresses import HostileMail, parse_address_list
from certwright.mail.links import link_problem, safe_link, scan_html, urls_in

__all__ = ["HostileMail", "MailLimits", "ParseStats", "ParsedMail", "link_problem",
           "parse_address_list", "parse_message", "safe_link"]


@dataclass(frozen=True)
class MailLimits:
    """Bounds on a message, after Postfix's defaults where it has one."""

    max_message_size: int = 10_240_000  # message_size_limit
    max_header_size: int = 102_400  # header_size_limit
    max_mime_depth: int = 100  # mime_nesting_limit: a container this deep is refused
    max_parts: int = 1000
    max_header_line: int = 2048  # line_length_limit, applied to header lines
    max_header_field: int = 8192  # one unfolded field: the email package's parameter
    #                               parsing is quadratic in it (16 kB take 0.15 s)
    max_all_headers: int = 1_048_576  # header bytes of the message and all its parts
    max_link_length: int = 2048
    max_links: int = 100


@dataclass(frozen=True)
class ParsedMail:
    """What a step needs from a message; every string in it is decoded and one-line."""

    message_id: str | None
    from_addr: str
    to_addrs: list[str]
    delivered_to: list[str]
    subject: str
    date: datetime | None
    text: str
    links: list[str] = field(default_factory=list)
    authenticated: bool = False
    #: links shown as one URL in HTML but pointing to another (see :class:`HtmlScan`)
    suspicious_links: tuple[str, ...] = ()
    #: the ``X-Certwright-Kind`` header: the mail says it is the CA's (see mail.claims)
    ca_kind: str | None = None


@dataclass
class ParseStats:
    """The work one :func:`parse_message` did, filled in as it goes (also when it refuses).

    * ``prescan_lines``: raw lines the structure pre-scan looked at;
    * ``parsed_bytes``: bytes handed to the ``email`` package (0: refused before parsing);
    * ``html_chars``: characters the HTML scanner examined (each ``find`` counts the span
      it searched, each tag's regexes its length), summed over the HTML parts;
    * ``html_tags``: tags the HTML scanner looked at;
    * ``text_chars``: characters searched for URLs (plain text and flattened HTML).
    """

    prescan_lines: int = 0
    parsed_bytes: int = 0
    html_chars: int = 0
    html_tags: int = 0
    text_chars: int = 0


_HEADER_RE = re.compile(rb"^(?:From |[!-9;-~]*:)")  # as email.feedparser's headerRE
_ONCE = ("From", "To", "Cc", "Subject", "Message-ID", "Date", "Content-Type")


def _probe_content_type(value: str) -> tuple[str, str | None]:
    """The maintype and boundary the ``email`` package would see for this header value."""
    probe = Message()
    probe["Content-Type"] = value
    maintype = probe.get_content_maintype()
    return maintype, (probe.get_boundary() if maintype == "multipart" else None)


class _Scanner:
    """One linear pass over the raw lines: header size, line length, MIME depth and parts.

    Mirrors how ``email.feedparser`` splits a message: a boundary line of *any* open
    multipart ends every part nested in it (the innermost multipart with that boundary
    wins, which can only over-count depth); a ``message/*`` part holds a nested message.
    """

    def __init__(self, limits: MailLimits) -> None:
        self.limits = limits
        self.stack: list[str | None] = []  # one entry per open container (None: message/*)
        self.index: dict[str, int] = {}
        self.in_headers, self.top, self.parts, self.header_bytes = True, True, 0, 0
        self.all_header_bytes = 0
        self.current: list[bytes] = []
        self.content_type: str | None = None

    def _reindex(self) -> None:
        self.index = {b: i for i, b in enumerate(self.stack) if b is not None}

    def _flush_header(self) -> None:
        if self.current:
            field = b"".join(self.current)
            if len(field) > self.limits.max_header_field:
                raise HostileMail(f"a header field is longer than {self.limits.max_header_field}"
                                  " bytes")
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"content-type" and self.content_type is None:
                self.content_type = value.decode("ascii", "surrogateescape").strip()
            self.current.clear()

    def _end_headers(self) -> None:
        self.in_headers, self.top = False, False
        value, self.content_type = self.content_type, None
        if value is None:
            return
        maintype, boundary = _probe_content_type(value)
        if maintype not in ("multipart", "message") or (maintype == "multipart" and not boundary):
            return
        if len(self.stack) + 1 >= self.limits.max_mime_depth:
            raise HostileMail(f"MIME nesting reaches the limit of {self.limits.max_mime_depth}"
                              " levels")
        self.stack.append(boundary)
        self._reindex()
        self.in_headers = maintype == "message"

    def _boundary(self, line: bytes) -> tuple[int, bool] | None:
        body = line.rstrip(b"\r\n").rstrip(b" \t")[2:].decode("ascii", "surrogateescape")
        if body in self.index:
            return self.index[body], False
        if body.endswith("--") and body[:-2] in self.index:
            return self.index[body[:-2]], True
        return None

    def feed(self, line: bytes) -> None:
        """Account for one line (with its line ending); raise HostileMail on a breach."""
        if self.top:
            self.header_bytes += len(line)
            if self.header_bytes > self.limits.max_header_size:
                raise HostileMail(f"headers larger than {self.limits.max_header_size} bytes")
        hit = self._boundary(line) if self.index and line.startswith(b"--") else None
        if hit is not None:
            level, closing = hit
            self.current.clear()
            self.content_type, self.top = None, False
            del self.stack[level + (0 if closing else 1):]
            self._reindex()
            self.in_headers = not closing
            if not closing:
                self.parts += 1
                if self.parts > self.limits.max_parts:
                    raise HostileMail(f"more than {self.limits.max_parts} MIME parts")
            return
        if not self.in_headers:
            return
        self.all_header_bytes += len(line)
        if self.all_header_bytes > self.limits.max_all_headers:
            raise HostileMail(f"headers of all parts larger than {self.limits.max_all_headers}"
                              " bytes")
        if len(line) > self.limits.max_header_line:
            raise HostileMail(f"header line longer than {self.limits.max_header_line} bytes")
        if line[:1] in (b" ", b"\t") and self.current:
            self.current.append(line)
            return
        self._flush_header()
        if _HEADER_RE.match(line):
            self.current.append(line)
            return
        self._end_headers()
        if line.strip():  # no blank separator: this line already belongs to the body
            self.in_headers = False

    def finish(self) -> None:
        """Raise HostileMail if a multipart was never closed (a truncated message)."""
        self._flush_header()
        if any(b is not None for b in self.stack):
            raise HostileMail("truncated MIME: a multipart's closing boundary is missing")


def _scan_structure(raw: bytes, limits: MailLimits, stats: ParseStats) -> None:
    scanner = _Scanner(limits)
    lines = 0  # a local in the loop, added to stats however the scan ends
    try:
        for line in raw.splitlines(keepends=True):
            lines += 1
            scanner.feed(line)
    finally:
        stats.prescan_lines += lines
    scanner.finish()


def _decode_header(value: str | None) -> str:
    """Decode RFC 2047 words and stray 8-bit bytes with replacement; make it one line."""
    if value is None:
        return ""
    text = str(value)
    try:
        chunks = decode_header(text)
    except Exception:  # noqa: BLE001 - email raises HeaderParseError, binascii.Error, ...
        chunks = [(text, None)]
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "raw-unicode-escape"))
        except (LookupError, UnicodeDecodeError):
            out.append(chunk.decode("utf-8", "replace"))
    joined = "".join(out)
    return " ".join("".join(c if c.isprintable() else " " for c in joined).split())


def _raw_all(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` as text (8-bit bytes decoded as UTF-8, replaced)."""
    lname = name.lower()
    return [_decode_raw(value) for key, value in msg.raw_items() if key.lower() == lname]


def _single(msg: Message, name: str, *, required: bool = False) -> str | None:
    values = _raw_all(msg, name)
    if len(values) > 1:
        raise HostileMail(f"{len(values)} {name} headers (at most one allowed)")
    if required and not values:
        raise HostileMail(f"no {name} header")
    return values[0] if values else None


def _decodable(name: str, value: str) -> str:
    """``value`` unchanged, or HostileMail when its bytes or encoded words do not decode:
    an address header that cannot be read could hide who sent a mail or whom it is for."""
    if "\ufffd" in value:
        raise HostileMail(f"{name}: undecodable bytes in the header")
    if "=?" in value:
        try:
            for chunk, charset in decode_header(value):
                if isinstance(chunk, bytes):
                    chunk.decode(charset or "ascii")
        except Exception as exc:  # noqa: BLE001 - HeaderParseError, binascii.Error, ...
            raise HostileMail(f"{name}: undecodable encoded word "
                              f"({type(exc).__name__})") from None
    return value


def _addresses(msg: Message, name: str) -> list[str]:
    found: list[str] = []
    for value in _raw_all(msg, name):
        _decodable(name, value)
        try:
            found.extend(parse_address_list(value))
        except HostileMail as exc:
            raise HostileMail(f"{name}: {exc.reason}") from None
    return found


def _decode_raw(value: str) -> str:
    """Undo the surrogate escapes of 8-bit header bytes (UTF-8, with replacement)."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _part_text(part: Message) -> str:
    r"""The part's text with its line endings as ``\n``: mail fetched over IMAP keeps the
    wire form's CRLF, and a line read with ``$`` must end the same wherever it came from."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _authenticated(msg: Message, trusted: set[str]) -> bool:
    """True if a trusted Authentication-Results header passes dkim/spf or is our MTA's own."""
    for value in _raw_all(msg, "Authentication-Results"):
        text = " ".join(value.split())
        authserv, _, results = text.partition(";")
        if authserv.split(" ")[0].strip().lower() not in trusted:
            continue
        results = results.strip().lower()
        if results == "none" or re.search(r"(?:^|[\s;])(?:dkim|spf)=pass\b", results):
            return True
    return False


def parse_message(raw: bytes, *, limits: MailLimits = MailLimits(),
                  trusted_authserv_ids: Iterable[str] = (),
                  stats: ParseStats | None = None) -> ParsedMail:
    """Parse one raw message into a :class:`ParsedMail`, refusing hostile input.

    Raises :class:`HostileMail` (never anything else) when the message is over a limit,
    has truncated MIME, duplicate or missing From, ambiguous addresses, or cannot be parsed.
    Pure and deterministic: repeat calls give the same answer. ``stats``, if given, is
    filled with the work done (see :class:`ParseStats`), whether the message is refused
    or not.
    """
    if stats is None:
        stats = ParseStats()
    if len(raw) > limits.max_message_size:
        raise HostileMail(f"message too large: {len(raw)} bytes (limit {limits.max_message_size})")
    _scan_structure(raw, limits, stats)
    try:
        return _parse_checked(raw, limits, {t.lower() for t in trusted_authserv_ids}, stats)
    except HostileMail:
        raise
    except Exception as exc:  # noqa: BLE001 - the email package's failures are many
        raise HostileMail(f"unparseable message: {type(exc).__name__}: {exc}"[:300]) from None


def _parse_checked(raw: bytes, limits: MailLimits, trusted: set[str],
                   stats: ParseStats) -> ParsedMail:
    stats.parsed_bytes += len(raw)
    msg = message_from_bytes(raw)
    for name in _ONCE:
        _single(msg, name)
    from_value = _decodable("From", _single(msg, "From", required=True) or "")
    senders = parse_address_list(from_value or "")
    if len(senders) != 1:
        raise HostileMail(f"From names {len(senders)} addresses (exactly one allowed)")
    message_id = _decode_header(_single(msg, "Message-ID")) or None
    if message_id and (len(message_id) > 998 or not re.fullmatch(r"<[!-~]+>", message_id)):
        raise HostileMail("malformed Message-ID")
    date_text = _single(msg, "Date")
    try:
        date = parsedate_to_datetime(date_text) if date_text else None
    except (TypeError, ValueError, IndexError):
        date = None
    plain: list[str] = []
    html_text: list[str] = []
    links: list[str] = []
    suspicious: list[str] = []
    stack: list[Message] = [msg]  # iterative walk: no recursion whatever the depth
    while stack:
        part = stack.pop()
        if part.is_multipart():
            payload = part.get_payload()
            children: list[Message] = [p for p in payload if isinstance(p, Message)] \
                if isinstance(payload, list) else []
            stack.extend(reversed(children))
            continue
        if part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            text = _part_text(part)
            plain.append(text)
            stats.text_chars += len(text)
            links.extend(urls_in(text))
        elif ctype == "text/html":
            scan = scan_html(_part_text(part))
            stats.html_chars += scan.examined
            stats.html_tags += scan.tags
            stats.text_chars += len(scan.text)
            links.extend(scan.hrefs)
            suspicious.extend(scan.mismatched)
            html_text.append(scan.text)
            links.extend(urls_in(scan.text))
    unique = [link for link in dict.fromkeys(links)  # dedup, keeping the first's place
              if link[:8].lower().startswith(("http://", "https://"))
              and len(link) <= limits.max_link_length]
    return ParsedMail(
        message_id=message_id, from_addr=senders[0],
        to_addrs=_addresses(msg, "To") + _addresses(msg, "Cc"),
        delivered_to=_addresses(msg, "Delivered-To"),
        subject=_decode_header(_single(msg, "Subject")), date=date,
        text="\n".join(plain) if plain else "\n".join(html_text),
        links=unique[: limits.max_links], authenticated=_authenticated(msg, trusted),
        suspicious_links=tuple(dict.fromkeys(suspicious)),
        ca_kind=_decode_header(_single(msg, "X-Certwright-Kind")) or None)
