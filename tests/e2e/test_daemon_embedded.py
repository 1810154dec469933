"""`daemon --embedded` serves the built-in CA and mail server; `run --no-wait` hands it runs."""
from __future__ import annotations

from pathlib import Path

from tests.fixtures.daemon.harness import cli, env_for, spawn, statuses, wait_for


def test_no_wait_cacert_run_is_finished_by_the_embedded_daemon(tmp_path: Path):
    state = tmp_path / "state"
    config = tmp_path / "daemon.yaml"
    config.write_text("embedded: true\nembedded_domains: [emb.test]\n")
    daemon = spawn(["--state-dir", str(state), "--log-json", "daemon", "--config", str(config)],
                   env_for(state), tmp_path / "daemon.log")
    try:
        wait_for(lambda: any(e.get("event") == "daemon_ready" for e in daemon.events()), 60,
                 "the daemon to be ready")
        (tmp_path / "certs").mkdir()
        started = cli(state, "run", "cacert", "--no-wait", "--run-id", "via-daemon",
                      "--set", "domain=emb.test", "--set", f"cert_dir={tmp_path / 'certs' / 'emb'}")
        assert started.returncode in (0, 3), started.stderr[-2000:]
        wait_for(lambda: statuses(state).get("via-daemon") == ("installed", "succeeded"), 90,
                 "the daemon to take the run to installed")
        status = cli(state, "status", "--all")
        assert "serving (pid" in status.stdout
        assert (tmp_path / "certs" / "emb" / "server.crt").exists()
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
