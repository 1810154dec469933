"""The cache of parsed pipelines (``load_pipeline(..., cache_dir=...)``): a file parsed once
is taken from the cache while its text is unchanged, an edited file is parsed again, a
corrupt or foreign entry is ignored and rebuilt, and the key names certwright's version."""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest

from certwright.engine.model import speccache
from certwright.engine.model.loader import load_pipeline
from certwright.errors import SpecError

PIPELINE = """\
pipeline: tiny
version: 1
description: {description}
initial: new
states:
  new: {{run: [noop], next: done}}
  done: {{final: success}}
"""


def write(tmp_path: Path, description: str = "first") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(PIPELINE.format(description=description))
    return path


def entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.pickle"))


def test_a_cached_spec_is_used_while_the_text_is_unchanged(tmp_path: Path) -> None:
    path, cache = write(tmp_path), tmp_path / "cache"
    first = load_pipeline(path, cache_dir=cache)
    [entry] = entries(cache)
    # Replace the entry by a spec that parsing could not give: the next load returns it.
    entry.write_bytes(pickle.dumps(dataclasses.replace(first, description="from the cache")))
    assert load_pipeline(path, cache_dir=cache).description == "from the cache"
    assert load_pipeline(path).description == "first"  # without a cache: parsed


def test_an_edited_pipeline_is_parsed_again(tmp_path: Path) -> None:
    path, cache = write(tmp_path), tmp_path / "cache"
    assert load_pipeline(path, cache_dir=cache).description == "first"
    write(tmp_path, "second")
    assert load_pipeline(path, cache_dir=cache).description == "second"


def test_an_invalid_pipeline_is_never_cached(tmp_path: Path) -> None:
    path, cache = tmp_path / "bad.yaml", tmp_path / "cache"
    path.write_text("pipeline: bad\nversion: 1\ninitial: nowhere\nstates: {}\n")
    for _ in range(2):
        with pytest.raises(SpecError):
            load_pipeline(path, cache_dir=cache)
    assert entries(cache) == []


@pytest.mark.parametrize("garbage", [b"", b"not a pickle", pickle.dumps({"a": 1})])
def test_a_corrupt_entry_is_ignored_and_rebuilt(tmp_path: Path, garbage: bytes) -> None:
    path, cache = write(tmp_path), tmp_path / "cache"
    expected = load_pipeline(path, cache_dir=cache)
    [entry] = entries(cache)
    entry.write_bytes(garbage)
    assert load_pipeline(path, cache_dir=cache) == expected
    assert pickle.loads(entry.read_bytes()) == expected


def test_the_key_names_the_version_the_file_and_its_text(tmp_path: Path) -> None:
    base = speccache.cache_key("text", "a.yaml", version="1.0")
    assert base == speccache.cache_key("text", "a.yaml", version="1.0")
    assert base != speccache.cache_key("text", "a.yaml", version="1.1")
    assert base != speccache.cache_key("text", "b.yaml", version="1.0")
    assert base != speccache.cache_key("text!", "a.yaml", version="1.0")


def test_a_cache_folder_others_can_write_is_not_read(tmp_path: Path) -> None:
    """Entries are pickles: one from a folder another user could write is refused."""
    path, cache = write(tmp_path), tmp_path / "cache"
    first = load_pipeline(path, cache_dir=cache)
    [entry] = entries(cache)
    entry.write_bytes(pickle.dumps(dataclasses.replace(first, description="planted")))
    os.chmod(entry.parent, 0o777)
    assert load_pipeline(path, cache_dir=cache).description == "first"


def test_the_default_cache_folder_follows_the_environment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTWRIGHT_CACHE_DIR", str(tmp_path / "c"))
    assert speccache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CERTWRIGHT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    expected = Path("/var/cache/certwright") if os.geteuid() == 0 else tmp_path / "x" / "certwright"
    assert speccache.default_cache_dir() == expected
