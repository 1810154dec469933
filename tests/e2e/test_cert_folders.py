"""Certificate names and folders: each certificate installs into a folder of its own under
the certificates root, and a folder another certificate owns is never written into."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from certwright.state.location import default_live_dir
from certwright.steps._install_lineage import choose_folder, folder_name, write_owner


def _tree_hash(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "lock"}


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state"),
           "CERTWRIGHT_LIVE_DIR": str(tmp_path / "live")}
    return subprocess.run([sys.executable, "-m", "certwright", "run", "cacert", *args],
                          env=env, capture_output=True, text=True, timeout=180, check=False)


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in ext.get_values_for_type(x509.DNSName)]


def test_two_domains_with_the_defaults_get_two_folders_each_intact(tmp_path):
    """The bug: a second domain overwrote the first one's server.crt in ./certs."""
    first = _run(tmp_path, "--set", "domain=a.example.test", "--run-id", "a")
    assert first.returncode == 0, first.stderr[-3000:]
    a = tmp_path / "live" / "a.example.test"
    before = _tree_hash(a)
    second = _run(tmp_path, "--set", "domain=b.example.test", "--run-id", "b")
    assert second.returncode == 0, second.stderr[-3000:]
    b = tmp_path / "live" / "b.example.test"
    assert _tree_hash(a) == before
    for folder, name in ((a, "a.example.test"), (b, "b.example.test")):
        assert _sans(folder / "server.crt") == [name]
        assert {"server.crt", "server.key", "chain.pem", "fullchain.pem"} <= \
            {p.name for p in folder.iterdir()}
        assert oct((folder / "server.key").stat().st_mode & 0o777) == "0o600"
    assert str(b / "server.crt") in second.stdout  # the report names the real paths


def test_a_shared_cert_dir_for_a_second_name_is_refused_and_nothing_written(tmp_path):
    shared = tmp_path / "shared"
    first = _run(tmp_path, "--set", "domain=a.example.test", "--set", f"cert_dir={shared}",
                 "--run-id", "a")
    assert first.returncode == 0, first.stderr[-3000:]
    before = _tree_hash(shared)
    second = _run(tmp_path, "--set", "domain=b.example.test", "--set", f"cert_dir={shared}",
                  "--run-id", "b")
    assert second.returncode == 2  # refused before the run exists: the CA is not asked
    assert "belongs to certificate 'a.example.test'" in second.stderr, second.stderr[-3000:]
    assert "Leave cert_dir unset" in second.stderr
    assert _tree_hash(shared) == before
    assert _sans(shared / "server.crt") == ["a.example.test"]
    assert not (tmp_path / "state" / "runs" / "b").exists()


def test_the_install_step_refuses_a_foreign_folder_too(tmp_path):
    """A run started before the folder was taken (or by the daemon) is stopped by the
    install step itself, before it writes anything."""
    from certwright.errors import PermanentError
    from certwright.steps._install_lineage import check_owner
    (tmp_path / "f" / ".certwright").mkdir(parents=True)
    write_owner(tmp_path / "f", "a.example.test", "a.example.test", ["a.example.test"])
    before = _tree_hash(tmp_path / "f")
    with pytest.raises(PermanentError,
                       match=r"belongs to certificate 'a.example.test' \(names a.example.test\)"):
        check_owner(tmp_path / "f", "b.example.test")
    check_owner(tmp_path / "f", "a.example.test")  # its owner may install again
    assert _tree_hash(tmp_path / "f") == before


def test_run_name_option_names_the_folder(tmp_path):
    done = _run(tmp_path, "--set", "domain=a.example.test", "--name", "web", "--run-id", "w")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _sans(tmp_path / "live" / "web" / "server.crt") == ["a.example.test"]


def test_a_wildcard_folder_drops_the_star_and_another_lineage_gets_a_suffix(tmp_path):
    assert folder_name("*.example.test") == "example.test"
    root = tmp_path / "live"
    (root / "example.test" / ".certwright").mkdir(parents=True)
    write_owner(root / "example.test", "example.test", "example.test", ["example.test"])
    # the same name asked for, other names: another lineage, so the next free folder
    assert choose_folder(root, "example.test", ["example.test", "www.example.test"]) == \
        (root / "example.test-0001", "example.test-0001")
    # the same lineage again (a renewal): its own folder
    assert choose_folder(root, "example.test", ["example.test"]) == \
        (root / "example.test", "example.test")
    (root / "example.test-0001" / ".certwright").mkdir(parents=True)
    write_owner(root / "example.test-0001", "example.test-0001", "example.test",
                ["example.test", "www.example.test"])
    assert choose_folder(root, "example.test", ["www.example.test", "example.test"]) == \
        (root / "example.test-0001", "example.test-0001")
    assert choose_folder(root, "*.example.test", ["*.example.test"]) == \
        (root / "example.test-0002", "example.test-0002")


def test_the_certificates_root_is_absolute_and_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CERTWRIGHT_LIVE_DIR", "rel/live")
    assert default_live_dir() == tmp_path / "rel" / "live"
    monkeypatch.delenv("CERTWRIGHT_LIVE_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = Path("/etc/certwright/live") if os.geteuid() == 0 else \
        tmp_path / "data" / "certwright" / "live"
    assert default_live_dir() == expected
