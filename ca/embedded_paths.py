"""Where the embedded CA and mail server keep their state: names only, no imports.

Both :mod:`certwright.ca.provider` (which must stay cheap to ask) and
:mod:`certwright.ca.embedded` (which starts the servers) need these paths.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["FOLDER", "ports_file"]

FOLDER = "embedded"    # under the state dir: the CA, the Maildir, ports.json


def ports_file(state_dir: Path) -> Path:
    """Where the ports first chosen (and the CA's URL) are recorded."""
    return Path(state_dir) / FOLDER / "ports.json"
