"""The daemon's catalog parses a pipeline found by name or path once while its file is
unchanged (it was parsed again for every dropped request and every finished run: about
two thirds of the daemon's CPU in bench/cacert.py), and again once the file changes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from certwright.engine.daemon.inbox import PipelineCatalog
from certwright.engine.model import loader

PIPELINE = """
pipeline: memo
version: 1
initial: new
states:
  new:
    run:
      - step: set
        id: s
        with: {x: "N"}
    next: done
  done: {final: true}
"""


def test_a_pipeline_file_is_parsed_once_until_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = loader.load_pipeline_text

    def counting(text: str, *args: object, **kwargs: object) -> object:
        calls.append(text)
        return real(text, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(loader, "load_pipeline_text", counting)
    path = tmp_path / "memo.yaml"
    path.write_text(PIPELINE.replace("N", "1"))
    catalog = PipelineCatalog(None)
    first = catalog.find(str(path))
    assert catalog.find(str(path)) is first
    assert len(calls) == 1
    path.write_text(PIPELINE.replace("N", "22"))
    os.utime(path, ns=(1, 1))  # another mtime whatever the clock's resolution
    second = catalog.find(str(path))
    assert second.hash != first.hash and len(calls) == 2
