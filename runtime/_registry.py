"""Registered functions, found by name and version when an invocation starts or replays."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dawait.core._errors import UnknownFunctionError
from dawait.core._retention import APP_RETENTION, AppRetention
from dawait.core._retry import RetryPolicy
from dawait.runtime._codec import Signature, signature_of

__all__ = ["Registered", "Registry", "function_name"]


def function_name(fn: Callable[..., Any]) -> str:
    """The name a function is recorded under when it was not registered with one."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    name: str
    version: int
    fn: Callable[..., Any]
    signature: Signature
    retry_policy: RetryPolicy | None = None
    timeout: float | None = None
    """Seconds an invocation of this function may run before it times out; None: no limit."""
    non_retryable: tuple[type[BaseException], ...] = ()
    group: str = "default"
    """The function group: cluster nodes run the groups they are started with."""
    retention: float | AppRetention | None = APP_RETENTION
    """Seconds a settled invocation of it is kept (None: until deleted); the app's when
    ``APP_RETENTION``."""

    @property
    def durable(self) -> bool:
        """Whether the function takes a ``Context`` (and so runs as a durable function)."""
        return self.signature.takes_context


def check_group(group: object, what: str) -> str:
    """``group`` if it can name a function group, else a ValueError naming ``what``."""
    if not isinstance(group, str) or not group or "," in group or "/" in group:
        raise ValueError(f"{what}: group {group!r} must be non-empty, without ',' or '/'")
    return group


class Registry:
    """Functions by name and version; the newest version serves calls that name none."""

    def __init__(self, context_type: type) -> None:
        self._context_type = context_type
        self._by_name: dict[str, dict[int, Registered]] = {}
        self._by_fn: dict[Callable[..., Any], Registered] = {}

    def add(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        version: int = 1,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        group: str = "default",
        retention: float | AppRetention | None = APP_RETENTION,
    ) -> Registered:
        if not callable(fn):
            raise TypeError(f"register: {fn!r} is not a function")
        name = name or function_name(fn)
        if not name or ":" in name:
            raise ValueError(f"register: name {name!r} must be non-empty and contain no ':'")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"register {name}: version must be an int >= 1, got {version!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"register {name}: timeout must be > 0 seconds, got {timeout!r}")
        check_group(group, f"register {name}")
        versions = self._by_name.setdefault(name, {})
        existing = versions.get(version)
        if existing is not None and existing.fn is not fn:
            raise ValueError(
                f"register: {name!r} version {version} is already registered to "
                f"{function_name(existing.fn)}"
            )
        registered = Registered(
            name=name,
            version=version,
            fn=fn,
            signature=signature_of(fn, name=name, context_type=self._context_type),
            retry_policy=retry_policy,
            timeout=timeout,
            non_retryable=tuple(non_retryable),
            group=group,
            retention=retention,
        )
        versions[version] = registered
        self._by_fn[fn] = registered
        return registered

    def get(self, name: str, version: int | None = None) -> Registered:
        """The function registered as ``name`` (at ``version``; newest when None)."""
        versions = self._by_name.get(name)
        if not versions:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownFunctionError(
                f"no function is registered as {name!r} (registered: {known})"
            )
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(str(v) for v in sorted(versions))
            raise UnknownFunctionError(
                f"{name!r} is not registered at version {version} (registered versions: {known})"
            ) from None

    def resolve(self, target: Callable[..., Any] | str, version: int | None = None) -> Registered:
        """A registered function given as itself or by name."""
        if isinstance(target, str):
            return self.get(target, version)
        registered = self._by_fn.get(target)
        if registered is None:
            raise UnknownFunctionError(
                f"{function_name(target)} is not registered: decorate it with @app.register"
            )
        return registered if version is None else self.get(registered.name, version)

    def lookup(self, fn: Callable[..., Any]) -> Registered | None:
        return self._by_fn.get(fn)

    def groups(self) -> set[str]:
        """The groups functions are registered in."""
        return {r.group for versions in self._by_name.values() for r in versions.values()}

    def group_of(self, name: str | None) -> str:
        """The group of function ``name`` (its newest version's); ``default`` for a function
        not registered here."""
        versions = None if name is None else self._by_name.get(name)
        return "default" if not versions else versions[max(versions)].group

    def served(self, groups: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """The functions in ``groups`` (by their newest version's group), each with its
        registered versions, oldest first."""
        wanted = set(groups)
        return {
            name: tuple(sorted(versions))
            for name, versions in self._by_name.items()
            if versions[max(versions)].group in wanted
        }

    def names(self) -> list[str]:
        return sorted(self._by_name)
