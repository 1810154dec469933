"""The daemon's pipeline catalog waits for a folder to be quiet before it reloads, so an
editor writing a file in place is never caught half way."""
from __future__ import annotations

from pathlib import Path

from watchdog.events import FileModifiedEvent

from certwright.engine.daemon.inbox import QUIET, PipelineCatalog, catalog_handler

GOOD = """
pipeline: tiny
version: 1
initial: a
states:
  a: {final: true}
"""


def test_a_change_is_reloaded_only_once_the_folder_is_quiet(tmp_path: Path):
    catalog = PipelineCatalog(tmp_path)
    woken: list[int] = []
    handler = catalog_handler(catalog, lambda: woken.append(1))
    target = tmp_path / "tiny.yaml"
    target.write_text("")  # an editor truncated the file and is about to write it
    handler.dispatch(FileModifiedEvent(str(target)))
    # instants relative to the handler's own stamp, not the wall clock now: a stall of the
    # test process between two lines must not make "too soon" late
    first = catalog.last_change
    assert woken and catalog.dirty.is_set()
    assert not catalog.settled(first)  # too soon: the write may be half done
    target.write_text(GOOD)
    handler.dispatch(FileModifiedEvent(str(target)))
    assert catalog.last_change >= first
    assert not catalog.settled(catalog.last_change + QUIET / 2)
    assert catalog.settled(catalog.last_change + QUIET)
    assert catalog.reload() == ["tiny"] and catalog.errors == {}
    assert not catalog.settled(catalog.last_change + QUIET)  # clean again after the reload


def test_files_other_than_pipelines_do_not_dirty_it(tmp_path: Path):
    catalog = PipelineCatalog(tmp_path)
    handler = catalog_handler(catalog, lambda: None)
    handler.dispatch(FileModifiedEvent(str(tmp_path / "notes.txt")))
    assert not catalog.dirty.is_set()
