"""The CA's http-01 GET (ca/acme/validate.py) against a real HTTP server on loopback:
the key authorization passes; a 404, a wrong body, an oversized body, nothing listening
and a server that never answers are each the problem that says what was found."""
from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from certwright.ca.acme import validate
from certwright.ca.acme.validate import Resolver, validate_http01

TOKEN = "tok_abc"
KEY_AUTH = "tok_abc.thumbprint"


class Challenge(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, bytes]]] = {}
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        status, body = self.answers.get(self.path, (404, b"not here"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Challenge)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Challenge.answers, Challenge.hosts = {}, []
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def check(port: int, name: str = "localhost") -> validate.AcmeProblem | None:
    return validate_http01(name, TOKEN, KEY_AUTH, resolver=Resolver(), port=port)


def test_the_key_authorization_passes(server: int) -> None:
    Challenge.answers[f"/.well-known/acme-challenge/{TOKEN}"] = (200, KEY_AUTH.encode() + b"\n")
    assert check(server) is None
    assert Challenge.hosts == [f"localhost:{server}"]


def test_a_404_is_unauthorized(server: int) -> None:
    problem = check(server)
    assert problem is not None and problem.kind == "unauthorized"
    assert "answered 404" in problem.detail and problem.identifier == "localhost"


def test_a_wrong_or_oversized_body_is_incorrect_response(server: int) -> None:
    path = f"/.well-known/acme-challenge/{TOKEN}"
    Challenge.answers[path] = (200, b"something else")
    problem = check(server)
    assert problem is not None and problem.kind == "incorrectResponse"
    assert "'something else'" in problem.detail
    Challenge.answers[path] = (200, KEY_AUTH.encode() + b"x" * 100_000)
    problem = check(server)
    assert problem is not None and problem.kind == "incorrectResponse"


def test_nothing_listening_is_a_connection_problem() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        problem = validate_http01("127.0.0.1", TOKEN, KEY_AUTH, resolver=Resolver(),
                                  port=port)
    assert problem is not None and problem.kind == "connection"
    assert f"127.0.0.1:{port}" in problem.detail


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "TIMEOUT", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts (in the kernel) and never says a word
        problem = validate_http01("127.0.0.1", TOKEN, KEY_AUTH, resolver=Resolver(),
                                  port=silent.getsockname()[1])
    assert problem is not None and problem.kind == "connection"
    assert "timed out" in problem.detail
