"""Each package's ``__all__`` is exactly what it exports, and the public names exist."""

from __future__ import annotations

import importlib
import re

import pytest

PACKAGES = [
    "dawait",
    "dawait.errors",
    "dawait.testing",
    "dawait.core",
    "dawait.runtime",
    "dawait.cluster",
    "dawait.node",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name_and_only_those(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        getattr(module, attr)  # the top-level package loads its names on first use
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, type(importlib))
        and getattr(value, "__module__", name).startswith("dawait")
        and attr != "annotations"
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))


def test_the_documented_public_api_imports() -> None:
    from dawait import (  # noqa: F401
        Constant,
        Context,
        Exponential,
        Handle,
        Linear,
        Never,
        Resonate,
        RetryPolicy,
    )
    from dawait.errors import (  # noqa: F401
        CanceledError,
        DawaitError,
        NonDeterminismError,
        PromiseTimeoutError,
        SerializationError,
        StepError,
        UnknownFunctionError,
    )


def test_every_error_is_a_dawait_error() -> None:
    errors = importlib.import_module("dawait.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.DawaitError)


def test_an_unknown_name_of_the_top_level_package_is_an_attribute_error() -> None:
    import dawait

    with pytest.raises(AttributeError, match="has no attribute 'Resonat'"):
        dawait.Resonat  # noqa: B018
    assert "Resonate" in dir(dawait)


def test_every_error_keeps_the_public_module_name() -> None:
    errors = importlib.import_module("dawait.errors")
    for name in errors.__all__:
        assert getattr(errors, name).__module__ == "dawait.errors"


def test_the_error_tree_draws_every_error() -> None:
    errors = importlib.import_module("dawait.errors")
    for name in errors.__all__:
        assert re.search(rf"^[ │├└─]*{name}\b", errors.__doc__ or "", re.MULTILINE), name


def test_an_error_recorded_before_the_errors_moved_to_the_core_is_rebuilt() -> None:
    from dawait.errors import PromiseTimeoutError
    from dawait.runtime._codec import decode_error, encode_error

    # Exactly as a store holds it from before the move (written by the earlier code).
    recorded = '{"type": "dawait.errors.PromiseTimeoutError", "message": "late", "args": ["late"]}'
    error = decode_error(recorded, what="step a:1")
    assert type(error) is PromiseTimeoutError
    assert str(error) == "late"
    assert encode_error(error) == recorded  # and recorded again under the same name
