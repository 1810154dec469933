"""The CLI on a PostgreSQL store, as a user runs it: ``--store``, ``CERTWRIGHT_STORE`` and
the configuration's ``store:``; ``run``, ``status``, ``history`` and ``resume`` on it; bad
URLs (exit 2); the server stopped under a parked run (exit 5 with a sentence, nothing
lost, then it goes on); the daemon on it, and a second one beside it (leases).

Each test's store is a schema of its own in the session's cluster (``tests.support.postgres``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from certwright.state import names as N
from certwright.state.postgres import PostgresStore
from tests.support.postgres import Cluster, own_cluster, postgres  # noqa: F401 - fixtures

EXIT_OK, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED, EXIT_STORE = 0, 2, 3, 4, 5
_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CERTWRIGHT_STATE_DIR", "CERTWRIGHT_STORE", "CERTWRIGHT_CONFIG")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWRIGHT, *args], env=env or _env(), capture_output=True,
                          text=True, timeout=120, check=False)


def _status(state: Path, url: str) -> dict[str, str]:
    done = cli("--state-dir", str(state), "--store", url, "status", "--all", "--json")
    assert done.returncode == EXIT_OK, done.stderr
    return {r["run"]: r["status"] for r in json.loads(done.stdout)["runs"]}


def test_run_status_history_and_resume_on_postgresql(tmp_path: Path, postgres: Cluster) -> None:
    """``run hello --no-wait`` parks on the PostgreSQL store (no SQLite file is made);
    ``status`` and ``history`` read it; ``resume`` finishes it, whichever of --store,
    CERTWRIGHT_STORE or the configuration's store: names the store."""
    state, url = tmp_path / "state", postgres.store_url(str(tmp_path))
    done = cli("--state-dir", str(state), "--store", url, "run", "hello", "--no-wait",
               "--run-id", "hello-1")
    assert done.returncode == EXIT_PARKED, done.stderr
    assert not (state / "certwright.sqlite").exists()
    assert _status(state, url) == {"hello-1": "waiting"}
    with_env = cli("--state-dir", str(state), "status", env=_env(CERTWRIGHT_STORE=url))
    assert with_env.returncode == EXIT_OK and "hello-1" in with_env.stdout
    (state / "runs" / "hello-1" / "approved").write_text("ok\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {json.dumps(url)}\n")
    resumed = cli("--state-dir", str(state), "--config", str(config), "resume", "hello-1")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    history = cli("--state-dir", str(state), "--store", url, "history", "hello-1", "--json")
    assert history.returncode == EXIT_OK, history.stderr
    entries = json.loads(history.stdout)
    assert entries[0]["kind"] == "created"
    assert entries[-1]["data"]["to"] == "finished"
    assert _status(state, url) == {"hello-1": "succeeded"}
    store = PostgresStore(url)
    try:
        assert store.load_run("hello-1").state == "finished"
    finally:
        store.close()


def test_a_bad_store_url_is_a_usage_error_saying_what_is_wrong(
        tmp_path: Path, postgres: Cluster) -> None:
    """A URL of no known scheme, a bad port, a SQLite URL with no file and a configuration
    file's store: that is no string each exit 2 with what was wrong, and no traceback."""
    state = str(tmp_path / "state")
    for url, said in (("mysql://db.example/certwright", "not a store URL"),
                      ("/var/lib/certwright.sqlite", "not a store URL"),
                      ("postgresql://db.example:99999/certwright", "bad port"),
                      ("postgresql://db.example/a/b", "one database name"),
                      ("sqlite://", "no SQLite file")):
        done = cli("--state-dir", state, "--store", url, "status")
        assert done.returncode == EXIT_USAGE, (url, done.stderr)
        assert said in done.stderr and "--store" in done.stderr
        assert "Traceback" not in done.stderr
    config = tmp_path / "config.yaml"
    config.write_text("store: [postgresql://x/y]\n")
    done = cli("--state-dir", state, "--config", str(config), "status")
    assert done.returncode == EXIT_USAGE and "store: expected a store URL" in done.stderr
    assert f"{config}:1" in done.stderr


def test_the_server_stopped_under_a_parked_run_exits_5_and_loses_nothing(
        tmp_path: Path, own_cluster: Cluster) -> None:
    """With the server stopped, ``status`` and ``resume`` exit 5 with a sentence naming the
    store (no password) and what to do; started again, the run resumes to the end with its
    whole journal."""
    state = tmp_path / "state"
    url = own_cluster.store_url(str(tmp_path)).replace("postgres@", "postgres:s3cret@")
    assert cli("--state-dir", str(state), "--store", url, "run", "hello", "--no-wait",
               "--run-id", "h1").returncode == EXIT_PARKED
    before = cli("--state-dir", str(state), "--store", url, "history", "h1", "--json").stdout
    own_cluster.stop()
    (state / "runs" / "h1" / "approved").write_text("ok\n")
    for command in (["status"], ["resume", "h1"]):
        done = cli("--state-dir", str(state), "--store", url, *command)
        assert done.returncode == EXIT_STORE, done.stderr
        assert "the store is unavailable" in done.stderr and "PostgreSQL store" in done.stderr
        assert "check that the PostgreSQL server runs" in done.stderr
        assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
    own_cluster.start()
    after = cli("--state-dir", str(state), "--store", url, "history", "h1", "--json").stdout
    assert json.loads(after) == json.loads(before)
    done = cli("--state-dir", str(state), "--store", url, "resume", "h1")
    assert done.returncode == EXIT_OK, done.stderr


def test_the_daemon_serves_a_postgresql_store_beside_a_second_one(
        tmp_path: Path, postgres: Cluster) -> None:
    """``daemon --store URL`` finishes a run parked there; a second daemon started in
    another state folder on the same store serves beside it (leases share the runs); run
    and resume in a folder no daemon serves exit 4 naming a daemon's pid and host, while
    ``run --no-wait`` in the daemon's own folder hands it the run."""
    state, url = tmp_path / "state", postgres.store_url(str(tmp_path))
    assert cli("--state-dir", str(state), "--store", url, "run", "hello", "--no-wait",
               "--run-id", "d1").returncode == EXIT_PARKED
    daemon = subprocess.Popen([*CERTWRIGHT, "--state-dir", str(state), "--store", url,
                               "daemon"], env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        probe = PostgresStore(url)
        try:
            deadline = time.monotonic() + 60
            while not probe.daemon_serves() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert probe.daemon_holder()[0] == daemon.pid
        finally:
            probe.close()
        log = tmp_path / "second.log"
        with log.open("wb") as out:
            second = subprocess.Popen([*CERTWRIGHT, "--state-dir", str(tmp_path / "second"),
                                       "--store", url, "daemon"], env=_env(),
                                      stdout=subprocess.DEVNULL, stderr=out)
        deadline = time.monotonic() + 60
        while "daemon_ready" not in log.read_text() and second.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        second.terminate()
        assert second.wait(timeout=60) == EXIT_OK, log.read_text()
        assert "daemon_ready" in log.read_text()
        for args in (["run", "hello", "--run-id", "x1"],
                     ["run", "hello", "--no-wait", "--run-id", "x2"], ["resume", "d1"],
                     ["cancel", "d1"]):
            elsewhere = cli("--state-dir", str(tmp_path / "elsewhere"), "--store", url, *args)
            assert elsewhere.returncode == EXIT_LOCKED, elsewhere.stderr
            assert f"pid {daemon.pid} on {os.uname().nodename}" in elsewhere.stderr
        shown = cli("--state-dir", str(tmp_path / "elsewhere"), "--store", url, "status")
        assert f"daemon: serving (pid {daemon.pid} on {os.uname().nodename}" in shown.stdout
        listed = cli("--state-dir", str(tmp_path / "elsewhere"), "--store", url, "status",
                     "--json")
        assert json.loads(listed.stdout)["daemon_pid"] == daemon.pid
        here = cli("--state-dir", str(state), "--store", url, "run", "hello", "--no-wait",
                   "--run-id", "d2")
        assert here.returncode == EXIT_PARKED, here.stderr
        (state / "runs" / "d1" / "approved").write_text("ok\n")
        deadline = time.monotonic() + 60
        while _status(state, url).get("d1") != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _status(state, url) == {"d1": "succeeded", "d2": "waiting"}
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == EXIT_OK, err


def test_certificates_and_the_daemon_s_domains_read_the_postgresql_store(
        tmp_path: Path, postgres: Cluster) -> None:
    """``certificates`` lists the inventory and its renewal from PostgreSQL, and the
    daemon's embedded mail server takes the domains of runs parked there."""
    from certwright.engine.daemon.domains import StoreDomains
    from certwright.state.contract import run
    from certwright.state.contract_certificates import certificate
    from certwright.state.urls import parse_store_url
    url = postgres.store_url(str(tmp_path))
    store = PostgresStore(url)
    try:
        with store.transaction() as tx:
            tx.put_certificate(certificate("pg.example.test"))
            tx.put_run(run("r1", inputs={"domain": "parked.example.test"}))
    finally:
        store.close()
    done = cli("--state-dir", str(tmp_path / "state"), "--store", url, "certificates",
               "--json")
    assert done.returncode == EXIT_OK, done.stderr
    (row,) = json.loads(done.stdout)["certificates"]
    assert row["name"] == "pg.example.test" and row["serial"] == "1f2e"
    # the schedule's instant (the ARI window's start), not the record's renew_at: the
    # renewal schedule was read from the PostgreSQL store too
    assert row["next_renewal"] == "2026-01-01T00:00:00.000000Z"
    domains = StoreDomains(tmp_path / "state", interval=0, store=parse_store_url(url))
    assert domains.accepts("parked.example.test") and not domains.accepts("other.test")


def test_doctor_checks_the_postgresql_store(tmp_path: Path, postgres: Cluster) -> None:
    """``doctor`` says the server answers with its version and the schema's, warns of a
    parked run no daemon serves, and fails (exit 1, with the fix) on a server that is not
    there."""
    state, url = tmp_path / "state", postgres.store_url(str(tmp_path))
    assert cli("--state-dir", str(state), "--store", url, "run", "hello", "--no-wait",
               "--run-id", "w1").returncode == EXIT_PARKED

    def checks(store: str) -> tuple[int, dict[str, dict[str, str]]]:
        done = cli("--state-dir", str(state), "--store", store, "doctor", "--json",
                   "--config", str(tmp_path / "none.yaml"), "hello")
        found = json.loads(done.stdout)
        return done.returncode, {c["check"]: c for c in found["checks"]}
    _, found = checks(url)
    assert found["store"]["status"] == "ok"
    assert f"schema version {len(N.PG_MIGRATIONS)}" in found["store"]["detail"]
    assert found["daemon"]["status"] == "warn" and "1 run(s)" in found["daemon"]["detail"]
    code, found = checks("postgresql://nobody@127.0.0.1:9/none")
    assert code == 1 and found["store"]["status"] == "fail"
    assert "check the URL" in found["store"]["fix"]


def test_the_server_stopped_while_a_run_is_driven_exits_5_then_it_goes_on(
        tmp_path: Path, own_cluster: Cluster) -> None:
    """A foreground run waits; the server stops; the file it waits for appears, so its
    next commit fails: exit 5 with the sentence, no traceback. Started again, the journal
    holds what was committed before and ``resume`` takes the run to the end."""
    state, url = tmp_path / "state", own_cluster.store_url(str(tmp_path))
    proc = subprocess.Popen([*CERTWRIGHT, "--state-dir", str(state), "--store", url, "run",
                             "hello", "--run-id", "f1"], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _status(state, url).get("f1") != "waiting" and time.monotonic() < deadline:
            time.sleep(0.1)
        before = cli("--state-dir", str(state), "--store", url, "history", "f1", "--json")
        own_cluster.stop()
        (state / "runs" / "f1" / "approved").write_text("ok\n")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_STORE, err
    assert "the store is unavailable" in err and "Traceback" not in err
    own_cluster.start()
    after = cli("--state-dir", str(state), "--store", url, "history", "f1", "--json")
    assert json.loads(after.stdout) == json.loads(before.stdout)
    done = cli("--state-dir", str(state), "--store", url, "resume", "f1")
    assert done.returncode == EXIT_OK, done.stderr
    assert _status(state, url) == {"f1": "succeeded"}
