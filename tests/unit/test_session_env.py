"""The test session keeps its hands off the machine's own certwright folders."""
from __future__ import annotations

import os
from pathlib import Path


def test_the_session_sets_a_temporary_certificates_root() -> None:
    live = os.environ.get("CERTWRIGHT_LIVE_DIR")
    assert live, "tests/conftest.py must set CERTWRIGHT_LIVE_DIR for the session"
    assert not Path(live).resolve().is_relative_to("/etc")


def test_the_session_reads_no_system_configuration_file() -> None:
    system = os.environ.get("CERTWRIGHT_SYSTEM_CONFIG")
    assert system, "tests/conftest.py must set CERTWRIGHT_SYSTEM_CONFIG for the session"
    assert not Path(system).exists()


def test_the_session_keeps_the_cache_in_a_temporary_folder() -> None:
    cache = os.environ.get("CERTWRIGHT_CACHE_DIR")
    assert cache, "tests/conftest.py must set CERTWRIGHT_CACHE_DIR for the session"
    assert not Path(cache).resolve().is_relative_to("/var")
