"""A daemon killed between claiming a request (the folder ``.processing/<run_id>/``) and
moving the file into it leaves an empty claim and the file still in the inbox. The next
daemon must start that run, not refuse the file with FileExistsError and lose it (the
fault campaign lost campaign-12 so, seed 1241095734)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from certwright.engine.daemon.inbox import Inbox, PipelineCatalog
from certwright.engine.model.spec import PipelineSpec

PIPELINE = """
pipeline: req
version: 1
initial: new
states:
  new:
    run:
      - step: set
        id: s
        with: {x: "1"}
    next: done
  done: {final: true}
"""


def test_an_empty_claim_left_by_a_crash_does_not_lose_the_request(tmp_path: Path) -> None:
    pipeline = tmp_path / "req.yaml"
    pipeline.write_text(PIPELINE)
    started: list[str] = []

    def start(spec: PipelineSpec, inputs: Mapping[str, Any], run_id: str,
              secret: list[str]) -> str:
        started.append(run_id)
        return run_id
    folder = tmp_path / "inbox"
    inbox = Inbox(folder, PipelineCatalog(None), start, lambda rid: rid in started)
    (folder / ".processing" / "r-12").mkdir(mode=0o700)  # the crash: claimed, not moved
    (folder / "r-12.json").write_text(json.dumps({"pipeline": str(pipeline),
                                                  "run_id": "r-12"}))
    inbox.recover()
    inbox.process(sweep=False)
    inbox._ready.add("r-12.json")  # as the watcher notes a file
    inbox.process()
    assert started == ["r-12"]
    assert (folder / "done" / "r-12-r-12.json").is_file()
    assert not list((folder / "failed").iterdir())
    assert not (folder / ".processing" / "r-12").exists()
