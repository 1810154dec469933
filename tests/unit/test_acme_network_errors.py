"""A network failure reaching an ACME CA is a sentence that says what was tried and what
happened (`cannot reach 127.0.0.1:9: connection refused`); the library's own text
(urllib3's `HTTPSConnectionPool(...): Max retries exceeded ...`) goes to the log only."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from certwright.steps.acme.client import as_step_error


def _fails(url: str, **kwargs: object) -> requests.RequestException:
    with pytest.raises(requests.RequestException) as caught:
        requests.get(url, timeout=kwargs.get("timeout", 5))  # type: ignore[arg-type]
    return caught.value


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_refused_connection_is_said_in_words(refused_port: int) -> None:
    url = f"https://127.0.0.1:{refused_port}/dir"
    err = as_step_error(_fails(url), f"fetching the ACME directory {url}")
    text = str(err)
    assert text == (f"fetching the ACME directory {url}: cannot reach 127.0.0.1:{refused_port}: "
                    "connection refused")
    assert "HTTPSConnectionPool" not in text and "Max retries" not in text
    assert err.retryable


def test_a_silent_server_is_a_timeout(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/dir"
    text = str(as_step_error(_fails(url, timeout=0.3), "fetching the ACME directory"))
    assert text == (f"fetching the ACME directory: cannot reach 127.0.0.1:{silent_port}: "
                    "no answer in time")


def test_tls_to_a_plain_server_is_a_tls_failure(silent_port: int) -> None:
    """A TLS handshake that goes wrong says so (here: nothing answers the handshake)."""
    url = f"https://127.0.0.1:{silent_port}/dir"
    text = str(as_step_error(_fails(url, timeout=0.3), "fetching the ACME directory"))
    assert "HTTPSConnectionPool" not in text
    assert text.startswith(f"fetching the ACME directory: cannot reach 127.0.0.1:{silent_port}: ")
