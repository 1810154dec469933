"""Store URLs (``state.urls``): what each names, what is refused and how it is shown."""
from __future__ import annotations

from pathlib import Path

import pytest

from certwright.errors import InputError
from certwright.state.urls import POSTGRESQL, SQLITE, display_url, parse_store_url


def test_sqlite_urls_name_an_absolute_file() -> None:
    """sqlite:///ABS and sqlite:REL both give an absolute path (REL from here)."""
    assert parse_store_url("sqlite:///srv/cw/certwright.sqlite").target == \
        "/srv/cw/certwright.sqlite"
    rel = parse_store_url("sqlite:state/certwright.sqlite")
    assert rel.kind == SQLITE and rel.path == Path.cwd() / "state" / "certwright.sqlite"


def test_postgresql_urls_are_kept_as_given() -> None:
    """Both schemes; socket folders as host=, options, several hosts."""
    for url in ("postgresql://cw@db.example:5433/certwright",
                "postgres://cw:pw@/certwright?host=%2Fvar%2Frun%2Fpostgresql",
                "postgresql://cw@db1,db2/certwright?target_session_attrs=read-write",
                "postgresql:///certwright?options=-csearch_path%3Dcw"):
        found = parse_store_url(url)
        assert (found.kind, found.target) == (POSTGRESQL, url)


@pytest.mark.parametrize(("url", "said"), [
    ("", "not a store URL"),
    ("db.example/certwright", "not a store URL"),
    ("mysql://db.example/certwright", "not a store URL"),
    ("sqlite://", "no SQLite file"),
    ("sqlite:///srv/cw/", "no SQLite file"),
    ("postgresql://db.example:99999/x", "bad port"),
    ("postgresql://db.example:port/x", "bad port"),
    ("postgresql://db.example/a/b", "one database name"),
    ("postgresql://db.example/x#frag", "fragment"),
    ("postgresql://db.example/x?nosuchoption=1", "nosuchoption"),
])
def test_bad_urls_say_what_is_wrong_and_where_from(url: str, said: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_store_url(url, "CERTWRIGHT_STORE")
    assert said in str(caught.value) and str(caught.value).startswith("CERTWRIGHT_STORE ")


def test_a_password_is_never_shown() -> None:
    """In the user part or as a parameter, the password is replaced by ***."""
    shown = display_url("postgresql://cw:s3cret@db.example/x?password=s3cret&sslmode=require")
    assert "s3cret" not in shown
    assert shown == "postgresql://cw:***@db.example/x?password=***&sslmode=require"
    assert display_url("postgresql:///cw?host=/run/postgresql") == \
        "postgresql:///cw?host=/run/postgresql"
    bad = "postgresql://cw:s3cret@db.example:99999/x"
    with pytest.raises(InputError) as caught:
        parse_store_url(bad)
    assert "s3cret" not in str(caught.value)
