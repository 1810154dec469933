"""Certificate names and the folders they own, for ``install.files``.

A certificate has a name (by default its first domain). Without an explicit ``dir`` it is
installed into ``<root>/<folder name>/`` (root: :func:`certwright.state.location.
default_live_dir`), where the folder name is the certificate's name with a wildcard's
``*.`` dropped, as certbot does. Each folder records its owner in
``.certwright/owner.json``: the certificate's name, the name it was asked for (``base``)
and its DNS names. So:

* a default folder owned by another lineage (the same name asked for, other DNS names)
  is left alone: the certificate gets the next free ``<name>-0001``, ``-0002``, ...;
* an explicit ``dir`` owned by a certificate of another name is refused before anything
  is written, naming the owner and what to do.

A folder without an owner record (installed before names existed, or by hand) is taken
by the first certificate installed into it.

Hazard: the owner record is read before the folder's lock is taken and again under it
(:func:`check_owner`), so two runs racing for one folder cannot both own it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from certwright.clock import format_instant
from certwright.errors import PermanentError
from certwright.steps._install_files import write_atomic
from certwright.steps._install_layout import META_DIR, check_folder

OWNER_FILE = "owner.json"
_MAX_SUFFIX = 9999


def dns_names(cert: x509.Certificate) -> list[str]:
    """The certificate's DNS names (SANs), in their order; the CN when it has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)]
    return names


def folder_name(name: str) -> str:
    """The folder a certificate called ``name`` gets: ``*.`` dropped; PermanentError when
    it cannot be a plain folder name."""
    base = name.removeprefix("*.")
    if not base or "/" in base or "\0" in base or base.startswith(".") or len(base) > 200:
        raise PermanentError(
            f"install.files: certificate name {name!r} cannot name a folder (it must be "
            "1-200 characters, without '/', not starting with '.'); give another with "
            "--name")
    return base


def read_owner(folder: Path) -> dict[str, Any] | None:
    """The owner record of ``folder``, or None when it has none (or it is unreadable)."""
    try:
        data = json.loads((folder / META_DIR / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("name"), str) else None


def _describe(owner: dict[str, Any]) -> str:
    names = owner.get("names")
    shown = ", ".join(str(n) for n in names) if isinstance(names, list) else "?"
    return f"certificate {owner['name']!r} (names {shown})"


def check_owner(folder: Path, name: str) -> None:
    """Refuse to install certificate ``name`` into ``folder`` owned by another name."""
    owner = read_owner(folder)
    if owner is not None and owner["name"] != name:
        raise PermanentError(
            f"install.files: folder {folder} belongs to {_describe(owner)}, so certificate "
            f"{name!r} is not installed there; nothing was written. Leave cert_dir unset to "
            f"give {name!r} a folder of its own, or choose another cert_dir (or, if "
            f"{owner['name']!r} is no longer wanted, remove {folder / META_DIR / OWNER_FILE})")


def _same_lineage(owner: dict[str, Any], asked: str, candidate: str,
                  names: Sequence[str]) -> bool:
    theirs = owner.get("names")
    return (asked in (owner.get("base"), owner["name"]) or candidate == owner["name"]) \
        and isinstance(theirs, list) and sorted(map(str, theirs)) == sorted(names)


def choose_folder(root: Path, asked: str, names: Sequence[str]) -> tuple[Path, str]:
    """(folder, certificate name) for a certificate asked for as ``asked`` under ``root``.

    The first of ``<base>``, ``<base>-0001``, ... that has no owner or is owned by this
    lineage (same name asked for, same DNS names). Reads only; PermanentError when all
    are taken.
    """
    base = folder_name(asked)
    for n in range(_MAX_SUFFIX + 1):
        candidate = base if n == 0 else f"{base}-{n:04d}"
        owner = read_owner(root / candidate)
        if owner is None or _same_lineage(owner, asked, candidate, names):
            return root / candidate, candidate
    raise PermanentError(f"install.files: every folder {base}-NNNN under {root} is taken; "
                         "give the certificate another name with --name")


def make_root(root: Path) -> None:
    """Create the certificates root and its missing parents (0755), safely; then check it
    as a target folder would be checked."""
    missing: list[Path] = []
    for folder in [root, *root.parents]:
        if os.path.lexists(folder):
            break
        missing.append(folder)
    for folder in reversed(missing):
        check_folder(folder, "certificates folder", create_mode=0o755)
    check_folder(root, "certificates root")


def write_owner(folder: Path, name: str, asked: str, names: Sequence[str]) -> None:
    """Record ``name`` as the owner of ``folder`` (its metadata folder must exist)."""
    record = {"name": name, "base": asked, "names": list(names)}
    path = folder / META_DIR / OWNER_FILE
    if read_owner(folder) != record:
        write_atomic(path, json.dumps(record, indent=2).encode(), 0o644)


def resolve(params: Mapping[str, Any], leaf: x509.Certificate, root: Callable[[], Path],
            ) -> tuple[Mapping[str, Any], str, str, list[str]]:
    """(params with ``dir`` set, certificate name, name asked for, DNS names).

    An explicit ``dir`` is checked against its owner (PermanentError when another name owns
    it); without one the folder is chosen under ``root()`` (created when missing).
    """
    names = dns_names(leaf)
    asked = str(params.get("name") or (names[0] if names else ""))
    if params.get("dir"):
        name = folder_name(asked)
        check_owner(Path(str(params["dir"])), name)
        return params, name, asked, names
    folder_name(asked)  # a bad name is refused before the root is created
    top = root()
    make_root(top)
    folder, name = choose_folder(top, asked, names)
    return {**params, "dir": str(folder)}, name, asked, names


def describe(leaf: x509.Certificate) -> dict[str, str]:
    """What the inventory keeps of a certificate: serial (hex), validity, issuer."""
    return {"serial": format(leaf.serial_number, "x"),
            "not_before": format_instant(leaf.not_valid_before_utc),
            "not_after": format_instant(leaf.not_valid_after_utc),
            "issuer": leaf.issuer.rfc4514_string()}
