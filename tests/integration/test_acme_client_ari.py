"""The ACME client's ARI pieces: the certID of RFC 9773's own example, and the daemon's
re-check of a window backing off when the CA cannot be read (a real SQLite store, a
closed loopback port)."""
from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certwright.clock import format_instant, parse_instant
from certwright.state.records import CertificateRecord
from certwright.state.sqlite import SQLiteStore
from certwright.steps.acme.ari_check import recheck_due
from certwright.steps.acme.renewal import cert_id, serial_of

AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")


def _cert(serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2025, 4, 1, tzinfo=UTC))
            .add_extension(x509.AuthorityKeyIdentifier(AKI, None, None), critical=False)
            .sign(key, hashes.SHA256()))


def test_cert_id_of_the_rfc_example() -> None:
    """RFC 9773 section 4.1: keyIdentifier 69:88:5B:...:C8:D4 and serial 0x87654321 give
    ``aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`` (the DER serial keeps its leading zero); the
    serial reads back as the inventory writes it."""
    ident = cert_id(_cert(0x87654321))
    assert ident == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert serial_of(ident) == "87654321"
    assert serial_of("no-dot") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_recheck_backs_off_and_keeps_the_window(tmp_path: Path) -> None:
    """A renewalInfo that cannot be read leaves the known window as it was, counts the
    failure and sets the next check 5 min later, then 10 min after a second failure; a
    certificate whose next check has not come is not read."""
    cert = _cert(0x1234)
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    now = datetime(2026, 12, 2, tzinfo=UTC)
    window = {"start": "2027-01-01T00:00:00.000000Z", "end": "2027-01-02T00:00:00.000000Z"}
    url = f"http://127.0.0.1:{_closed_port()}/acme/renewal-info/{cert_id(cert)}"
    store = SQLiteStore(tmp_path / "state.sqlite")
    with store.transaction() as tx:
        tx.put_certificate(CertificateRecord(
            name="a", run_id="r1", serial="1234", paths={"cert": str(tmp_path / "cert.pem")},
            ari={"suggestedWindow": window, "url": url, "cert_id": cert_id(cert),
                 "next_check": format_instant(now - timedelta(seconds=1))}))
        tx.put_certificate(CertificateRecord(
            name="b", run_id="r2", serial="99", ari={
                "suggestedWindow": window, "url": url,
                "next_check": format_instant(now + timedelta(hours=1))}))
    assert recheck_due(store, now) == ["a"]
    ari = store.find_certificate("a").ari  # type: ignore[union-attr]
    assert ari["suggestedWindow"] == window
    assert ari["failures"] == 1
    assert "network error" in ari["error"]
    assert parse_instant(ari["next_check"]) == now + timedelta(minutes=5)
    later = now + timedelta(minutes=6)
    assert recheck_due(store, later) == ["a"]
    ari = store.find_certificate("a").ari  # type: ignore[union-attr]
    assert ari["failures"] == 2
    assert parse_instant(ari["next_check"]) == later + timedelta(minutes=10)


def test_the_daemons_rechecks_read_off_the_loop_and_write_when_read(tmp_path: Path) -> None:
    """``BackgroundRechecks.poll`` returns while the CA has not answered yet (the CA here
    answers only once the test has seen poll return), and a later poll writes the window
    the CA gave into the record."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from certwright.steps.acme.ari_check import BackgroundRechecks

    release = threading.Event()
    seen: list[bool] = []
    fresh = {"start": "2027-02-01T00:00:00.000000Z", "end": "2027-02-02T00:00:00.000000Z"}

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(release.wait(15))  # True: poll had returned before this answer
            body = json.dumps({"suggestedWindow": fresh}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "21600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cert = _cert(0x4321)
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    now = datetime(2026, 12, 2, tzinfo=UTC)
    old = {"start": "2027-01-01T00:00:00.000000Z", "end": "2027-01-02T00:00:00.000000Z"}
    url = f"http://127.0.0.1:{server.server_address[1]}/acme/renewal-info/{cert_id(cert)}"
    store = SQLiteStore(tmp_path / "state.sqlite")
    with store.transaction() as tx:
        tx.put_certificate(CertificateRecord(
            name="a", run_id="r1", serial="4321", paths={"cert": str(tmp_path / "cert.pem")},
            ari={"suggestedWindow": old, "url": url, "cert_id": cert_id(cert),
                 "next_check": format_instant(now - timedelta(seconds=1))}))
    rechecks = BackgroundRechecks()
    try:
        assert rechecks.poll(store, now) == []  # started, not waited for
        assert rechecks.busy()
        release.set()
        written: list[str] = []
        for _ in range(200):
            written = rechecks.poll(store, now)
            if written:
                break
            time.sleep(0.05)
        assert written == ["a"]
        assert seen == [True]
        ari = store.find_certificate("a").ari  # type: ignore[union-attr]
        assert ari["suggestedWindow"] == fresh
        assert parse_instant(ari["next_check"]) == now + timedelta(hours=6)
        assert not rechecks.busy()
    finally:
        rechecks.close()
        server.shutdown()
        store.close()
