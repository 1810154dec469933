"""Hostile-input benchmark: the wall time the YAML loader and the mail parser take on
documents built to hurt them, beside the work each reports.

The unit tests assert the work (``LoadStats``, ``ParseStats``: characters scanned, events
read, nodes built, lines pre-scanned, bytes parsed), which does not depend on how loaded the
machine is; the times are measured here. Figures, per case:

* ``ms``: the best wall time of ``--repeat`` runs (default 5), in milliseconds;
* ``outcome``: ``refused: <reason>`` or ``parsed``;
* ``work``: the counters that run reported.

The YAML cases are the hostile fixtures' kinds (duplicate key, alias bomb, one large string
referred to 2,000 times, a Python tag,
non-standard tags, nesting 10,000 deep four ways, a 2 MiB text) and the bundled ``cacert``
pipeline as a yardstick; the mail cases are a 20 MB message, multiparts nested 100, 1000
and 20000 deep, and four kinds of pathological HTML. For the HTML cases ``time_ratio`` and
``work_ratio`` compare the full size with half of it (2.0 is linear). ``goals`` are the
limits the unit tests used to assert on time (1 s a YAML case, 2 s a mail case).

``--scale F`` multiplies every size (default 1; the smoke test uses a tiny one); sizes never
drop below what it takes to reach the limit being exercised.

Usage: python bench/hostile_inputs.py [--json] [--scale F] [--repeat N]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from certwright.engine.model.loader import bundled_pipelines, load_pipeline_text
from certwright.engine.model.yamlsafe import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED_BYTES,
    LoadStats,
    load_yaml,
)
from certwright.engine.plugins.registry import Registry
from certwright.errors import SpecError
from certwright.mail.parse import HostileMail, MailLimits, ParseStats, parse_message

DUPLICATE_KEYS = """pipeline: demo
version: 1
initial: new
states:
  new: {run: [key.generate], next: done}
  done: {final: true}
initial: done
"""
PYTHON_APPLY = """pipeline: pwned
version: 1
initial: !!python/object/apply:os.system ["true"]
states: {}
"""
TAGS = ("pipeline: !!python/name:os.system\n", "a: !custom x\n", "a: !!binary aGVsbG8=\n",
        "a: !!set {x, y}\n", "a: !!python/tuple [1, 2]\n")
NESTING: dict[str, Callable[[int], str]] = {
    "flow_lists": lambda n: "[" * n + "]" * n,
    "flow_maps": lambda n: "x: " + "{a: " * n + "1" + "}" * n,
    "block_lists": lambda n: "- " * n + "1\n",
    "block_maps": lambda n: "".join(" " * i + "k:\n" for i in range(n)),
}
HTML: dict[str, tuple[Callable[[int], bytes], int]] = {
    "open_tags": (lambda n: b"<a " * n, 600_000),
    "lt": (lambda n: b"<" * n, 2_000_000),
    "open_comment": (lambda n: b"<!--" + b"a" * n, 2_000_000),
    "many_links": (lambda n: b"".join(b"<a href='http://x.example/%d'>x</a>" % i
                                      for i in range(n)), 100_000),
}
HEADERS = (b"From: ca@ca.example\nTo: postmaster@example.test\nSubject: verify\n"
           b"Message-ID: <m1@ca.example>\nMIME-Version: 1.0\n")


def billion_laughs() -> str:
    """Nine levels of nine aliases: about 387 million nodes if expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def string_bomb(blob: int, references: int = 2000) -> str:
    """One ``blob``-byte string and ``references`` aliases to it: few nodes, and (at full
    size) 1.8 GB of text once expanded; refused by the expanded-size budget."""
    return (f"big: &blob \"{'x' * blob}\"\ncopies: [" + ", ".join(["*blob"] * references)
            + "]\n")


def nested_multipart(depth: int) -> bytes:
    """A message whose multiparts nest ``depth`` deep, closed properly."""
    out = [HEADERS + b'Content-Type: multipart/mixed; boundary="b0"\n\n']
    out += [f'--b{i - 1}\nContent-Type: multipart/mixed; boundary="b{i}"\n\n'.encode()
            for i in range(1, depth)]
    out.append(f"--b{depth - 1}\nContent-Type: text/plain\n\nhttp://ca.example/x\n".encode())
    out += [f"--b{i}--\n".encode() for i in reversed(range(depth))]
    return b"".join(out)


def _best(run: Callable[[], tuple[str, Any]], repeat: int) -> dict[str, Any]:
    """Run ``run`` ``repeat`` times; the best time, and the outcome and work of the last."""
    best = float("inf")
    outcome, stats = "", None
    for _ in range(repeat):
        start = time.perf_counter()
        outcome, stats = run()
        best = min(best, time.perf_counter() - start)
    return {"ms": round(best * 1000, 3), "outcome": outcome,
            "work": dataclasses.asdict(stats) if stats is not None else {}}


def _yaml(text: str, *, pipeline: bool = False) -> Callable[[], tuple[str, LoadStats]]:
    registry = Registry(plugins=False)

    def run() -> tuple[str, LoadStats]:
        stats = LoadStats()
        try:
            if pipeline:
                load_pipeline_text(text, "bench.yaml", registry, stats)
            else:
                load_yaml(text, "bench.yaml", stats)
        except SpecError as exc:
            return f"refused: {exc.problems[0].message[:60]}", stats
        return "parsed", stats
    return run


def _mail(raw: bytes) -> Callable[[], tuple[str, ParseStats]]:
    def run() -> tuple[str, ParseStats]:
        stats = ParseStats()
        try:
            parse_message(raw, stats=stats)
        except HostileMail as exc:
            return f"refused: {exc.reason[:60]}", stats
        return "parsed", stats
    return run


def yaml_cases(scale: float, repeat: int) -> dict[str, dict[str, Any]]:
    """Every YAML case by name (see the module docstring)."""
    cases: dict[str, Callable[[], tuple[str, Any]]] = {
        "yaml_cacert": _yaml(bundled_pipelines()["cacert"].read_text(), pipeline=True),
        "yaml_duplicate_keys": _yaml(DUPLICATE_KEYS),
        "yaml_billion_laughs": _yaml(billion_laughs()),
        "yaml_string_bomb": _yaml(string_bomb(max(int(900_000 * scale),
                                                  MAX_EXPANDED_BYTES // 2000 + 1))),
        "yaml_python_apply": _yaml(PYTHON_APPLY, pipeline=True),
    }
    for i, text in enumerate(TAGS):
        cases[f"yaml_tag_{i}"] = _yaml(text)
    for name, make in NESTING.items():
        depth = max(int(10_000 * scale), MAX_DEPTH + 1)
        while len(make(depth).encode()) > MAX_BYTES:  # block maps indent quadratically
            depth //= 2
        cases[f"yaml_deep_{name}"] = _yaml(make(depth))
    size = max(int(2 * 1024 * 1024 * scale), MAX_BYTES + 1)
    cases["yaml_too_large"] = _yaml("a: " + "x" * size + "\n")
    return {name: _best(run, repeat) for name, run in cases.items()}


def mail_cases(scale: float, repeat: int) -> dict[str, dict[str, Any]]:
    """Every mail case by name (see the module docstring)."""
    limits = MailLimits()
    size = max(int(20 * 1024 * 1024 * scale), limits.max_message_size + 1)
    out = {"mail_too_large": _best(_mail(HEADERS + b"\n" + b"x" * size), repeat)}
    for depth in (100, 1000, 20_000):
        real = max(int(depth * scale), limits.max_mime_depth)
        out[f"mail_deep_{depth}"] = _best(_mail(nested_multipart(real)), repeat)
    for name, (make, full) in HTML.items():
        n = max(int(full * scale), 2)
        half = _best(_mail(HEADERS + b"Content-Type: text/html\n\n" + make(n // 2)), repeat)
        case = _best(_mail(HEADERS + b"Content-Type: text/html\n\n" + make(n)), repeat)
        case["time_ratio"] = round(case["ms"] / half["ms"], 2) if half["ms"] else None
        work, half_work = case["work"]["html_chars"], half["work"]["html_chars"]
        case["work_ratio"] = round(work / half_work, 2) if half_work else None
        out[f"mail_html_{name}"] = case
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        ap.error("--scale must be positive and --repeat at least 1")
    cases = {**yaml_cases(args.scale, args.repeat), **mail_cases(args.scale, args.repeat)}
    result = {"scale": args.scale, "repeat": args.repeat, "cases": cases,
              "goals": {"yaml_ms": "<= 1000", "mail_ms": "<= 2000"}}
    if args.json:
        print(json.dumps(result))
        return 0
    for name, case in cases.items():
        work = " ".join(f"{k}={v}" for k, v in case["work"].items() if v)
        ratios = "".join(f" {k}={case[k]}" for k in ("time_ratio", "work_ratio") if k in case)
        print(f"{name:>24}: {case['ms']:>9.3f} ms  {case['outcome'][:40]:<40} {work}{ratios}")
    print(f"{'goals':>24}: {result['goals']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
