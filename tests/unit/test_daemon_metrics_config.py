"""The daemon's metrics and heartbeat settings: read from the file, bad values named."""
from __future__ import annotations

from pathlib import Path

import pytest

from certwright.engine.daemon.config import DaemonConfig, from_mapping, merge_args
from certwright.errors import InputError


def test_metrics_settings_are_read() -> None:
    """metrics_listen is HOST:PORT (IPv6 in brackets), the bound a count, heartbeat a
    duration."""
    cfg = from_mapping({"metrics_listen": "[::1]:9464", "metrics_certificates": 20,
                        "heartbeat": "30s"}, Path("/"))
    assert (cfg.metrics_listen, cfg.metrics_certificates, cfg.heartbeat) == (
        ("::1", 9464), 20, 30.0)


def test_metrics_are_off_unless_asked_for() -> None:
    assert DaemonConfig().metrics_listen is None


def test_the_command_line_listener_wins_over_the_file() -> None:
    cfg = from_mapping({"metrics_listen": "127.0.0.1:9000"}, Path("/"))
    assert merge_args(cfg, metrics_listen=("127.0.0.1", 9001)).metrics_listen == (
        "127.0.0.1", 9001)
    assert merge_args(cfg).metrics_listen == ("127.0.0.1", 9000)


@pytest.mark.parametrize(("key", "value"), [
    ("metrics_listen", "9464"), ("metrics_listen", "host:99999"),
    ("metrics_certificates", -1), ("metrics_certificates", "many"),
    ("heartbeat", "soon"), ("heartbeat", "0s")])
def test_a_bad_value_is_named(key: str, value: object) -> None:
    """Each bad value is an InputError naming its key."""
    with pytest.raises(InputError, match=key):
        from_mapping({key: value}, Path("/"))


def test_the_daemon_and_cli_do_not_import_prometheus_client() -> None:
    """Without metrics nothing imports prometheus_client: the daemon's module, the CLI."""
    import subprocess
    import sys
    code = ("import sys, certwright.engine.daemon.service, certwright.engine.cli.main, "
            "certwright.ca.app; print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
