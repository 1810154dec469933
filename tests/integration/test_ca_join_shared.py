"""``ca.join`` keeps a new account's credentials in the store before it sends them.

A host killed after its join reached the CA, and before the step's result was committed,
used to leave the credentials on its own disk only: the daemon of another host that took
the run made new ones, the CA answered ``account_exists``, and the run failed. The host
"killed" here is a step whose result is dropped (never committed), and the other host is
another state folder on the same store file, with the same store key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from certwright.ca.server import CAServer
from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.engine.run.context import share_artefact
from certwright.state.artefacts import SHARED, Artefact
from certwright.state.sealing import generate_key_file
from certwright.state.sqlite import SQLiteStore
from certwright.steps.ca import Join, credentials_path
from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    ca_server,
    fake_clock,
    smtp_sink,
)

EMAIL = "ops@shared-join.test"


def _ctx(store: SQLiteStore, state_dir: Path, params: dict[str, Any], rid: str,
         attempt: int = 0) -> StepContext:
    def artefact(name: str) -> Artefact | None:
        found = store.artefacts(SHARED, name)
        return found[0] if found else None
    return StepContext(run_id=rid, pipeline="t", state="new", step_id="ca_join",
                       idempotency_key=f"{rid}:1:0", attempt=attempt, params=params,
                       run_dir=state_dir / "runs" / rid, state_dir=state_dir,
                       clock=SystemClock(), processed=store.is_processed, artefact=artefact,
                       share=lambda art: share_artefact(store, art), sealing=True)


def test_a_join_whose_result_was_lost_is_taken_up_by_another_host(
        tmp_path: Path, ca_server: CAServer, smtp_sink: SmtpSink) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite", sealer=generate_key_file(tmp_path / "key"))
    params = {"ca": ca_server.url, "email": EMAIL, "name": "Shared Operator"}
    first = Join().run(_ctx(store, tmp_path / "alpha", params, "r1"))
    assert isinstance(first, Done) and first.outputs["reused"] is False
    # alpha is killed here: its result (with the credentials in Done.kept) never commits
    kept = store.artefacts(SHARED)
    assert [a.kind for a in kept] == ["account"], "the credentials were not kept before the POST"
    alpha_file = credentials_path(tmp_path / "alpha", ca_server.url, EMAIL)
    assert json.loads(kept[0].data)["passphrase"] == json.loads(alpha_file.read_text())[
        "passphrase"]

    second = Join().run(_ctx(store, tmp_path / "beta", params, "r1", attempt=1))
    assert isinstance(second, Done)
    assert second.outputs["account_id"] == first.outputs["account_id"]
    beta_file = credentials_path(tmp_path / "beta", ca_server.url, EMAIL)
    assert json.loads(beta_file.read_text())["passphrase"] == json.loads(
        alpha_file.read_text())["passphrase"]
    store.close()


def test_the_credentials_kept_first_win_over_a_later_host_s(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite", sealer=generate_key_file(tmp_path / "key"))
    one = Artefact(run_id=SHARED, name="account/abc", kind="account", data=b'{"n": 1}')
    two = Artefact(run_id=SHARED, name="account/abc", kind="account", data=b'{"n": 2}')
    assert share_artefact(store, one).data == b'{"n": 1}'
    assert share_artefact(store, two).data == b'{"n": 1}'
    assert [a.data for a in store.artefacts(SHARED, "account/abc")] == [b'{"n": 1}']
    store.close()
