"""The passphrase rules of the join form, one at a time, and the generator."""
from __future__ import annotations

import random
import string

import pytest

from certwright.ca.passphrase import check_passphrase, find_english_word, generate_passphrase

NAME = "Quentin Zyxwar"
EMAIL = "qzyx@mailhost.test"
GOOD = "Xq7# Zv9!kP2 Tm3%Rb8&"

# One passphrase per rule, each breaking only that rule.
BREAKS_ONE = {
    "name": "Xq7# Zyxwar!kP2 Tm3%Rb8&",
    "email": "Xq7# Zv9!kP2 Tm3%Rb8& qzyx",
    "lower": "XQ7# ZV9!KP2 TM3%RB8&",
    "upper": "xq7# zv9!kp2 tm3%rb8&",
    "space": "Xq7#Zv9!kP2Tm3%Rb8&",
    "symbol": "Xq7 Zv9 kP2 Tm3 Rb8 1",
    "word": "Xq7# Zv9!kP2 Tm3%Rb8& Garden",
    "length": "Xq7# Zv9!kP",
}


def test_compliant_passphrase_accepted() -> None:
    """A passphrase that keeps every rule yields no violation."""
    assert check_passphrase(GOOD, NAME, EMAIL) == []


@pytest.mark.parametrize("rule", sorted(BREAKS_ONE))
def test_each_rule_reported_alone(rule: str) -> None:
    """A passphrase breaking one rule is refused naming exactly that rule."""
    broken = check_passphrase(BREAKS_ONE[rule], NAME, EMAIL)
    assert [v.rule for v in broken] == [rule]
    assert broken[0].message


def test_all_broken_rules_reported_together() -> None:
    """Every broken rule is reported, not just the first."""
    broken = {v.rule for v in check_passphrase("garden", NAME, EMAIL)}
    assert broken == {"upper", "space", "symbol", "word", "length"}


def test_email_domain_label_counts() -> None:
    """A domain label of the email (>= 3 chars) is a part of the email."""
    broken = check_passphrase("Xq7# Zv9!kP2 Tm3%Rb8& MailHost", NAME, EMAIL)
    assert [v.rule for v in broken] == ["email"]
    assert "mailhost" in broken[0].message


def test_embedded_word_of_five_letters() -> None:
    """A run containing a word of >= 5 letters breaks the word rule; 4-letter inside doesn't."""
    assert find_english_word("xqGardenzq") == "garden"
    assert find_english_word("xqtreezq") is None
    assert find_english_word("Tree") == "tree"


def test_message_never_contains_passphrase() -> None:
    """Violation messages name the rule, not the secret."""
    secret = "XQ7# ZV9!KP2 TM3%RB8&"
    assert all(secret not in v.message for v in check_passphrase(secret, NAME, EMAIL))


def test_generated_passphrases_comply() -> None:
    """generate_passphrase() passes for 200 random names and emails, and is >= 30 chars."""
    rng = random.Random(7)
    seen = set()
    for _ in range(200):
        first = "".join(rng.choices(string.ascii_letters, k=rng.randint(3, 9)))
        last = "".join(rng.choices(string.ascii_letters, k=rng.randint(3, 12)))
        mail = f"{first.lower()}.{last.lower()}@{last.lower()[:5]}mail.example"
        phrase = generate_passphrase()
        assert len(phrase) >= 30
        assert check_passphrase(phrase, f"{first} {last}", mail) == []
        seen.add(phrase)
    assert len(seen) == 200
