"""The daemon's mail settings: the CA's senders and origins, a Maildir's owner and mode."""
from __future__ import annotations

from pathlib import Path

import pytest

from certwright.engine.daemon.config import from_mapping
from certwright.errors import InputError


def test_mail_settings_are_read() -> None:
    """ca_senders/ca_origins are lists; maildir_mode is octal text; owner/group are names."""
    cfg = from_mapping({"ca_senders": "ca@ca.test", "ca_origins": ["https://ca.test"],
                        "maildir_owner": "vmail", "maildir_group": "mail",
                        "maildir_mode": "0750"}, Path("/"))
    assert cfg.ca_senders == ("ca@ca.test",) and cfg.ca_origins == ("https://ca.test",)
    assert (cfg.maildir_owner, cfg.maildir_group, cfg.maildir_mode) == ("vmail", "mail", 0o750)


@pytest.mark.parametrize("mode", ["rwx", "0600", "99999"])
def test_a_bad_maildir_mode_is_named(mode: str) -> None:
    """A mode that is not octal, or keeps the owner out, is an error naming the key."""
    with pytest.raises(InputError, match="maildir_mode"):
        from_mapping({"maildir_mode": mode}, Path("/"))
