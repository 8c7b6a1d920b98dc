"""The partition rules (core/_partitions.py): where an id lives, who may own a partition,
and how little moves when a node joins or leaves."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawait.core._ids import check_invocation_id
from dawait.core._partitions import (
    DEFAULT_PARTITIONS,
    FREE,
    Partition,
    check_partition_count,
    eligible,
    owner_of,
    partition_index,
)

ids = st.text(
    st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), min_size=1, max_size=40
)
"""Root ids as ``check_invocation_id`` lets them through: no ':', no lone surrogate."""


@given(ids, st.lists(st.integers(1, 50), min_size=1, max_size=4))
def test_an_invocation_and_all_its_calls_share_an_index(root: str, positions: list[int]) -> None:
    call = f"{root}:{'.'.join(map(str, positions))}"
    assert partition_index(call, 64) == partition_index(root, 64)


def test_ids_spread_over_the_partitions() -> None:
    counts = Counter(partition_index(f"order-{n}", DEFAULT_PARTITIONS) for n in range(64_000))
    assert set(counts) == set(range(DEFAULT_PARTITIONS))
    # 1,000 expected each; a bad hash (or a modulo bias) would leave some far off.
    assert min(counts.values()) > 850
    assert max(counts.values()) < 1150


@given(st.sampled_from(["default", "helpers", FREE]), st.integers(0, 4095))
def test_a_partition_path_round_trips(family: str, index: int) -> None:
    partition = Partition(family, index)
    assert Partition.from_path(partition.path) == partition


def test_the_free_family_reads_as_such() -> None:
    assert str(Partition(FREE, 3)) == "(free)/3"
    assert Partition(FREE, 3).path == "/0003"
    assert str(Partition("default", 12)) == "default/12"


@pytest.mark.parametrize("bad", [0, -1, 4097, 1.5, "64", True, None])
def test_a_partition_count_out_of_range_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"partitions: .* must be a whole number from 1 to 4096"):
        check_partition_count(bad)


def test_nodes_serving_less_than_another_are_not_eligible() -> None:
    v1 = frozenset({("f", 1)})
    v12 = frozenset({("f", 1), ("f", 2)})
    g = frozenset({("g", 1)})
    assert eligible({"a": v12, "b": v1, "c": v12}) == ["a", "c"]
    # Neither serves a subset of the other's: both may own.
    assert eligible({"a": v1, "b": g}) == ["a", "b"]
    assert eligible({}) == []


def test_a_joining_node_takes_about_a_quarter_from_three() -> None:
    partitions = [Partition("default", i) for i in range(DEFAULT_PARTITIONS)]
    before = {p: owner_of(p, ["a", "b", "c"]) for p in partitions}
    after = {p: owner_of(p, ["a", "b", "c", "d"]) for p in partitions}
    moved = [p for p in partitions if before[p] != after[p]]
    # Only to the new node, and about 1/4 of them.
    assert {after[p] for p in moved} == {"d"}
    assert 8 <= len(moved) <= 26


def test_a_leaving_node_moves_only_its_own() -> None:
    partitions = [Partition("default", i) for i in range(DEFAULT_PARTITIONS)]
    before = {p: owner_of(p, ["a", "b", "c"]) for p in partitions}
    after = {p: owner_of(p, ["a", "c"]) for p in partitions}
    assert {p for p in partitions if before[p] != after[p]} == {
        p for p in partitions if before[p] == "b"
    }
    assert owner_of(partitions[0], []) is None


@pytest.mark.parametrize("bad", ["\ud800", "order-\udfff-7"])
def test_an_id_that_is_not_valid_unicode_is_refused_naming_it(bad: str) -> None:
    """Such an id could not be hashed to its partition nor stored (SQLite and etcd take
    UTF-8): refused up front, with the id in the message."""
    with pytest.raises(ValueError, match="is not valid Unicode text"):
        check_invocation_id(bad)
