"""The fault campaign, part a: the daemon SIGKILLed at 30 random moments during 50
concurrent cacert runs, and restarted each time.

The CA and the mail server run as separate processes (tests/fixtures/daemon/harness.py)
and are never killed here (part c kills the CA). All runs share one CA account, joined
once before the campaign starts (a join costs six scrypts; the CA serves without rate
limits). The kill moments come from a seeded schedule: the seed is printed, and
``CERTWRIGHT_CAMPAIGN_SEED=<seed>`` replays it. A moment is measured in the runs' progress,
not in seconds: each daemon is killed once the journal holds a drawn number of new
transitions and finished steps since it started (time would not do: the runs move in
bursts, so kills at drawn seconds fell all before or all after the runs' work, varying
from seed to seed; counted in progress, every kill lands while runs are in flight, spread
over most of their way). One kill in five instead comes a drawn fraction of a second after the
spawn, while the daemon imports, takes its lock or recovers what the last one left.

Everything is counted from the real sources, never from what the daemon says of itself:
certificates per domain in the CA's SQLite store (opened read-only), mails per Message-ID
in the Maildir, the takes, each run's row and journal in the state store.
"""
from __future__ import annotations

import contextlib
import email
import json
import os
import random
import secrets
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon.harness import (
    World,
    drop_request,
    report,
    start_world,
    statuses,
    store_rows,
    wait_for,
)

RUNS = 50
KILLS = 30
ACCOUNT = "admin@campaign.test"
# A run makes about 21 transitions and finished steps on its way to installed (1,050 for
# the 50). The kills after the daemon is ready share KILL_STEPS of them, in drawn shares
# (a fixed sum: drawn independently, the kills' reach varied from a third of the work to
# past its end). The counts are cumulative targets from the campaign's start, not counted
# from each restart: a kill lands a little after its target (the daemon commits steps of
# many runs at once, more of them on a busy machine), and counted from each restart that
# overshoot added up until the last kills fell after every run had finished. A daemon
# that stalls is killed after KILL_AFTER_S seconds all the same.
KILL_STEPS = 800  # of about 1,050 and more: the kills reach about three quarters of the work
KILL_AFTER_S = 5.0
KILL_EARLY = (0.05, 0.8)  # seconds after the spawn, for a kill while starting
STARTUP_SHARE = 0.2
WORKERS = "8"


def _domain(i: int) -> str:
    return f"d{i}.campaign.test"


def _inputs(world: World, domain: str) -> dict[str, str]:
    return {**world.inputs(domain), "email": ACCOUNT}


def _mails(maildir: Path) -> list[tuple[str, str, str, str]]:
    """(Message-ID, To, X-Certwright-Kind, folder) of every message in the Maildir and in
    its subfolders (a quarantine) alike."""
    out = []
    for path in maildir.rglob("*"):
        if not path.is_file() or path.parent.name not in ("new", "cur"):
            continue
        with open(path, "rb") as fh:
            msg = email.message_from_binary_file(fh)
        if msg["Message-ID"] is None:
            continue
        out.append((str(msg["Message-ID"]), str(msg["To"]), str(msg["X-Certwright-Kind"]),
                    str(path.parent.relative_to(maildir))))
    return out


def _processed(world: World) -> list[tuple[str, str | None]]:
    """(Message-ID, run id) of every mail the store's marks say a step took."""
    rows = store_rows(world.state, "SELECT ident, run_id FROM processed WHERE source LIKE ?",
                      ("mail:%",))
    assert rows, "no mail marked taken in the store"
    return [(str(m), r) for m, r in rows]


def _certificates_per_domain(ca_dir: Path) -> Counter[str]:
    """Certificates the CA's store holds per DNS name (``names`` is comma-separated)."""
    db = sqlite3.connect(f"file:{ca_dir / 'ca.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT names FROM certificates").fetchall()
    finally:
        db.close()
    return Counter(n for (names,) in rows for n in names.split(","))


def _journal(world: World, rid: str) -> list[tuple[str, dict[str, Any]]]:
    rows = store_rows(world.state, "SELECT kind, data FROM journal WHERE run_id = ? ORDER BY seq",
                      (rid,))
    return [(str(k), json.loads(d)) for k, d in rows]


def _statuses(world: World) -> dict[str, tuple[str, str]]:
    """run id -> (state, status), read from the store (failing loudly, unlike the harness's
    helper, which reads a store that may not exist yet)."""
    rows = store_rows(world.state, "SELECT id, state, status FROM runs")
    return {r[0]: (r[1], r[2]) for r in rows}


def _progress(world: World) -> int:
    """Transitions and finished steps in the journal, all runs together."""
    rows = store_rows(world.state, "SELECT COUNT(*) FROM journal "
                                   "WHERE kind IN ('entered', 'step_done')")
    return int(rows[0][0])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_50_runs_survive_30_sigkills_of_the_daemon(tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """Every run installed, exactly one certificate per run, no run lost, no mail taken
    twice and no mail sent twice, although the daemon was SIGKILLed 30 times mid-flight."""
    seed = int(os.environ.get("CERTWRIGHT_CAMPAIGN_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    early = [rng.random() < STARTUP_SHARE for _ in range(KILLS)]
    weights = [rng.uniform(0.05, 1.0) for _ in range(KILLS)]
    share = sum(w for w, e in zip(weights, early, strict=True) if not e)
    schedule: list[tuple[bool, float]] = [
        (e, rng.uniform(*KILL_EARLY) if e else max(1, round(KILL_STEPS * w / share)))
        for w, e in zip(weights, early, strict=True)]
    report(request, f"daemon campaign: seed {seed} (replay: CERTWRIGHT_CAMPAIGN_SEED={seed})")
    started = time.monotonic()
    domains = [_domain(i) for i in range(RUNS)]
    world = start_world(tmp_path, ["campaign.test", "setup.campaign.test", *domains])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ids = [f"campaign-{i:02d}" for i in range(RUNS)]
    daemon_args = ("--inbox", str(inbox), "--workers", WORKERS)
    try:
        # the shared account: joined and confirmed once, by a run of its own
        world.start_daemon(*daemon_args)
        drop_request(inbox, "setup.json", "cacert", _inputs(world, "setup.campaign.test"),
                     run_id="setup")
        wait_for(lambda: statuses(world.state).get("setup") == ("installed", "succeeded"), 20,
                 "the account's setup run", every=0.2)
        for i, rid in enumerate(ids):
            drop_request(inbox, f"{rid}.json", "cacert", _inputs(world, domains[i]), run_id=rid)
        in_flight: list[int] = []
        at_kill: list[int] = []  # progress (all runs, the setup run's included) at each kill
        setup_work = _progress(world)
        target = setup_work  # the cumulative progress the next kill waits for
        for early, when in schedule:
            daemon = world.daemon
            assert daemon is not None
            if early:
                time.sleep(when)
            else:
                target += int(when)
                wait_for(lambda d=daemon: "daemon_ready" in d.text() or d.popen.poll() is not None,
                         60, "the daemon to be ready")
                with contextlib.suppress(AssertionError):  # stalled: kill it all the same
                    wait_for(lambda n=target: _progress(world) >= n, KILL_AFTER_S, "progress",
                             every=0.01)
            assert daemon.popen.poll() is None, f"the daemon exited:\n{daemon.text()[-3000:]}"
            daemon.stop(signal.SIGKILL)
            at_kill.append(_progress(world))
            st = _statuses(world)
            in_flight.append(sum(st.get(r, ("", ""))[1] not in ("succeeded", "failed")
                                 for r in ids))
            world.start_daemon(*daemon_args, wait=False, tag="k-")
        early_kills = sum(early for early, _ in schedule)
        kill_time = time.monotonic() - started

        def finished() -> bool:
            st = statuses(world.state)
            return all(st.get(r, ("", ""))[1] in ("succeeded", "failed", "cancelled") for r in ids)
        wait_for(finished, 300, "every run to finish", every=0.5)
        assert world.daemon is not None
        world.daemon.stop(signal.SIGTERM)
        wall = time.monotonic() - started
        work = _progress(world) - setup_work
        spread = [100 * (n - setup_work) / work for n in at_kill]

        st = statuses(world.state)
        lost = {r: st.get(r) for r in ids if st.get(r) != ("installed", "succeeded")}
        certs = _certificates_per_domain(world.ca_dir)
        cert_dups = {d: n for d in domains if (n := certs[d]) != 1}
        mails = _mails(world.maildir)
        by_id = Counter(m[0] for m in mails)
        mail_dups = {m: n for m, n in by_id.items() if n > 1}
        probes = Counter(m[1] for m in mails if m[2] == "domain_probe")
        probe_dups = {d: probes[f"postmaster@{d}"] for d in domains
                      if probes[f"postmaster@{d}"] != 1}
        issued_mails = sum(1 for m in mails if m[2] == "cert_issued")
        taken = _processed(world)
        by_run = Counter(rid for _, rid in taken if rid)  # a run takes 3 mails of one domain
        taken_twice = {rid: n for rid, n in by_run.items() if n > 3}
        # every mail a step took is in the Maildir, and every probe mail was taken
        taken_ids = {m for m, _ in taken}
        not_there = taken_ids - set(by_id)
        probes_left = [m[0] for m in mails if m[2] == "domain_probe" and m[1] != "postmaster@"
                       "setup.campaign.test" and m[0] not in taken_ids]
        recovered = 0
        journal_bad = {}
        for rid in ids:
            j = _journal(world, rid)
            path = [d["to"] for kind, d in j if kind == "entered"]
            signed = sum(1 for kind, d in j if kind == "step_done" and d["step"] == "ca_sign")
            followed = sum(1 for kind, d in j if kind == "step_done"
                           and d["step"] in ("probe_mail", "probe_mails"))  # v1, v2
            alarms = [d["message"] for kind, d in j if kind == "alarm"]
            recovered += sum(1 for kind, d in j if kind == "step_started" and d["recovering"])
            if path != ["new", "registered", "probed", "verified", "signed", "installed"] \
                    or signed != 1 or followed != 1 or alarms:
                journal_bad[rid] = (path, signed, followed, alarms)
        report(request, (
            f"daemon campaign: {RUNS} runs, {KILLS} SIGKILLs ({early_kills} while starting; "
            f"at {spread[0]:.0f}% to {max(spread):.0f}% of the runs' work, "
            f"runs in flight at each: {' '.join(map(str, in_flight))}), {len(lost)} runs lost, "
            f"{len(cert_dups)} certificates duplicated, {len(mail_dups) + len(probe_dups)} "
            f"mails duplicated, {len(taken_twice)} mails processed twice, {recovered} steps "
            f"found in flight and run again; kills over "
            f"{kill_time:.0f} s, wall {wall:.0f} s (seed {seed})"))
        assert all(in_flight), f"a kill came after every run had finished: {in_flight}"
        assert not lost, lost
        assert not cert_dups, cert_dups
        assert not mail_dups, mail_dups
        assert not probe_dups, probe_dups
        assert issued_mails == sum(certs[d] for d in domains) + 1  # the setup run's too
        assert not taken_twice, taken_twice
        assert not not_there, not_there
        assert not probes_left, probes_left
        assert not journal_bad, journal_bad
        assert len(list((inbox / "done").iterdir())) == RUNS + 1
    finally:
        world.close()
