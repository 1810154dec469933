"""A real PostgreSQL cluster in a temp folder, for the PostgreSQL store's tests.

``initdb`` makes the cluster and ``pg_ctl`` starts it, listening on a Unix socket in that
folder and on a free loopback port; both refuse to run as root, so they run as the Debian
package's ``postgres`` user (``runuser``) on a folder it owns. :func:`postgres` is one
cluster for the whole session; :func:`own_cluster` makes one a test may stop and start
(the fault tests). Each store of a test lives in a schema of its own
(:meth:`Cluster.store_url`), so tests share the cluster but no data. Missing PostgreSQL:
the fixture fails when ``CI`` is set, else skips.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

USER = "postgres"  # the Debian package's system user, who owns the cluster


def _bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, if any."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*cmd: str | Path) -> list[str]:
    return ["runuser", "-u", USER, "--", *(str(c) for c in cmd)]


@dataclass
class Cluster:
    """One running cluster: its folder, socket folder and port, and how to reach it."""

    folder: Path
    bindir: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "run"

    def url(self, database: str = "certwright") -> str:
        """A libpq URL of ``database`` over the Unix socket, as the superuser."""
        folder = quote(str(self.socket_dir), safe="")
        return f"postgresql://{USER}@/{database}?host={folder}&port={self.port}"

    def tcp_url(self, database: str = "certwright") -> str:
        """The same database over loopback TCP (trust authentication)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def store_url(self, key: str) -> str:
        """The URL of a store of its own for ``key`` (a test's path): a schema named after
        it, created empty if missing, set as the connection's search path."""
        schema = "s" + hashlib.sha256(key.encode()).hexdigest()[:20]
        self.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        return self.url() + "&options=" + quote(f"-csearch_path={schema}", safe="")

    def sql(self, statement: str, database: str = "certwright") -> str:
        """Run one statement with psql as the superuser; its output (tuples only)."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", USER, "-d", database,
             "-c", statement], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise AssertionError(f"psql {statement!r} failed: {done.stderr}")
        return done.stdout.strip()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        subprocess.run(_as_postgres(self.bindir / "pg_ctl", "-D", self.data, "-w", "-t", "60",
                                    "-l", self.folder / "server.log", "start"),
                       check=True, capture_output=True, timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnects every client; ``immediate``: as a crash)."""
        subprocess.run(_as_postgres(self.bindir / "pg_ctl", "-D", self.data, "-w", "-m", mode,
                                    "stop"), check=False, capture_output=True, timeout=90)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "server.log").read_text(errors="replace")[-4000:]
        return ""


@contextlib.contextmanager
def cluster(*, durable: bool = False) -> Iterator[Cluster]:
    """A new cluster, started, with a database ``certwright``; stopped and removed after.

    Tests run it with ``fsync = off`` (nothing in a test outlives the machine);
    ``durable`` keeps PostgreSQL's defaults, as a deployment has them (the benchmarks)."""
    bindir = _bindir()
    if bindir is None or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="certwright-pg-"))
    os.chmod(folder, 0o755)
    account = pwd.getpwnam(USER)
    (folder / "run").mkdir()
    for path in (folder, folder / "run"):
        os.chown(path, account.pw_uid, account.pw_gid)
    found = Cluster(folder, bindir, _free_port())
    try:
        subprocess.run(_as_postgres(bindir / "initdb", "-D", found.data, "-U", USER,
                                    "-A", "trust", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, timeout=120)
        conf = (f"listen_addresses = '127.0.0.1'\nport = {found.port}\n"
                f"unix_socket_directories = '{found.socket_dir}'\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
                + ("" if durable else "fsync = off\n"))
        with (found.data / "postgresql.conf").open("a") as f:
            f.write(conf)
        found.start()
        found.sql("CREATE DATABASE certwright", database="postgres")
        yield found
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"PostgreSQL did not start: {exc.stderr!r}\n{found.log()}") \
            from exc
    finally:
        found.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One cluster for the session's tests (each store in a schema of its own)."""
    with cluster() as found:
        yield found


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test alone, which it may stop and start."""
    with cluster() as found:
        yield found
