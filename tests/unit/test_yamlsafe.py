"""Safe YAML: positions, strictness, and hostile documents refused early and located.

"Early" is asserted on the work the loader reports in a LoadStats (characters scanned,
events read, nodes built), never on wall time: bench/hostile_inputs.py has the timings.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certwright.engine.model.loader import load_pipeline, load_pipeline_text
from certwright.engine.model.yamlsafe import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED_BYTES,
    MAX_NODES,
    LoadStats,
    load_yaml,
)
from certwright.engine.plugins.registry import Registry
from certwright.errors import Location, SpecError

HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "hostile"


def _refused(load: Callable[[], object]) -> SpecError:
    with pytest.raises(SpecError) as info:
        load()
    return info.value


def test_every_key_and_value_has_a_one_based_position() -> None:
    """Mapping keys, values and list items carry line:col counted from 1."""
    root = load_yaml("a: 1\nb:\n  - x\n  - {c: d}\n", "f.yaml")
    assert root.loc == Location("f.yaml", 1, 1)
    assert root.key_node("b") is not None and root.key_node("b").loc == Location("f.yaml", 2, 1)
    b = root.get("b")
    assert b is not None and b.is_seq
    assert b.items[0].loc == Location("f.yaml", 3, 5)
    inner = b.items[1].get("c")
    assert inner is not None and inner.loc == Location("f.yaml", 4, 9) and inner.value == "d"
    assert root.value == {"a": 1, "b": ["x", {"c": "d"}]}


def test_standard_tags_and_timestamps_as_strings() -> None:
    """int, float, bool, null, explicit !!str/!!int work; timestamps stay text."""
    root = load_yaml("i: 3\nf: 1.5\nb: yes\nn: ~\ns: !!str 12\nj: !!int '7'\nt: 2024-01-02\n",
                     "f.yaml")
    assert root.value == {"i": 3, "f": 1.5, "b": True, "n": None, "s": "12", "j": 7,
                          "t": "2024-01-02"}


def test_empty_document_is_null() -> None:
    """An empty text gives a null root at 1:1 rather than an error."""
    root = load_yaml("", "e.yaml")
    assert root.value is None and root.loc == Location("e.yaml", 1, 1)


def test_anchors_aliases_and_merge_keys_are_allowed() -> None:
    """A small alias and a merge key resolve; explicit keys win over merged ones."""
    root = load_yaml("base: &b {x: 1, y: 2}\nuse: *b\nmerged:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert root.value["use"] == {"x": 1, "y": 2}
    assert root.value["merged"] == {"y": 3, "x": 1}


def test_duplicate_key_is_refused_at_the_second_naming_the_first() -> None:
    """The second occurrence is the error; the hint says where the first was. Nothing past
    the document is scanned and nothing is expanded on the way."""
    text = (HOSTILE / "duplicate_keys.yaml").read_text()
    stats = LoadStats()
    error = _refused(lambda: load_yaml(text, "dup.yaml", stats))
    (p,) = error.problems
    assert p.loc == Location("dup.yaml", 7, 1)
    assert "duplicate key 'initial'" in p.message
    assert p.hint == "first defined at line 3, column 1"
    assert p.source_line == "initial: done"
    assert stats.chars_scanned <= len(text)
    assert stats.nodes_counted == stats.nodes_built < 30


def test_billion_laughs_is_refused_early_and_located() -> None:
    """Nine levels of nine aliases are refused by the node budget, not expanded: the nodes
    counted pass MAX_NODES while the nodes built stay in the tens, and the refusal comes
    before the end of the file."""
    text = (HOSTILE / "billion_laughs.yaml").read_text()
    assert len(text) < 1000
    stats = LoadStats()
    error = _refused(lambda: load_yaml(text, "bomb.yaml", stats))
    (p,) = error.problems
    assert "more than 20000 nodes" in p.message and "alias bomb" in (p.hint or "")
    assert p.loc is not None and 2 <= p.loc.line <= 10
    assert stats.nodes_counted > MAX_NODES
    assert stats.nodes_built < 100
    assert stats.chars_scanned < len(text)


def test_python_object_apply_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    """`!!python/object/apply:os.system` is a located error; the command never runs, and
    the load stops at the tag (a handful of events into the file)."""
    marker = tmp_path / "pwned"
    text = (HOSTILE / "python_apply.yaml").read_text().replace("PWNED_MARKER", str(marker))
    stats = LoadStats()
    error = _refused(
        lambda: load_pipeline_text(text, "pwn.yaml", Registry(plugins=False), stats))
    (p,) = error.problems
    assert p.loc == Location("pwn.yaml", 3, 10)
    assert "python/object/apply:os.system" in p.message and "not allowed" in p.message
    assert not marker.exists()
    assert stats.events <= 10


@pytest.mark.parametrize(("text", "line", "col"), [
    ("pipeline: !!python/name:os.system\n", 1, 11),
    ("a: !custom x\n", 1, 4),
    ("a: !!binary aGVsbG8=\n", 1, 4),
    ("a: !!set {x, y}\n", 1, 4),
    ("a: !!python/tuple [1, 2]\n", 1, 4),
])
def test_non_standard_tags_are_refused(text: str, line: int, col: int) -> None:
    """Any tag outside str/int/float/bool/null/seq/map/timestamp is an error at the tag,
    the first tagged node read (stream, document, mapping, key, then the tagged node)."""
    stats = LoadStats()
    error = _refused(lambda: load_yaml(text, "t.yaml", stats))
    assert error.problems[0].loc == Location("t.yaml", line, col)
    assert "is not allowed" in error.problems[0].message
    assert stats.events <= 5


def test_python_name_tag_in_a_pipeline_file_is_refused_by_the_loader() -> None:
    """The hostile fixture through the whole loader (as `validate` reads it): refused at the
    tag, the fifth event of the file, and os.system never resolved into the document."""
    path = HOSTILE / "python_name.yaml"
    stats = LoadStats()
    error = _refused(lambda: load_pipeline(path, None, stats))
    assert stats.bytes_read == path.stat().st_size
    assert stats.events <= 5
    assert error.problems[0].loc == Location(str(path), 1, 11)
    assert "python/name:os.system" in error.problems[0].message
    assert "is not allowed" in error.problems[0].message


@pytest.mark.parametrize("make", [
    lambda n: "[" * n + "]" * n,
    lambda n: "x: " + "{a: " * n + "1" + "}" * n,
    lambda n: "- " * n + "1\n",
    lambda n: "".join(" " * i + "k:\n" for i in range(n)),
], ids=["flow-lists", "flow-maps", "block-lists", "block-maps"])
def test_ten_thousand_deep_nesting_is_refused_early(make: Callable[[int], str]) -> None:
    """Depth is checked on the event stream: no RecursionError, and the refusal at
    MAX_DEPTH does the same bounded work (PyYAML's scanner looks ahead at most 1024
    characters) whether the document nests 5,000 or 10,000 deep."""
    size = 10_000
    if len(make(size).encode()) > MAX_BYTES:  # block maps indent quadratically: stay under
        size = 1_400
    seen: list[LoadStats] = []
    for n in (size // 2, size):
        stats = LoadStats()
        with pytest.raises(SpecError) as info:
            load_yaml(make(n), "deep.yaml", stats)
        (p,) = info.value.problems
        assert f"nesting deeper than {MAX_DEPTH} levels" in p.message
        assert p.loc is not None and p.loc.file == "deep.yaml"
        seen.append(stats)
    half, full = seen
    assert full == half
    assert full.depth == MAX_DEPTH
    assert full.events <= 2 * MAX_DEPTH + 4  # a block mapping level is a key and a mapping
    assert full.chars_scanned <= 4096
    assert full.tokens <= 1024 + 2 * MAX_DEPTH + 4


def test_two_mebibyte_file_is_refused_before_parsing() -> None:
    """The size cap applies before the parser sees a byte."""
    text = "a: " + "x" * (2 * 1024 * 1024) + "\n"
    stats = LoadStats()
    error = _refused(lambda: load_yaml(text, "big.yaml", stats))
    assert "file too large" in error.problems[0].message
    assert error.problems[0].loc == Location("big.yaml", 1, 1)
    assert stats == LoadStats()  # not a character scanned, not an event read


def test_two_mebibyte_file_on_disk_is_refused(tmp_path: Path) -> None:
    """load_pipeline checks the size before reading the file."""
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    stats = LoadStats()
    error = _refused(lambda: load_pipeline(path, Registry(plugins=False), stats))
    assert "file too large" in str(error)
    assert stats.bytes_read == 0


def test_syntax_errors_are_one_based_with_the_line_and_caret() -> None:
    """PyYAML's 0-based marks become 1-based; str() shows the line and a caret."""
    error = _refused(lambda: load_yaml("a: 1\nb: [1, 2\nc: 3\n", "s.yaml"))
    (p,) = error.problems
    assert p.loc is not None and p.loc.file == "s.yaml" and p.loc.line == 3
    assert p.message.startswith("YAML syntax error:")
    rendered = str(error)
    assert rendered.startswith("s.yaml:3:")
    assert "\n    3 | c: 3\n" in rendered


def test_self_referencing_alias_is_refused() -> None:
    """An alias inside the node it names is an error, not an infinite structure."""
    error = _refused(lambda: load_yaml("a: &x [1, *x]\n", "r.yaml"))
    assert error.problems[0].loc == Location("r.yaml", 1, 11)
    assert "contains it" in error.problems[0].message


def test_undefined_alias_and_several_documents_are_refused() -> None:
    """`*nope` without an anchor, and a second `---` document, are located errors."""
    error = _refused(lambda: load_yaml("a: *nope\n", "u.yaml"))
    assert error.problems[0].loc == Location("u.yaml", 1, 4)
    error = _refused(lambda: load_yaml("a: 1\n---\nb: 2\n", "m.yaml"))
    assert error.problems[0].loc == Location("m.yaml", 2, 1)
    assert "one YAML document" in error.problems[0].message


def test_non_scalar_keys_and_control_characters_are_refused() -> None:
    """`[a]: 1` cannot be a key; a BEL character is named with its position."""
    error = _refused(lambda: load_yaml("? [a]\n: 1\n", "k.yaml"))
    assert "mapping keys must be plain values" in error.problems[0].message
    error = _refused(lambda: load_yaml("a: b\nc: \x07\n", "c.yaml"))
    assert error.problems[0].loc == Location("c.yaml", 2, 4)
    assert "U+0007" in error.problems[0].message


def _string_bomb(references: int, blob: int = 900_000) -> str:
    """A valid-looking pipeline that anchors one ``blob``-byte string and refers to it
    ``references`` times: few nodes (the node budget lets it pass), huge once expanded."""
    refs = ", ".join(["*blob"] * references)
    return ("pipeline: bomb\nversion: 1\ninitial: a\nstates:\n  a:\n    run:\n"
            f"      - step: set\n        with: {{big: &blob \"{'x' * blob}\", copies: [{refs}]}}\n"
            "    next: done\n  done: {final: true}\n")


def test_a_string_referred_to_two_thousand_times_is_refused_naming_the_alias() -> None:
    """The 906 KB file of the attack: one 900 KB string and 2,000 aliases to it. The node
    count stays tiny, so the refusal comes from the budget on the bytes of text once aliases
    are expanded, at the alias that crosses it (file:line:col and its name), after reading
    only a handful of aliases."""
    text = _string_bomb(2000)
    assert MAX_NODES > 2010 and len(text.encode()) < MAX_BYTES
    stats = LoadStats()
    error = _refused(lambda: load_yaml(text, "bomb.yaml", stats))
    (p,) = error.problems
    assert "*blob" in p.message and f"{MAX_EXPANDED_BYTES} bytes" in p.message
    assert p.loc is not None and p.loc.file == "bomb.yaml" and p.loc.line == 8
    assert text.splitlines()[7][p.loc.col - 1:].startswith("*blob")
    # the work done: the budget plus at most the one alias that crossed it
    assert MAX_EXPANDED_BYTES < stats.bytes_expanded <= MAX_EXPANDED_BYTES + 900_000
    assert stats.events < 30  # refused at about the fifth of 2,000 aliases
    assert stats.nodes_built < 30


def test_the_expanded_size_of_a_pipeline_is_counted_and_a_few_aliases_pass() -> None:
    """Aliases within the budget load; their expanded text is counted in LoadStats."""
    stats = LoadStats()
    root = load_yaml(_string_bomb(3, blob=1000), "ok.yaml", stats)
    assert root.get("states") is not None
    assert 4 * 1000 <= stats.bytes_expanded < 4 * 1000 + 200


def test_validate_refuses_the_string_bomb_with_exit_2(tmp_path: Path) -> None:
    """`certwright validate` says where and exits 2 instead of passing the file."""
    import os
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(_string_bomb(2000))
    done = subprocess.run([sys.executable, "-m", "certwright", "validate", str(path)],
                          env={**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state")},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"{path}:8:" in done.stderr and "*blob" in done.stderr
