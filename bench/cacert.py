"""cacert benchmark, as deployed: the CA, the mail server and the daemon as processes.

``certwright mail serve`` and ``certwright ca serve`` run as processes of their own, as an
operator deploys them (loopback, the CA's rate limits lifted through its settings:
``--rate-limit off``, as the tests do), and ``certwright daemon`` drives the runs: the
pipeline ``cacert`` for N domains on one CA account. The first domain runs alone and
joins the CA (account, confirmation mail); the other N-1 are dropped into the daemon's
inbox at once and reuse the account: per domain a probe, the probe mail through SMTP into
the Maildir, the link followed, verification, signature, install into a scratch folder.
A run counts only if it reached ``installed`` and the CA holds one certificate per domain.

* ``certs_per_s``: domains installed per second, from the first request file to the last
  run installed (the join included, ``join_seconds`` of it; the processes' start and
  imports are not).
* ``raw_crypto_per_s``: a plain loop in this script doing only the cryptography one
  certificate needs (EC P-256 key, CSR, certificate signed by an EC P-256 CA key).
* ``ratio_to_raw`` = the first over the second (goal >= 0.01).
* ``cpu_s_per_cert``: CPU seconds (user + system, from ``/proc/PID/stat``) each process
  spent over the same interval, per certificate: ``ca``, ``mail``, ``daemon``, ``bench``
  (this script, which only drops files and polls the store), and their ``total``.

Usage: python bench/cacert.py [--json] [--domains N] [--workers N] [--profile DIR]
(``--profile DIR`` samples each process with ``py-spy record --gil``, which must be on
PATH, into ``ca.txt``, ``mail.txt`` and ``daemon.txt`` there: collapsed stacks of the
threads holding the GIL, i.e. Python's CPU; the figures are then not comparable.)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TICK = os.sysconf("SC_CLK_TCK")


def raw_crypto_per_s(seconds: float = 3.0) -> float:
    """Key generation, CSR, and signing by one CA key, in a loop: certificates per second."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = dt.datetime.now(dt.UTC)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"d{n}.bench.test"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
               .sign(key, hashes.SHA256()))
        (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_name)
         .public_key(csr.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=180))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
         .sign(ca_key, hashes.SHA256()))
        n += 1
    return n / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICK  # utime stime cutime cstime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


class Procs:
    """The child processes, each logging to a file in the scratch folder."""

    def __init__(self, root: Path, env: dict[str, str], profile: Path | None) -> None:
        self.root, self.env, self.profile = root, env, profile
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.samplers: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], ready: str) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "certwright", "--log-json", *args], env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: ready in self.log(name) or self.children[name].poll() is not None,
                 60, f"{name} to start")
        if self.children[name].poll() is not None:
            raise SystemExit(f"{name} exited {self.children[name].returncode}:\n"
                             f"{self.log(name)[-3000:]}")
        if self.profile is not None:
            self.samplers.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.children[name].pid), "--format", "raw",
                 "--rate", "250", "--threads", "--gil", "-o", str(self.profile / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cpu(self) -> dict[str, float]:
        out = {name: cpu_seconds(p.pid) for name, p in self.children.items()}
        out["bench"] = cpu_seconds(os.getpid())
        return out

    def stop(self) -> None:
        for sampler in self.samplers:  # py-spy writes its file on SIGINT
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
        for p in reversed(self.children.values()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.children.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def statuses(db: Path) -> dict[str, tuple[str, str]]:
    """run id -> (state, status), read from the daemon's store."""
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0]: (r[1], r[2])
                    for r in con.execute("SELECT id, state, status FROM runs")}
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def drop(inbox: Path, run_id: str, inputs: dict[str, str]) -> None:
    tmp = inbox.parent / f".{run_id}.tmp"
    tmp.write_text(json.dumps({"pipeline": "cacert", "run_id": run_id, "inputs": inputs}))
    os.replace(tmp, inbox / f"{run_id}.json")  # the daemon sees whole files only


def bench(domains: int, workers: int, root: Path, profile: Path | None) -> dict[str, object]:
    state, maildir, inbox, certs = (root / n for n in ("state", "Maildir", "inbox", "certs"))
    for folder in (state, inbox, certs):
        folder.mkdir(mode=0o755)
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("CERTWRIGHT_NOW", None)
    names = [f"d{i}.bench.test" for i in range(domains)]
    smtp, http = free_port(), free_port()
    procs = Procs(root, env, profile)
    try:
        procs.start("mail", ["mail", "serve", "--listen", f"127.0.0.1:{smtp}", "--maildir",
                             str(maildir), "--domain", "bench.test",
                             *(a for n in names for a in ("--domain", n))], "listening on")
        procs.start("ca", ["ca", "serve", "--dir", str(root / "ca"), "--listen",
                           f"127.0.0.1:{http}", "--smarthost", f"127.0.0.1:{smtp}",
                           "--rate-limit", "off"], "CA listening")
        procs.start("daemon", ["daemon", "--maildir", str(maildir), "--inbox", str(inbox),
                               "--workers", str(workers)], "daemon_ready")
        ids = [f"bench-{i:05d}" for i in range(domains)]

        def inputs(i: int) -> dict[str, str]:
            return {"domain": names[i], "email": "admin@bench.test",
                    "ca": f"http://127.0.0.1:{http}", "maildir": str(maildir),
                    "cert_dir": str(certs / names[i])}

        def finished(wanted: list[str]) -> Callable[[], bool]:
            def check() -> bool:
                st = statuses(state / "certwright.sqlite")
                return all(st.get(r, ("", ""))[1] in ("succeeded", "failed", "cancelled")
                           for r in wanted)
            return check

        cpu0, t0 = procs.cpu(), time.perf_counter()
        drop(inbox, ids[0], inputs(0))
        wait_for(finished(ids[:1]), 300, "the first run (the join)")
        joined = time.perf_counter() - t0
        for i in range(1, domains):
            drop(inbox, ids[i], inputs(i))
        wait_for(finished(ids), 900, "every run to finish")
        elapsed, cpu1 = time.perf_counter() - t0, procs.cpu()
        st = statuses(state / "certwright.sqlite")
        bad = {r: st.get(r) for r in ids if st.get(r) != ("installed", "succeeded")}
        if bad:
            raise SystemExit(f"{len(bad)} runs did not install: {next(iter(bad.items()))}; "
                             f"logs in {root}")
        con = sqlite3.connect(f"file:{root / 'ca' / 'ca.sqlite3'}?mode=ro", uri=True)
        issued = int(con.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
        con.close()
        if issued != domains:
            raise SystemExit(f"the CA issued {issued} certificates for {domains} domains")
    finally:
        procs.stop()
    per = {k: round((cpu1[k] - cpu0[k]) / domains, 4) for k in cpu1}
    per["total"] = round(sum(per.values()), 4)
    return {"seconds": round(elapsed, 2), "join_seconds": round(joined, 2),
            "certs_per_s": round(domains / elapsed, 2), "cpu_s_per_cert": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8, help="the daemon's step workers")
    ap.add_argument("--profile", type=Path, help="sample every process with py-spy into DIR")
    args = ap.parse_args(argv)
    if args.domains < 1:
        ap.error("--domains must be at least 1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)  # py-spy writes nothing otherwise
    load_before = list(os.getloadavg())
    root = Path(tempfile.mkdtemp(prefix="certwright-bench-cacert-"))
    figures = bench(args.domains, args.workers, root, args.profile)  # kept on failure
    shutil.rmtree(root, ignore_errors=True)
    raw = raw_crypto_per_s()
    rate = float(figures["certs_per_s"])  # type: ignore[arg-type]
    result = {"domains": args.domains, "workers": args.workers, **figures,
              "raw_crypto_per_s": round(raw, 1), "ratio_to_raw": round(rate / raw, 4),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()],
              "goal": {"ratio_to_raw": ">= 0.01"}}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
