"""The store contract for what runs make and what the store seals, as tests.

A back-end subclasses :class:`ArtefactContract` beside ``StoreContract`` with the same
``make_store``, :meth:`raw_bodies` and :meth:`replace_body` (a table's ``body`` column
read and overwritten around the store). It checks that an artefact (``Tx.put_artefact``)
comes back as put, sealed with the store key and in clear without one; that a private
key is refused without a key; that neither a sealed artefact nor sealed secrets show
their plaintext in the table; that another key, a value altered or moved to another row,
all fail with a StoreError that says so; that secrets kept in clear before a key was
configured are still read; and that a rolled-back transaction keeps no artefact.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from certwright.errors import StoreError
from certwright.state import names as N
from certwright.state.artefacts import Artefact
from certwright.state.base import Store
from certwright.state.contract import Boom, opened, raises
from certwright.state.sealing import Sealer

KEY_PEM = (b"-----BEGIN PRIVATE KEY-----\nnot-a-real-key-but-secret-bytes\n"
           b"-----END PRIVATE KEY-----\n")
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB-certificate-bytes\n-----END CERTIFICATE-----\n"
PASSPHRASE = "correct horse battery staple 42!"  # noqa: S105 - a fake, looked for


def sealer(seed: int = 1) -> Sealer:
    return Sealer(bytes([seed]) * 32, f"test key {seed}")


def art(run_id: str, name: str, kind: str, data: bytes) -> Artefact:
    return Artefact(run_id=run_id, name=name, kind=kind, data=data, rel=Path(name).name)


class ArtefactContract:
    """Artefacts and sealing; subclass it, implement :meth:`make_store` and
    :meth:`raw_bodies`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def raw_bodies(self, store: Store, table: str) -> list[tuple[str, str]]:
        """Every (run_id, body) of ``table`` as stored, by run_id, read around the store."""
        raise NotImplementedError

    @contextmanager
    def _opened(self, tmp_path: Path, key: Sealer | None = None) -> Iterator[Store]:
        with opened(self.make_store, tmp_path / "store") as store:
            store.sealer = key
            yield store

    def test_artefacts_round_trip_sealed(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            with store.transaction() as tx:
                tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
                tx.put_artefact(art("r1", "/srv/r1/server.crt", "cert", CERT_PEM))
                tx.put_artefact(art("r2", "/srv/r2/server.crt", "cert", b"other"))
            kept = store.artefacts("r1")
            assert [(a.name, a.kind, a.data, a.rel, a.sealed) for a in kept] == [
                ("/srv/r1/server.crt", "cert", CERT_PEM, "server.crt", True),
                ("/srv/r1/server.key", "key", KEY_PEM, "server.key", True)]
            (one,) = store.artefacts("r1", "/srv/r1/server.key")
            assert one.data == KEY_PEM and len(one.sha256) == 64 and one.created
            assert store.artefacts("r1", "/srv/r1/nothing") == []
            assert store.artefacts("r3") == []

    def test_a_later_put_replaces(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            for data in (b"first", b"second"):
                with store.transaction() as tx:
                    tx.put_artefact(art("r1", "/srv/r1/server.crt", "cert", data))
            assert [a.data for a in store.artefacts("r1")] == [b"second"]

    def test_without_a_key_certificates_are_kept_in_clear_and_keys_refused(
            self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_artefact(art("r1", "/srv/r1/server.crt", "cert", CERT_PEM))
            (cert,) = store.artefacts("r1")
            assert cert.data == CERT_PEM and not cert.sealed

            def put_key() -> None:
                with store.transaction() as tx:
                    tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
            assert "only sealed" in str(raises(StoreError, put_key))
            assert [a.kind for a in store.artefacts("r1")] == ["cert"]

    def test_an_unknown_kind_is_refused(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            def put() -> None:
                with store.transaction() as tx:
                    tx.put_artefact(art("r1", "/srv/x", "diary", b"x"))
            assert "diary" in str(raises(StoreError, put))

    def test_the_table_holds_no_plaintext(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            with store.transaction() as tx:
                tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
                tx.put_secrets("r1", {"inputs": {"passphrase": PASSPHRASE}})
            stored = [body for table in (N.T_ARTEFACTS, N.T_SECRETS)
                      for _, body in self.raw_bodies(store, table)]
            assert len(stored) == 2
            for text in stored:
                assert "cw-sealed:v1:" in text
                for secret in (KEY_PEM, PASSPHRASE.encode()):
                    assert secret.decode() not in text
                    assert base64.b64encode(secret).decode()[:24] not in text
            assert store.load_secrets("r1") == {"inputs": {"passphrase": PASSPHRASE}}

    def test_another_key_or_no_key_cannot_open(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer(1)) as store:
            with store.transaction() as tx:
                tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
                tx.put_secrets("r1", {"inputs": {"passphrase": PASSPHRASE}})
            store.sealer = sealer(2)
            for call in (lambda: store.artefacts("r1"), lambda: store.load_secrets("r1")):
                message = str(raises(StoreError, call))
                assert sealer(1).key_id in message and "same key file" in message
            store.sealer = None
            for call in (lambda: store.artefacts("r1"), lambda: store.load_secrets("r1")):
                assert "no store key is configured" in str(raises(StoreError, call))
            store.sealer = sealer(1)
            assert store.artefacts("r1")[0].data == KEY_PEM

    def test_a_sealed_value_moved_to_another_row_does_not_open(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            with store.transaction() as tx:
                tx.put_secrets("r1", {"inputs": {"passphrase": PASSPHRASE}})
                tx.put_secrets("r2", {"inputs": {"passphrase": "r2's"}})
            r1_body = dict(self.raw_bodies(store, N.T_SECRETS))["r1"]
            self.replace_body(store, N.T_SECRETS, "r2", r1_body)
            message = str(raises(StoreError, lambda: store.load_secrets("r2")))
            assert "altered" in message and "secrets/r2" in message
            assert store.load_secrets("r1") == {"inputs": {"passphrase": PASSPHRASE}}

    def test_secrets_kept_in_clear_are_still_read_with_a_key(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_secrets("r1", {"inputs": {"passphrase": PASSPHRASE}})
            assert PASSPHRASE in self.raw_bodies(store, N.T_SECRETS)[0][1]
            store.sealer = sealer()
            assert store.load_secrets("r1") == {"inputs": {"passphrase": PASSPHRASE}}
            with store.transaction() as tx:  # the next put seals them
                tx.put_secrets("r1", {"inputs": {"passphrase": PASSPHRASE}})
            assert PASSPHRASE not in self.raw_bodies(store, N.T_SECRETS)[0][1]

    def test_a_rolled_back_transaction_keeps_no_artefact(self, tmp_path: Path) -> None:
        with self._opened(tmp_path, sealer()) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
                    raise Boom
            raises(Boom, fail)
            assert store.artefacts("r1") == []

    def replace_body(self, store: Store, table: str, run_id: str, body: str) -> None:
        """Overwrite ``table``'s body of ``run_id`` around the store (a tampering)."""
        raise NotImplementedError
