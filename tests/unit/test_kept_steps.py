"""What steps keep in the store and get back from it (``steps._kept``), and the steps that
use it: ``key.generate`` offers its key only to a sealing store, ``csr.generate`` its CSR
always, and a missing file comes back from the store where this host keeps the run."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError, StoreError
from certwright.state.artefacts import Artefact
from certwright.steps._kept import keep, restore, restored
from certwright.steps.keys import CsrGenerate, KeyGenerate


def ctx(tmp_path: Path, kept: dict[str, Artefact] | None = None, *, sealing: bool = True,
        host: str = "here", **params: Any) -> StepContext:
    store = kept if kept is not None else {}
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=tmp_path / host / "runs" / "r1", state_dir=tmp_path / host,
                       clock=SystemClock(), artefact=store.get, sealing=sealing)


def kept_of(result: Any) -> dict[str, Artefact]:
    assert isinstance(result, Done)
    return {a.name: a for a in result.kept}


def test_key_generate_keeps_its_key_only_when_the_store_seals(tmp_path: Path) -> None:
    sealed = kept_of(KeyGenerate().run(ctx(tmp_path)))
    (art,) = sealed.values()
    assert (art.kind, art.rel, art.run_id) == ("key", "server.key", "r1")
    assert art.data == Path(art.name).read_bytes()
    again = kept_of(KeyGenerate().run(ctx(tmp_path)))  # reused: kept again, same bytes
    assert [a.data for a in again.values()] == [art.data]
    assert kept_of(KeyGenerate().run(ctx(tmp_path, sealing=False))) == {}
    no_engine = StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                            idempotency_key="r1:1:0", attempt=1, params={},
                            run_dir=tmp_path / "other", state_dir=tmp_path,
                            clock=SystemClock())
    assert kept_of(KeyGenerate().run(no_engine)) == {}


def test_csr_generate_keeps_its_csr_and_gets_the_key_back_on_another_host(
        tmp_path: Path) -> None:
    made = kept_of(KeyGenerate().run(ctx(tmp_path, host="alpha")))
    key_name = next(iter(made))
    Path(key_name).unlink()  # alpha's disk is not beta's
    on_beta = ctx(tmp_path, made, host="beta", key=key_name, domains=["a.example.test"])
    out = kept_of(CsrGenerate().run(on_beta))
    (csr,) = out.values()
    assert csr.kind == "csr" and csr.name == str(on_beta.run_dir / "server.csr")
    restored_key = on_beta.run_dir / "server.key"  # alpha's key, in beta's folder of the run
    assert restored_key.read_bytes() == made[key_name].data
    assert stat.S_IMODE(restored_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(restored_key.parent.stat().st_mode) == 0o700


def test_keep_names_the_path_inside_the_run_folder_or_none(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    (inside,) = keep(c, c.run_dir / "sub" / "cert.pem", "cert", b"x")
    (outside,) = keep(c, tmp_path / "elsewhere.pem", "cert", b"y")
    assert (inside.rel, outside.rel) == ("sub/cert.pem", "")
    with pytest.raises(PermanentError, match="cannot read"):
        keep(c, tmp_path / "missing.pem", "cert")


def test_restore_uses_what_is_here_and_puts_back_what_is_not(tmp_path: Path) -> None:
    here = tmp_path / "here.pem"
    here.write_bytes(b"local")
    gone = tmp_path / "gone" / "cert.pem"
    kept = {str(gone): Artefact("r1", str(gone), "cert", b"from the store", rel=""),
            str(here): Artefact("r1", str(here), "cert", b"other", rel="")}
    c = ctx(tmp_path, kept)
    assert restore(c, here, "cert") == here and here.read_bytes() == b"local"
    assert restore(c, gone, "cert") == gone and gone.read_bytes() == b"from the store"
    assert stat.S_IMODE(gone.stat().st_mode) == 0o644
    before = gone.stat().st_mtime_ns
    assert restore(c, gone, "cert") == gone and gone.stat().st_mtime_ns == before
    nothing = tmp_path / "never.pem"
    assert restore(c, nothing, "cert") == nothing and not nothing.exists()
    assert restored(c, {"cert": str(gone), "chain": "", "dir": "x"},
                    (("cert", "cert"), ("chain", "chain"))) == {
        "cert": str(gone), "chain": "", "dir": "x"}


def test_a_key_not_here_without_a_store_key_or_unreadable_is_refused_saying_why(
        tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="without a store key"):
        restore(ctx(tmp_path, sealing=False), tmp_path / "alpha" / "server.key", "key")

    def broken(name: str) -> Artefact | None:
        raise StoreError(f"artefact/r1/{name} is sealed with store key 0123, not ...")
    c = StepContext(run_id="r1", pipeline="t", state="s", step_id="x", idempotency_key="k",
                    attempt=1, params={}, run_dir=tmp_path, state_dir=tmp_path,
                    clock=SystemClock(), artefact=broken, sealing=True)
    with pytest.raises(PermanentError, match=r"store's copy cannot be read: .*store key 0123"):
        restore(c, tmp_path / "x" / "server.key", "key")
