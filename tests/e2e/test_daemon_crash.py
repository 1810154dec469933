"""The big one: 200 concurrent cacert runs against the CA and the mail server running as
separate processes, the daemon killed with SIGKILL three times at random moments."""
from __future__ import annotations

import email
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.fixtures.daemon.harness import (
    World,
    ca_certificates,
    cli,
    drop_request,
    start_world,
    statuses,
    wait_for,
)

RUNS = int(os.environ.get("CERTWRIGHT_DAEMON_RUNS", "200"))
CLI_RUNS = 4  # of those, started with `certwright run --no-wait` (the rest: inbox drops)


def _inputs(world: World, i: int) -> dict[str, str]:
    domain = f"d{i}.crash.test"
    return {"domain": domain, "ca": world.ca_url, "maildir": str(world.maildir),
            "cert_dir": str(world.root / "certs" / domain)}


def _message_ids(folder: Path) -> list[str]:
    out = []
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            msg = email.message_from_binary_file(fh)
        out.append(str(msg["Message-ID"]))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_runs_survive_three_sigkills_of_the_daemon(tmp_path: Path):
    """All runs reach installed, the CA issued exactly one certificate per run, and no mail
    was taken twice, although the daemon was SIGKILLed three times mid-flight."""
    rng = random.Random(os.environ.get("CERTWRIGHT_TEST_SEED", "7"))
    world = start_world(tmp_path, [f"d{i}.crash.test" for i in range(RUNS)])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ids = [f"crash-{i:03d}" for i in range(RUNS)]
    try:
        world.start_daemon("--inbox", str(inbox), "--workers", "8")
        for i in range(CLI_RUNS):
            sets = [f"--set={k}={v}" for k, v in _inputs(world, i).items()]
            r = cli(world.state, "run", "cacert", "--no-wait", "--run-id", ids[i], *sets)
            assert r.returncode in (0, 3), r.stderr[-2000:]
        for i in range(CLI_RUNS, RUNS):
            drop_request(inbox, f"{ids[i]}.json", "cacert", _inputs(world, i), run_id=ids[i])
        kills, in_flight = 0, []
        deadline = time.monotonic() + 600
        while kills < 3:
            time.sleep(rng.uniform(2.0, 8.0))
            world.daemon.stop(signal.SIGKILL)
            st = statuses(world.state)
            in_flight.append(sum(st.get(r, ("", ""))[1] != "succeeded" for r in ids))
            kills += 1
            world.start_daemon("--inbox", str(inbox), "--workers", "8", tag=f"k{kills}")
        assert in_flight[0] > 0, "the first kill came after every run had finished"

        def done() -> bool:
            st = statuses(world.state)
            return all(st.get(r, ("", ""))[1] in ("succeeded", "failed", "cancelled") for r in ids)
        wait_for(done, max(60.0, deadline - time.monotonic()), "every run to finish", every=1.0)
        st = statuses(world.state)
        not_installed = {r: st.get(r) for r in ids if st.get(r) != ("installed", "succeeded")}
        assert not not_installed, not_installed
        assert ca_certificates(world.ca_dir) == RUNS
        cur_ids = _message_ids(world.maildir / "cur")
        assert len(cur_ids) == len(set(cur_ids)), "a message was taken twice"
        store = sqlite3.connect(world.state / "certwright.sqlite")
        taken = store.execute("SELECT COUNT(*), COUNT(DISTINCT ident) FROM processed "
                              "WHERE source LIKE 'mail:%'").fetchone()
        store.close()
        assert taken[0] == taken[1] == len(cur_ids)  # each mail in cur/ taken once
        # account confirmation, probe and issuance mail: three per run
        assert len(cur_ids) == 3 * RUNS
        assert len(list((inbox / "done").iterdir())) == RUNS - CLI_RUNS
    finally:
        world.close()
