"""install.files with certificate names: its own folder under the certificates root, the
owner recorded, a foreign folder refused before anything is written."""
from __future__ import annotations

import os

import pytest

from certwright.errors import PermanentError
from certwright.steps.install import InstallFiles
from tests.integration.test_install import make_ctx, make_material, outputs, snapshot
from tests.support.apache import make_self_signed


@pytest.fixture
def live(tmp_path, monkeypatch):
    root = tmp_path / "live"
    monkeypatch.setenv("CERTWRIGHT_LIVE_DIR", str(root))
    return root


def _install(tmp_path, params):
    return outputs(InstallFiles().run(make_ctx(tmp_path, params)))


def _material(tmp_path, tag, name):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    cert, key = make_self_signed(name)
    (folder / f"{tag}.crt").write_bytes(cert)
    (folder / f"{tag}.key").write_bytes(key)
    os.chmod(folder / f"{tag}.key", 0o600)
    return {"cert": str(folder / f"{tag}.crt"), "key": str(folder / f"{tag}.key")}


def test_without_dir_the_certificate_gets_its_own_folder_and_describes_itself(tmp_path, live):
    out = _install(tmp_path, make_material(tmp_path / "in", "a"))
    folder = live / "example.test"
    assert out["dir"] == str(folder) and out["name"] == "example.test"
    assert out["names"] == ["example.test"] and out["cert_path"] == str(folder / "server.crt")
    assert out["serial"] and out["not_before"] < out["not_after"] and out["issuer"]
    assert (folder / "server.key").stat().st_mode & 0o777 == 0o600
    assert oct(live.stat().st_mode & 0o777) == "0o755"


def test_another_lineage_of_the_same_name_gets_a_numbered_folder(tmp_path, live):
    first = _install(tmp_path, {**_material(tmp_path, "a", "example.test"),
                                "name": "example.test"})
    other = _install(tmp_path, {**_material(tmp_path, "b", "other.example.test"),
                                "name": "example.test"})
    assert first["dir"] == str(live / "example.test")
    assert other["dir"] == str(live / "example.test-0001")
    assert other["name"] == "example.test-0001"
    again = _install(tmp_path, {**_material(tmp_path, "c", "example.test"),
                                "name": "example.test"})
    assert again["dir"] == str(live / "example.test") and again["changed"]


def test_a_wildcard_folder_drops_the_star(tmp_path, live):
    out = _install(tmp_path, {**_material(tmp_path, "w", "*.example.test")})
    assert out["dir"] == str(live / "example.test") and out["name"] == "example.test"
    assert out["names"] == ["*.example.test"]


def test_an_explicit_dir_owned_by_another_name_is_refused_and_nothing_written(tmp_path, live):
    shared = tmp_path / "shared"
    _install(tmp_path, {**_material(tmp_path, "a", "a.example.test"), "dir": str(shared)})
    before = snapshot(shared)
    with pytest.raises(PermanentError, match=r"belongs to certificate 'a.example.test'"):
        _install(tmp_path, {**_material(tmp_path, "b", "b.example.test"), "dir": str(shared)})
    assert snapshot(shared) == before
    assert not live.exists()  # an explicit dir never touches the root


def test_a_name_that_cannot_be_a_folder_is_refused(tmp_path, live):
    with pytest.raises(PermanentError, match=r"cannot name a folder"):
        _install(tmp_path, {**_material(tmp_path, "a", "a.example.test"), "name": "../etc"})
    assert not live.exists()
