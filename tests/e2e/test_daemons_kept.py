"""The certificate ``ca.sign`` got on one host is installed on another, through the store.

Real parts: the built-in CA and mail server as processes, one PostgreSQL store, two
daemons (hosts alpha and beta, a state folder each, one store key). cacert runs of host
beta: beta makes their keys and CSRs, then is SIGKILLed; alpha does the CA and mail steps
(``ca.sign`` writes the certificate into alpha's folder) and parks them at the install,
waiting for beta; alpha's folder is then deleted (another machine's disk), and beta,
started again, installs each run's certificate from the store's copy.
"""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline_text
from certwright.state import names as N
from certwright.state.sealing import generate_key_file
from tests.fixtures.daemon.harness import Proc, env_for, start_world, wait_for
from tests.support.pg_daemons import make_runs, rows, start_daemon, started_on
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ["kept1.example.test", "kept2.example.test"]
LATER = "kept3.example.test"  # a run of host alpha, for the account beta's runs joined
ACCOUNT = "admin@kept.example.test"
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _done(url: str, step: str) -> set[str]:
    return {rid for rid, data in rows(url, f"SELECT run_id, data FROM {N.T_JOURNAL} "
                                           f"WHERE kind = 'step_done'")
            if json.loads(data).get("step") == step}


def _daemon(root: Path, url: str, host: str, key: Path, maildir: Path) -> Proc:
    env = env_for(root / host)
    env.pop("CERTWRIGHT_HOST", None)
    return start_daemon(root, url, host, ["--lease", "3", "--host", host, "--maildir",
                                          str(maildir)],
                        before=["--store-key", str(key)], env=env)


def test_a_certificate_signed_on_one_host_is_installed_on_another(
        tmp_path: Path, postgres: Cluster) -> None:
    url = postgres.store_url(str(tmp_path))
    key = tmp_path / "store.key"
    generate_key_file(key)
    world = start_world(tmp_path, ["kept.example.test", *DOMAINS, LATER])
    ids = [f"k{i}" for i in range(len(DOMAINS))]
    procs: list[Proc] = []
    try:
        text = (REPO / "pipelines" / "cacert.yaml").read_text()
        spec = load_pipeline_text(text, "cacert.yaml")
        make_runs(url, tmp_path, text, "cacert.yaml",
                  [coerce_inputs(spec, {**world.inputs(d), "email": ACCOUNT}) for d in DOMAINS],
                  ids, host="beta")
        beta = _daemon(tmp_path, url, "beta", key, world.maildir)
        procs.append(beta)
        wait_for(lambda: _done(url, "csr_generate") >= set(ids), 60,
                 "beta to make every key and CSR")
        beta.popen.send_signal(signal.SIGKILL)
        beta.popen.wait(10)
        procs.append(_daemon(tmp_path, url, "alpha", key, world.maildir))
        wait_for(lambda: _done(url, "ca_sign") >= set(ids), 120, "the certificates signed")
        wait_for(lambda: {r for r, w in rows(url, f"SELECT id, wants_host FROM {N.T_RUNS}")
                          if w == "beta"} == set(ids), 60,
                 "alpha to park every run at the install, waiting for beta")
        signed_on = {rid: started_on(url)[rid]["ca_sign"] for rid in ids}
        shutil.rmtree(tmp_path / "alpha" / "runs")  # alpha's disk is not beta's
        procs.append(_daemon(tmp_path, url, "beta", key, world.maildir))
        wait_for(lambda: {r for r, s in rows(url, f"SELECT id, status FROM {N.T_RUNS}")
                          if s == "succeeded"} == set(ids), 120, "beta to install every run")
        # alpha's own run for the same account, beta gone: it logs in with the store's copy
        procs[2].stop()
        procs[1].stop()  # and alpha afresh: no API token in its memory either
        shutil.rmtree(tmp_path / "alpha" / "accounts")  # whatever alpha kept of them
        procs.append(_daemon(tmp_path, url, "alpha", key, world.maildir))
        make_runs(url, tmp_path, text, "cacert.yaml",
                  [coerce_inputs(spec, {**world.inputs(LATER), "email": ACCOUNT})], ["later"],
                  host="alpha")
        wait_for(lambda: ("later", "succeeded") in rows(
            url, f"SELECT id, status FROM {N.T_RUNS}"), 120, "alpha to finish its own run")
    finally:
        for p in procs:
            p.stop()
        for p in world.procs:
            p.stop()
    assert any("alpha" in hosts for hosts in signed_on.values()), signed_on
    for rid, domain in zip(ids, DOMAINS, strict=True):
        assert started_on(url)[rid]["install_files"] == {"beta"}
        beta_run = tmp_path / "beta" / "runs" / rid
        installed = Path(world.inputs(domain)["cert_dir"])
        assert (installed / "server.key").read_bytes() == (beta_run / "server.key").read_bytes()
        cert = x509.load_pem_x509_certificate((installed / "server.crt").read_bytes())
        own = serialization.load_pem_private_key((beta_run / "server.key").read_bytes(), None)
        assert cert.public_key().public_bytes(*_SPKI) == own.public_key().public_bytes(*_SPKI)
    restored = [e for p in procs[2:] for e in p.events() if e.get("event") == "artefact_restored"]
    assert {e["run_id"] for e in restored if e["kind"] == "cert"} >= {
        rid for rid, hosts in signed_on.items() if hosts == {"alpha"}}
    for (body,) in rows(url, f"SELECT body FROM {N.T_ARTEFACTS}"):
        assert "cw-sealed:v1:" in body and "PRIVATE KEY" not in body
    assert [r for r, n in rows(url, f"SELECT run_id, name FROM {N.T_ARTEFACTS}")
            if n.startswith("account/")] == [""]
    (joined,) = [json.loads(d) for r, d in rows(url, f"SELECT run_id, data FROM {N.T_JOURNAL} "
                                                     f"WHERE kind = 'step_done'")
                 if r == "later" and json.loads(d)["step"] == "ca_join"]
    assert joined["outputs"]["reused"] is True
    assert started_on(url)["later"]["ca_join"] == {"alpha"}
    assert any(e.get("event") == "ca_account_restored" for e in procs[3].events())
