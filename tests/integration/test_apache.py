"""The install steps against a real Apache httpd on loopback (tests/support/apache.py).

Each test starts its own Apache (the ``apache`` fixture) serving a throwaway self-signed
certificate from ``<tmp>/certs``, then installs, reloads and checks with the real steps.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.install import InstallCheck, InstallFiles, InstallReload
from tests.support.apache import ApacheServer, apache, make_self_signed, pem_fingerprint  # noqa: F401

pytestmark = pytest.mark.slow


def ctx(tmp_path: Path, params: dict[str, Any]) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock())


def outputs(result: Any) -> dict[str, Any]:
    if not isinstance(result, Done):
        raise AssertionError(f"expected Done, got {result!r}")
    return dict(result.outputs)


def material(folder: Path, tag: str) -> tuple[dict[str, str], str]:
    """A fresh key and self-signed cert for example.test: (install.files params, fingerprint)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = make_self_signed("example.test")
    (folder / f"{tag}.crt").write_bytes(cert)
    (folder / f"{tag}.key").write_bytes(key)
    os.chmod(folder / f"{tag}.key", 0o600)
    return ({"cert": str(folder / f"{tag}.crt"), "key": str(folder / f"{tag}.key")},
            pem_fingerprint(cert))


def deploy(tmp_path: Path, server: ApacheServer, m: dict[str, str]) -> dict[str, Any]:
    """install.files into the server's cert folder, then install.reload (config test first)."""
    out = outputs(InstallFiles().run(ctx(tmp_path, {**m, "dir": str(server.cert_dir)})))
    outputs(InstallReload().run(ctx(tmp_path, {"test": server.test_argv,
                                               "command": server.reload_argv})))
    return out


def check_params(server: ApacheServer, expected_cert: str, **extra: Any) -> dict[str, Any]:
    return {"address": server.address, "server_name": "example.test", "cert": expected_cert,
            "dir": str(server.cert_dir), "reload": server.reload_argv,
            "attempts": 10, "delay": 0.3, **extra}


def test_install_reload_check_and_rollback(tmp_path: Path, apache: ApacheServer) -> None:
    """A then B install and pass the check; C checked against D fails, B is restored and
    served again after the rollback's reload."""
    initial = apache.fingerprint()
    a, fp_a = material(tmp_path / "in", "a")
    first = deploy(tmp_path, apache, a)
    assert first["changed"] is True and first["previous"] != ""
    out = outputs(InstallCheck().run(ctx(tmp_path, check_params(apache, a["cert"]))))
    assert out == {"fingerprint_sha256": fp_a, "address": apache.address}
    assert fp_a != initial

    b, fp_b = material(tmp_path / "in", "b")
    deploy(tmp_path, apache, b)
    out = outputs(InstallCheck().run(ctx(tmp_path, check_params(apache, b["cert"]))))
    assert out["fingerprint_sha256"] == fp_b
    assert apache.fingerprint() == fp_b

    c, fp_c = material(tmp_path / "in", "c")
    d, fp_d = material(tmp_path / "in", "d")
    deploy(tmp_path, apache, c)
    with pytest.raises(PermanentError) as err:
        InstallCheck().run(ctx(tmp_path, check_params(apache, d["cert"])))
    msg = str(err.value)
    assert fp_c in msg and fp_d in msg and fp_b in msg
    assert "CN=example.test" in msg and "restored" in msg and "reloaded" in msg
    assert apache.wait_for_fingerprint(fp_b) == fp_b
    assert pem_fingerprint((apache.cert_dir / "server.crt").read_bytes()) == fp_b
    assert (apache.cert_dir / "server.key").read_bytes() == Path(b["key"]).read_bytes()
    assert apache.is_running()


def test_broken_config_never_reloads(tmp_path: Path, apache: ApacheServer) -> None:
    """With a config error, install.reload fails on the config test and does not reload:
    the server keeps running and serving the certificate it had."""
    a, fp_a = material(tmp_path / "in", "a")
    deploy(tmp_path, apache, a)
    assert apache.wait_for_fingerprint(fp_a) == fp_a
    b, _fp_b = material(tmp_path / "in", "b")
    outputs(InstallFiles().run(ctx(tmp_path, {**b, "dir": str(apache.cert_dir)})))
    apache.write_config(extra="ThisIsNotADirective on\n")
    with pytest.raises(PermanentError) as err:
        InstallReload().run(ctx(tmp_path, {"test": apache.test_argv,
                                           "command": apache.reload_argv}))
    assert "ThisIsNotADirective" in str(err.value) and "not reloaded" in str(err.value)
    assert apache.is_running()
    assert apache.fingerprint() == fp_a  # the new files on disk were not picked up


def test_check_without_rollback_leaves_files(tmp_path: Path, apache: ApacheServer) -> None:
    """rollback: false reports the mismatch and restores nothing."""
    a, fp_a = material(tmp_path / "in", "a")
    deploy(tmp_path, apache, a)
    other, _ = material(tmp_path / "in", "x")
    with pytest.raises(PermanentError, match="nothing was restored"):
        InstallCheck().run(ctx(tmp_path, check_params(apache, other["cert"], rollback=False,
                                                      attempts=2, delay=0.1)))
    assert pem_fingerprint((apache.cert_dir / "server.crt").read_bytes()) == fp_a
    assert apache.wait_for_fingerprint(fp_a) == fp_a


def test_missing_apache_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without apache2 the fixture skips, or fails when CI is set."""
    import tests.support.apache as support
    monkeypatch.setattr(support, "find_apache", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        support.require_apache()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install apache2"):
        support.require_apache()
