"""Retry policies: the delays before each retry, and when they give up."""

from __future__ import annotations

import pytest

from dawait import Constant, Exponential, Linear, Never, RetryPolicy


def delays(policy: RetryPolicy, retries: int) -> list[float | None]:
    return [policy.backoff(retry) for retry in range(1, retries + 1)]


def test_exponential_doubles_from_one_second_up_to_a_minute() -> None:
    assert delays(Exponential(), 8) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_exponential_gives_up_after_30_retries_by_default() -> None:
    assert Exponential().backoff(30) == 60.0
    assert Exponential().backoff(31) is None


def test_exponential_with_its_own_numbers() -> None:
    policy = Exponential(delay=0.5, factor=3.0, max_delay=10.0, max_retries=5)

    assert delays(policy, 6) == [0.5, 1.5, 4.5, 10.0, 10.0, None]


def test_exponential_delays_are_floats() -> None:
    policy = Exponential(delay=1, factor=2, max_delay=100, max_retries=3)

    assert all(isinstance(delay, float) for delay in delays(policy, 3))


def test_exponential_stays_capped_for_many_retries() -> None:
    policy = Exponential(max_retries=5000)

    assert policy.backoff(2000) == 60.0


def test_linear_grows_by_its_delay() -> None:
    assert delays(Linear(delay=2.0, max_retries=4), 5) == [2.0, 4.0, 6.0, 8.0, None]
    assert delays(Linear(), 3) == [1.0, 2.0, 3.0]
    assert Linear().backoff(31) is None


def test_constant_waits_the_same_each_time() -> None:
    assert delays(Constant(delay=0.25, max_retries=3), 4) == [0.25, 0.25, 0.25, None]
    assert Constant().backoff(30) == 1.0
    assert Constant().backoff(31) is None


def test_never_retries() -> None:
    assert delays(Never(), 3) == [None, None, None]


@pytest.mark.parametrize("policy", [Exponential, Linear, Constant])
def test_zero_retries_gives_up_at_once(policy: type[Exponential | Linear | Constant]) -> None:
    assert policy(max_retries=0).backoff(1) is None


@pytest.mark.parametrize("policy", [Exponential, Linear, Constant])
def test_zero_delay_retries_at_once(policy: type[Exponential | Linear | Constant]) -> None:
    assert delays(policy(delay=0, max_retries=2), 2) == [0.0, 0.0]


@pytest.mark.parametrize(
    ("policy", "argument"),
    [
        (Exponential, "delay"),
        (Exponential, "factor"),
        (Exponential, "max_delay"),
        (Exponential, "max_retries"),
        (Linear, "delay"),
        (Linear, "max_retries"),
        (Constant, "delay"),
        (Constant, "max_retries"),
    ],
)
def test_negative_arguments_are_refused_by_name(
    policy: type[Exponential | Linear | Constant], argument: str
) -> None:
    with pytest.raises(ValueError, match=rf"{policy.__name__}: {argument} must be >= 0, got -1"):
        policy(**{argument: -1})


def test_policies_are_values() -> None:
    assert Exponential(delay=2.0) == Exponential(delay=2.0)
    assert Linear() != Constant()
    assert hash(Constant(delay=3.0)) == hash(Constant(delay=3.0))
    with pytest.raises(AttributeError):
        Constant().delay = 5.0  # type: ignore[misc]
