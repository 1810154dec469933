"""The cluster campaign: three daemons on one PostgreSQL store and one IMAP mailbox, 300
concurrent cacert runs, daemons SIGKILLed at random moments and restarted.

Real parts: the built-in CA and its mail server as processes (``ca serve``, ``mail
serve``), a real Dovecot whose INBOX every daemon reads with ``--imap`` (the mail server
delivers into a Maildir; a delivery loop here APPENDs each message to Dovecot, as an MDA
would), one PostgreSQL cluster, and one store key, so the CA account a setup run joined
once is shared by every daemon. Kills come from a seeded schedule (the seed is printed;
``CERTWRIGHT_CAMPAIGN_SEED=<seed>`` replays it), at drawn amounts of the runs' progress
(journal entries), one daemon at a time, each restarted before the next kill: never all
three at once. ``CERTWRIGHT_CLUSTER_RUNS`` sets fewer runs for a quick look.

Everything is counted from the real sources: certificates per name in the CA's SQLite
store (read-only), the store's marks of each mail, every run's journal, and the lease log
(each tenure of each run, with who held it), from which no two daemons may have driven one
run at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import sqlite3
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline_text
from certwright.state import names as N
from certwright.state.sealing import generate_key_file
from tests.fixtures.daemon.harness import Proc, World, env_for, report, start_world, wait_for
from tests.support.dovecot import Dovecot, dovecot  # noqa: F401 - a fixture
from tests.support.pg_daemons import lease_tenures, make_runs, rows, start_daemon
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("CERTWRIGHT_CLUSTER_RUNS") or 300)
DAEMONS = 3
KILLS = 6
ACCOUNT = "admin@cluster.test"
# A run makes about 21 transitions and finished steps on its way to installed; the kills
# fall between these shares of all of it (counted from the campaign's start).
KILL_SPAN = (0.05, 0.75)
KILL_AFTER_S = 20.0  # a campaign that stalls is killed into all the same


def _domain(i: int) -> str:
    return f"d{i}.cluster.test"


def _progress(url: str) -> int:
    (n,), = rows(url, f"SELECT COUNT(*) FROM {N.T_JOURNAL} "
                      f"WHERE kind IN ('entered', 'step_done')")
    return int(n)


def _status(url: str) -> dict[str, str]:
    return dict(rows(url, f"SELECT id, status FROM {N.T_RUNS}"))


def _certificates_per_name(ca_dir: Path) -> Counter[str]:
    db = sqlite3.connect(f"file:{ca_dir / 'ca.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        found = db.execute("SELECT names FROM certificates").fetchall()
    finally:
        db.close()
    return Counter(n for (names,) in found for n in names.split(","))


class Delivery:
    """Moves each message the mail server delivers into its Maildir to Dovecot's INBOX."""

    def __init__(self, world: World, box: Dovecot) -> None:
        self.new = world.maildir / "new"
        self.box = box
        self.moved = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for path in sorted(self.new.glob("*")) if self.new.is_dir() else []:
                try:
                    self.box.append(path.read_bytes())
                    path.unlink()
                    self.moved += 1
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"{path.name}: {exc!r}")
            self._stop.wait(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_300_runs_on_three_daemons_survive_their_sigkills(
        tmp_path: Path, postgres: Cluster, dovecot: Dovecot,
        request: pytest.FixtureRequest) -> None:
    """Every run installed, the CA issued exactly one certificate per run, no mail taken
    twice, and no run driven by two daemons at once, although daemons were SIGKILLed."""
    seed = int(os.environ.get("CERTWRIGHT_CAMPAIGN_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    report(request, f"cluster campaign: seed {seed} (replay: CERTWRIGHT_CAMPAIGN_SEED={seed})")
    started = time.monotonic()
    url = postgres.store_url(str(tmp_path))
    key = tmp_path / "store.key"
    generate_key_file(key)
    domains = [_domain(i) for i in range(RUNS)]
    world = start_world(tmp_path, ["cluster.test", "setup.cluster.test", *domains])
    delivery = Delivery(world, dovecot)
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    imap = dovecot.url(pw) + f"&name=certs&cafile={dovecot.cafile}"
    text = (REPO / "pipelines" / "cacert.yaml").read_text()
    spec = load_pipeline_text(text, "cacert.yaml")

    def inputs(domain: str) -> dict[str, object]:
        return coerce_inputs(spec, {**world.inputs(domain), "email": ACCOUNT,
                                    "maildir": "imap/certs"})

    def daemon(n: int) -> Proc:
        env = env_for(tmp_path / f"d{n}")
        env.pop("CERTWRIGHT_HOST", None)
        return start_daemon(tmp_path, url, f"d{n}", ["--lease", "3", "--imap", imap,
                                                     "--workers", "8"],
                            before=["--store-key", str(key)], env=env)
    procs: dict[int, Proc] = {}
    every: list[Proc] = []
    daemon_of: dict[str, str] = {}  # a daemon process's pid -> its name (d0, d1, d2)
    kills: list[tuple[int, int, int]] = []  # (daemon, progress, runs in flight)
    try:
        for n in range(DAEMONS):
            procs[n] = daemon(n)
            every.append(procs[n])
            daemon_of[str(procs[n].popen.pid)] = f"d{n}"
        make_runs(url, tmp_path, text, "cacert.yaml", [inputs("setup.cluster.test")],
                  ["setup"])
        wait_for(lambda: _status(url).get("setup") == "succeeded", 120,
                 "the setup run (the shared account)", every=0.2)
        setup_work = _progress(url)
        ids = [f"c{i:03d}" for i in range(RUNS)]
        make_runs(url, tmp_path, text, "cacert.yaml", [inputs(d) for d in domains], ids)
        work = 21 * RUNS
        targets = sorted(setup_work + int(work * rng.uniform(*KILL_SPAN)) for _ in range(KILLS))
        for target in targets:
            with contextlib.suppress(AssertionError):  # stalled: kill it all the same
                wait_for(lambda t=target: _progress(url) >= t, KILL_AFTER_S, "progress",
                         every=0.02)
            victim = rng.randrange(DAEMONS)
            procs[victim].stop(signal.SIGKILL)
            status = _status(url)
            kills.append((victim, _progress(url) - setup_work,
                          sum(status.get(r) not in ("succeeded", "failed") for r in ids)))
            procs[victim] = daemon(victim)  # back before the next kill: never all three
            every.append(procs[victim])
            daemon_of[str(procs[victim].popen.pid)] = f"d{victim}"
        kill_time = time.monotonic() - started

        def finished() -> bool:
            status = _status(url)
            return all(status.get(r) in ("succeeded", "failed", "cancelled") for r in ids)
        wait_for(finished, 900, "every run to finish", every=1.0)
    finally:
        for p in procs.values():
            p.stop()
        delivery.close()
        world.close()
    wall = time.monotonic() - started

    status = _status(url)
    lost = {r: status.get(r) for r in ids if status.get(r) != "succeeded"}
    certs = _certificates_per_name(world.ca_dir)
    cert_dups = {d: n for d in domains if (n := certs[d]) != 1}
    marks = [ident for source, ident in rows(url, f"SELECT source, ident FROM "
                                                  f"{N.T_PROCESSED}")
             if source.startswith("mail:")]
    taken_twice = {m: n for m, n in Counter(marks).items() if n > 1}
    journal_bad = {}
    for rid in ids:
        entries = [(k, json.loads(d)) for k, d in rows(
            url, f"SELECT kind, data FROM {N.T_JOURNAL} WHERE run_id = '{rid}' ORDER BY seq")]
        signed = sum(1 for k, d in entries if k == "step_done" and d["step"] == "ca_sign")
        followed = sum(1 for k, d in entries if k == "step_done" and d["step"] == "probe_mails")
        path = [d["to"] for k, d in entries if k == "entered"]
        if path != ["new", "registered", "probed", "verified", "signed", "installed"] \
                or signed != 1 or followed != 1:
            journal_bad[rid] = (path, signed, followed)
    overlaps = {}
    for rid, spans in lease_tenures(url).items():
        for (_taken, ended, token), (taken_next, _, token_next) in pairwise(spans):
            if ended is None or ended > taken_next or token_next <= token:
                overlaps[rid] = spans
    # an owner is "<host>:<pid>:<nonce>" (one host here): its pid says which daemon it was
    holders = {daemon_of.get(o.split(":")[1], o) for (o,) in rows(
        url, f"SELECT owner FROM {N.T_LEASE_LOG}")}
    takeovers = sum(1 for (how,) in rows(url, f"SELECT how FROM {N.T_LEASE_LOG}")
                    if how == "takeover")
    report(request, (
        f"cluster campaign: {RUNS} runs on {DAEMONS} daemons, {len(kills)} SIGKILLs "
        f"(daemon, progress, runs in flight: {kills}), {len(lost)} runs lost, "
        f"{len(cert_dups)} certificates duplicated, {len(taken_twice)} mails taken twice, "
        f"{len(overlaps)} runs with overlapping leases, {takeovers} takeovers, "
        f"{delivery.moved} mails delivered; kills over {kill_time:.0f} s, wall {wall:.0f} s "
        f"(seed {seed})"))
    assert not delivery.errors, delivery.errors[:5]
    assert len(kills) >= 6 and all(n for _, _, n in kills), kills
    assert not lost, lost
    assert not cert_dups, cert_dups
    assert sum(certs[d] for d in domains) == RUNS
    assert not taken_twice, taken_twice
    assert not journal_bad, journal_bad
    assert not overlaps, overlaps
    assert holders == {f"d{n}" for n in range(DAEMONS)}, holders
    for p in every:
        assert "Traceback" not in p.text(), p.text()[-3000:]
