"""Id patterns (core/_ids.py): ``*`` matches any run of characters, everything else only
itself, in time linear in the id (no backtracking)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawait.core._ids import MAX_PATTERN_LENGTH, check_id_pattern, glob_match


def _reference(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, text, re.DOTALL) is not None


@given(st.text("ab*?[.", max_size=8), st.text("ab?[.*", max_size=10))
def test_a_pattern_matches_what_a_regex_of_it_matches(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) == _reference(pattern, text)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*", "", True),
        ("order-*", "order-1", True),
        ("*-1", "order-1", True),
        ("a*a", "a", False),  # the two ends may not overlap
        ("a?c", "abc", False),  # ? and [ are characters, not wildcards
        ("[ab]", "[ab]", True),
        ("*:*", "wf:1.2", True),
    ],
)
def test_examples(pattern: str, text: str, matches: bool) -> None:
    assert glob_match(pattern, text) is matches


def test_a_pattern_that_makes_regexes_backtrack_is_answered_at_once() -> None:
    """``re`` takes exponential time on this pair (the node froze on it)."""
    assert not glob_match("*a" * 40 + "*b", "a" * 512)
    assert glob_match("*a" * 40 + "*b", "a" * 511 + "b")


def test_a_pattern_too_long_or_not_text_is_refused_naming_it() -> None:
    assert check_id_pattern("*a*") == "*a*"
    with pytest.raises(ValueError, match=f"longer than {MAX_PATTERN_LENGTH} characters"):
        check_id_pattern("*" * (MAX_PATTERN_LENGTH + 1))
    with pytest.raises(ValueError, match="id pattern must be a string"):
        check_id_pattern(5)
    with pytest.raises(ValueError, match="not valid Unicode"):
        check_id_pattern("a\ud800")
