"""Values rendered into commands stay data: one argument without a shell, never script text
with one. The shell cases run the script in a real ``/bin/sh`` and compare what it saw."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certwright.engine.model.template import (
    SHELL_VALUE_PREFIX,
    UnresolvedReference,
    render_shell,
    render_words,
)

# templates that each print the value once, framed, whatever quoting surrounds it
FRAMES = {
    "bare": ("printf '[%s]' ${v}", "[{}]"),
    "double quotes": ('printf \'[%s]\' "a ${v} b"', "[a {} b]"),
    "single quotes": ("printf '[%s]' 'a ${v} b'", "[a {} b]"),
    "inside a word": ("printf '[%s]' x${v}y", "[x{}y]"),
    # (the trailing x keeps command substitution from eating trailing newlines)
    "command substitution": ('printf \'[%s]\' "$(printf %s ${v}; echo x)"', "[{}x]"),
    "backticks": ("printf '[%s]' \"`printf %s ${v}; echo x`\"", "[{}x]"),
    "after a comment": ("# it's a comment ${v}\nprintf '[%s]' ${v}", "[{}]"),
}


def _sh(template: str, value: str) -> str:
    script, env = render_shell(template, {"inputs": {"v": value}})
    assert "touch" not in script  # the value never enters the script
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, check=True)
    return done.stdout.decode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_a_hostile_value_is_printed_verbatim_in_every_quoting_context(frame: str) -> None:
    """``x; touch F``, quotes, ``$(...)``, backticks, globs: the shell prints them back."""
    template, expected = FRAMES[frame]
    value = "x; touch F \"q\" 'a' $(id) `id` $HOME * \\ \n end"
    assert _sh(template, value) == expected.format(value)


# printable text and the odd control character; NUL cannot reach a process at all
VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 max_size=40)


@settings(max_examples=60, deadline=None)
@given(value=VALUES, frame=st.sampled_from(sorted(FRAMES)))
def test_any_value_comes_out_as_it_went_in(value: str, frame: str) -> None:
    template, expected = FRAMES[frame]
    assert _sh(template, value) == expected.format(value)


def test_one_variable_per_name_and_the_escape_reaches_the_shell() -> None:
    script, env = render_shell('echo ${v} "${v}" ${run.id} $${HOME}',
                               {"inputs": {"v": "a b"}, "run": {"id": "r1"}})
    one, two = f"{SHELL_VALUE_PREFIX}1", f"{SHELL_VALUE_PREFIX}2"
    assert script == f'echo "${{{one}}}" "${{{one}}}" "${{{two}}}" ${{HOME}}'
    assert env == {one: "a b", two: "r1"}


def test_words_are_split_before_values_are_rendered() -> None:
    """A value with spaces and quotes stays one argument, also inside a larger word."""
    ns = {"inputs": {"v": "a b 'c'", "n": 3, "none": None}}
    assert render_words("cmd ${v} --x=${v} '${n}' ${none}", ns) == [
        "cmd", "a b 'c'", "--x=a b 'c'", "3", ""]
    with pytest.raises(ValueError, match="quotation"):
        render_words("cmd 'unbalanced", ns)
    with pytest.raises(UnresolvedReference):
        render_shell("echo ${missing}", ns)


def test_a_value_in_arithmetic_must_be_a_whole_number() -> None:
    """In ``$((...))`` a shell evaluates what a variable holds as an expression, and bash
    runs ``$(...)`` inside an array subscript there (``a[$(touch F)]``): a value used in
    arithmetic is refused unless it is a whole number, and one that is works."""
    assert _sh("printf '[%s]' $(( ${v} + 1 ))", "41") == "[42]"
    assert _sh("printf '[%s]' \"$(( (${v}) * 2 ))\" ${v}", "-3") == "[-6][-3]"
    with pytest.raises(ValueError, match=r"\$\{v\}.*arithmetic.*whole number"):
        render_shell("echo $(( ${v} + 1 ))", {"inputs": {"v": "a[$(touch F)]"}})
