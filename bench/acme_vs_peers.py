"""Benchmark: certwright against certbot, acme-tiny, lego and uacme, one Pebble for all.

One Pebble on loopback (``PEBBLE_VA_NOSLEEP=1``; every challenge really validated over
http-01, names answered by the test DNS server in a process of its own) and one webroot
served over HTTP on its http-01 port (``http.server``, backlog 128, a process of its own)
for every client. Each client (``bench/peers.py`` says how each is run and trusts the test
CA) issues ``--n`` certificates (default 20) in two modes: one at a time, and
``--parallel`` (8) at a time; each makes its own key and CSR; its account is registered,
and one warm-up certificate issued, before the clock starts. certwright is measured twice:

* ``certwright_process``: ``certwright run acme`` as a process per certificate, one state
  folder for all (as a cron user runs it);
* ``certwright_engine``: the same pipeline in one running engine (as the daemon serves
  runs): one run after the other, or all N started at once with ``--parallel`` workers.

Figures per client and mode: ``<client>_<mode>_s_per_cert`` (wall), ``..._cpu_s_per_cert``
(the client's user+system CPU: its children's rusage, or this process's for the engine),
``..._pebble_cpu_s_per_cert`` (Pebble's, from /proc) and ``..._requests_per_cert`` (the
requests Pebble logged). ``speedup_process_seq``/``_conc`` and ``speedup_engine_seq``/
``_conc`` are the fastest peer's s/cert in that mode over certwright's;
``cpu_ratio_to_lowest_peer`` is certwright's CPU per certificate in the engine (one at a
time) over the lowest peer's (one at a time). ``--json`` prints one object; ``load`` gives
the machine's load averages before and after.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository, appended for tests.support (the Pebble and DNS harnesses) alone:
# certwright itself always comes from the installed package, which precedes it.
sys.path.append(str(ROOT))

import peers  # bench/peers.py, beside this file
import structlog

from certwright.clock import SystemClock
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.engine.run.watch import WaitWatcher
from certwright.state.location import open_store
from certwright.state.records import FINISHED
from tests.support.pebble import Pebble

ZONE = "bench.acme.test"
CLIENTS = ("certbot", "acme-tiny", "lego", "uacme", "certwright-process", "certwright-engine")
MODES = ("seq", "conc")


DNS_CHILD = """
import sys, threading
sys.path.append(sys.argv[2])
from tests.support.dns import TestDNS
dns = TestDNS(__import__("pathlib").Path(sys.argv[1]), zones=tuple(sys.argv[3].split(","))).start()
print(dns.address, flush=True)
threading.Event().wait()
"""


# The webroot server: http.server's threading server with a listen backlog of 128. Its
# default backlog of 5 overflows when Pebble validates 8 orders from 3 perspectives at once,
# and a dropped SYN costs the client a 1 s retransmission: that, not any client, would be
# measured.
WEBROOT_CHILD = """
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=sys.argv[1])
Server(("127.0.0.1", int(sys.argv[2])), handler).serve_forever()
"""


def _dns_process(records: Path, zones: tuple[str, ...] = (ZONE,)) -> subprocess.Popen[str]:
    """The test DNS server in a process of its own, authoritative for ``zones``, so that
    it neither waits for this process's GIL (the engine runs here) nor adds its CPU to the
    engine's; its address is the first line it prints."""
    return subprocess.Popen([sys.executable, "-c", DNS_CHILD, str(records), str(ROOT),
                             ",".join(zones)],
                            stdout=subprocess.PIPE, text=True)


def _key(name: str) -> str:
    return name.replace("-", "_")


class EngineDriver:
    """One engine, open for the whole mode as a daemon is, issuing ``acme`` runs."""

    def __init__(self, s: peers.Setting, workers: int) -> None:
        self.s = s
        self.spec = load_pipeline(resolve_pipeline_path("acme"))
        self.state = s.work / "certwright-engine" / "state"
        self.certs = s.work / "certwright-engine" / "certs"
        self.certs.mkdir(parents=True, exist_ok=True)
        self.stack = ExitStack()
        self.store = open_store(self.state, background_checkpoint=True)
        self.stack.callback(self.store.close)
        watcher = WaitWatcher()
        self.engine = Engine(self.store, self.state, clock=SystemClock(), services={},
                             options=EngineOptions(workers=workers), interceptors=[watcher])
        self.stack.callback(self.engine.close)
        self.stack.callback(watcher.stop)
        self.engine.open()

    def issue(self, domains: list[str]) -> None:
        """Start a run per domain and pump until every one is finished; RuntimeError
        naming the runs that did not reach ``installed``."""
        prepared = [coerce_inputs(self.spec, peers.inputs(self.s, d, self.certs / d))
                    for d in domains]
        ids = self.engine.start_runs(self.spec, prepared)
        deadline = time.monotonic() + 600
        while True:
            self.engine.pump(timeout=0.2)
            if not self.engine.idle():
                continue
            runs = [self.store.load_run(rid) for rid in ids]
            if all(r.status in FINISHED for r in runs) or time.monotonic() > deadline:
                break
        failed = [f"{r.id}: {r.state} {r.error or ''}" for r in runs if r.state != "installed"]
        if failed:
            raise RuntimeError("certwright runs failed: " + "; ".join(failed[:3]))

    def close(self) -> None:
        self.stack.close()


def _cpu_of(pid: int) -> float:
    """User+system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid(pebble: Pebble) -> int:
    proc = pebble._proc
    if proc is None:
        raise RuntimeError("pebble is not running")
    return proc.pid


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall, client CPU, Pebble CPU and Pebble's request count across a block."""

    def __init__(self, pebble: Pebble, in_process: bool) -> None:
        self.pebble = pebble
        self.who = resource.RUSAGE_SELF if in_process else resource.RUSAGE_CHILDREN
        self.figures: dict[str, float] = {}

    def _requests(self) -> int:
        log = (self.pebble.folder / "pebble.log").read_text(errors="replace")
        return log.count("-> calling handler()")

    @contextmanager
    def measure(self, n: int) -> Iterator[None]:
        pid = _pid(self.pebble)
        wall, cpu = time.perf_counter(), _rusage_cpu(self.who)
        pebble_cpu, requests = _cpu_of(pid), self._requests()
        yield
        self.figures = {
            "s_per_cert": (time.perf_counter() - wall) / n,
            "cpu_s_per_cert": (_rusage_cpu(self.who) - cpu) / n,
            "pebble_cpu_s_per_cert": (_cpu_of(pid) - pebble_cpu) / n,
            "requests_per_cert": (self._requests() - requests) / n}


def _in_parallel(issue: Callable[[str], None], domains: list[str], parallel: int) -> None:
    with ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(issue, d) for d in domains]:
            future.result()


def measure_client(name: str, s: peers.Setting, pebble: Pebble, n: int, parallel: int,
                   modes: tuple[str, ...]) -> dict[str, float]:
    """Every figure of one client, both modes; raises RuntimeError when it fails."""
    out: dict[str, float] = {}
    label = name.replace("-", "")
    if name == "certwright-engine":
        for mode in modes:
            driver = EngineDriver(s, parallel if mode == "conc" else 1)
            try:
                driver.issue([f"warm{mode}.{label}.{ZONE}"])  # registers the account
                domains = [f"{label}{mode}{i}.{ZONE}" for i in range(n)]
                meter = Meter(pebble, in_process=True)
                with meter.measure(n):
                    if mode == "seq":
                        for domain in domains:
                            driver.issue([domain])
                    else:
                        driver.issue(domains)
            finally:
                driver.close()
            out.update({f"{_key(name)}_{mode}_{k}": v for k, v in meter.figures.items()})
        return out
    client = (peers.CertwrightProcess(s) if name == "certwright-process"
              else peers.PEERS[name](s))
    why = client.available()
    if why:
        raise RuntimeError(why)
    client.prepare()
    client.issue(f"warm.{label}.{ZONE}")  # registers (lego) and warms caches
    for mode in modes:
        domains = [f"{label}{mode}{i}.{ZONE}" for i in range(n)]
        meter = Meter(pebble, in_process=False)
        with meter.measure(n):
            if mode == "seq":
                for domain in domains:
                    client.issue(domain)
            else:
                _in_parallel(client.issue, domains, parallel)
        out.update({f"{_key(name)}_{mode}_{k}": v for k, v in meter.figures.items()})
    return out


def ratios(figures: dict[str, Any], chosen: list[str]) -> dict[str, float]:
    """The speedups and the CPU ratio, for the modes and clients measured."""
    out: dict[str, float] = {}
    peer_names = [_key(c) for c in chosen if c in peers.PEERS]
    for mode in MODES:
        times = [figures[f"{p}_{mode}_s_per_cert"] for p in peer_names
                 if f"{p}_{mode}_s_per_cert" in figures]
        for kind in ("process", "engine"):
            ours = figures.get(f"certwright_{kind}_{mode}_s_per_cert")
            if times and ours:
                out[f"speedup_{kind}_{mode}"] = min(times) / ours
    cpus = [figures[f"{p}_seq_cpu_s_per_cert"] for p in peer_names
            if f"{p}_seq_cpu_s_per_cert" in figures]
    ours = figures.get("certwright_engine_seq_cpu_s_per_cert")
    if cpus and ours:
        out["cpu_ratio_to_lowest_peer"] = ours / min(cpus)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="certificates per client and mode")
    parser.add_argument("--parallel", type=int, default=8, help="certificates at once (8)")
    parser.add_argument("--only", choices=CLIENTS, action="append",
                        help="run only these clients (repeatable)")
    parser.add_argument("--mode", choices=MODES, action="append", help="only these modes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep-log", type=Path, help="copy Pebble's log to this file")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen: list[str] = args.only or list(CLIENTS)
    modes = tuple(args.mode or MODES)
    figures: dict[str, Any] = {"n": args.n, "parallel": args.parallel,
                               "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="acme-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dns = _dns_process(work / "records.json")
        stack.callback(dns.wait, 5)
        stack.callback(dns.terminate)
        address = (dns.stdout.readline() if dns.stdout else "").strip()
        if not address:
            raise RuntimeError("the test DNS server did not start")
        pebble = Pebble(work / "pebble", dns_server=address).start()
        if args.keep_log:
            stack.callback(shutil.copyfile, work / "pebble" / "pebble.log", args.keep_log)
        stack.callback(pebble.stop)
        webroot = work / "webroot"
        (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        server = subprocess.Popen(
            [sys.executable, "-c", WEBROOT_CHILD, str(webroot), str(pebble.http_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(server.wait, 5)
        stack.callback(server.terminate)
        _wait_listening(pebble.http_port)
        setting = peers.Setting(pebble.directory, pebble.ca_bundle, webroot,
                                f"admin@{ZONE}", work, slots=args.parallel)
        for name in chosen:
            figures.update(measure_client(name, setting, pebble, args.n, args.parallel,
                                          modes))
    figures.update(ratios(figures, chosen))
    figures["load_after"] = list(os.getloadavg())
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:44} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
