"""The built-in CA's client says in words why the CA could not be reached
(`cannot reach 127.0.0.1:9: connection refused`), not as a Python exception's repr."""
from __future__ import annotations

import socket

import pytest

from certwright.ca.client import CAClient, CAError


def test_a_refused_connection_is_said_in_words() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = CAClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(CAError) as caught:
        client.login("a@example.test", "x" * 20)
    text = str(caught.value)
    assert text.endswith(f"/api/v1/login: cannot reach 127.0.0.1:{port}: connection refused")
    assert "Errno" not in text and "ConnectionRefusedError" not in text
    assert caught.value.status is None  # a network error: retryable
