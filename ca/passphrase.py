"""Passphrase rules of the CAcert join form, and a generator that always satisfies them.

The rules (from the seed text), each reported separately so a user sees everything wrong
at once:

1. ``name``: no part of the person's name (parts of >= 3 letters, case-insensitive);
2. ``email``: no part of the email (the local part and domain labels of >= 3 characters);
3. ``lower``: at least one lower-case letter;
4. ``upper``: at least one upper-case letter;
5. ``space``: at least one space;
6. ``symbol``: at least one symbol (not a letter, not a digit, not whitespace);
7. ``word``: no English word: every run of letters is looked up case-insensitively in the
   ``english-words`` GCIDE list (words of >= 4 letters); a run that is a word, or contains
   a word of >= 5 letters, breaks the rule;
8. ``length``: at least 15 characters.

Both functions are pure (the word list is loaded once, lazily, and cached). Hazard: the
word list is about 100k entries; the first call takes ~0.1 s.
"""
from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from functools import lru_cache

MIN_LENGTH = 15
MIN_WORD = 4          # a whole run of letters this long or longer that is a word breaks rule 7
MIN_EMBEDDED = 5      # a word this long or longer anywhere inside a run breaks rule 7
_LETTER_RUN = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class RuleViolation:
    """One broken rule: ``rule`` is a stable code, ``message`` says what to change."""

    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The lower-cased, purely alphabetic English words of >= 4 letters (cached)."""
    from english_words import get_english_words_set

    words = get_english_words_set(["gcide"], lower=True, alpha=True)
    return frozenset(w for w in words if len(w) >= MIN_WORD and w.isascii() and w.isalpha())


def find_english_word(passphrase: str) -> str | None:
    """The first English word found in ``passphrase`` under rule 7, or None."""
    words = english_words()
    for match in _LETTER_RUN.finditer(passphrase):
        run = match.group().lower()
        if len(run) >= MIN_WORD and run in words:
            return run
        for start in range(len(run) - MIN_EMBEDDED + 1):
            # Longest first, so the message names the most telling word.
            for end in range(len(run), start + MIN_EMBEDDED - 1, -1):
                if run[start:end] in words:
                    return run[start:end]
    return None


def _name_parts(name: str) -> list[str]:
    return [p.lower() for p in re.findall(r"[^\W\d_]+", name) if len(p) >= 3]


def _email_parts(email: str) -> list[str]:
    local, _, domain = email.strip().lower().rpartition("@")
    parts = [local] + [p for p in re.split(r"[.+_-]", local) if p]
    parts += [label for label in domain.split(".") if label]
    return sorted({p for p in parts if len(p) >= 3}, key=len, reverse=True)


def check_passphrase(passphrase: str, name: str, email: str) -> list[RuleViolation]:
    """Every rule ``passphrase`` breaks for this person, in rule order; [] when acceptable.

    Pure and safe to call repeatedly. Never include the passphrase itself in a message.
    """
    broken: list[RuleViolation] = []
    lowered = passphrase.lower()
    hit = next((p for p in _name_parts(name) if p in lowered), None)
    if hit:
        broken.append(RuleViolation("name", f"contains part of your name ({hit!r})"))
    hit = next((p for p in _email_parts(email) if p in lowered), None)
    if hit:
        broken.append(RuleViolation("email", f"contains part of your email address ({hit!r})"))
    if not any(c.islower() for c in passphrase):
        broken.append(RuleViolation("lower", "needs at least one lower-case letter"))
    if not any(c.isupper() for c in passphrase):
        broken.append(RuleViolation("upper", "needs at least one upper-case letter"))
    if " " not in passphrase:
        broken.append(RuleViolation("space", "needs at least one space"))
    if not any(not c.isalnum() and not c.isspace() for c in passphrase):
        broken.append(RuleViolation("symbol", "needs at least one symbol (such as # or %)"))
    word = find_english_word(passphrase)
    if word:
        broken.append(RuleViolation("word", f"contains the English word {word!r}"))
    if len(passphrase) < MIN_LENGTH:
        broken.append(RuleViolation(
            "length", f"has {len(passphrase)} characters; at least {MIN_LENGTH} needed"))
    return broken


# Letters come in runs of exactly two (one upper, one lower case), separated by digits and
# symbols: no run can be an English word (>= 4 letters) or contain a name part (>= 3
# letters). Only an email whose local part itself holds a symbol could match by chance,
# which passing ``name``/``email`` rules out (the draw is then repeated until it complies).
_CONSONANTS = "bcdfghjkmnpqrstvwxz"
_SYMBOLS = "#%&*+=?@^~!$"


def _pair() -> str:
    lower, upper = secrets.choice(_CONSONANTS), secrets.choice(_CONSONANTS).upper()
    return lower + upper if secrets.randbelow(2) else upper + lower


def _group() -> str:
    return (_pair() + secrets.choice(string.digits) + secrets.choice(_SYMBOLS)
            + _pair() + secrets.choice(string.digits))


def generate_passphrase(name: str = "", email: str = "") -> str:
    """A random passphrase (39 characters, about 140 bits) that satisfies every rule.

    Safe to call with no arguments: by construction the result breaks no rule for any
    name and for any ordinary email address; with ``name``/``email`` it is re-checked and
    redrawn until :func:`check_passphrase` finds nothing.
    """
    while True:
        candidate = " ".join(_group() for _ in range(5))
        if not check_passphrase(candidate, name, email):
            return candidate
