"""A node's settings, written once: each ``ServeSettings`` field is a ``DAWAIT_*``
environment variable and (unless marked otherwise) a ``dawait serve`` flag whose help text
is the field's description.

A flag given wins over its environment variable, which wins over the default. This module
imports no aiohttp and no engine, so the CLI can build its parser from it cheaply.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from dawait.core._retention import parse_retention
from dawait.core._units import parse_size

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_STORE",
    "Flag",
    "ServeSettings",
    "add_serve_flags",
    "settings_from_flags",
]

DEFAULT_STORE = "sqlite:///.dawait/dawait.db"
DEFAULT_MAX_BODY = 4 * 1024 * 1024
"""Above the memory and SQLite stores' payload limit (2 MiB), so a payload the store takes
also fits in a request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """A setting's command-line flag where it is not ``--`` and the field's name with
    dashes; ``name=None``: no flag, the environment variable only."""

    name: str | None


class ServeSettings(BaseSettings):
    """A node's settings: command-line options, else ``DAWAIT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="DAWAIT_", extra="ignore")

    app: str = Field(description="MODULE:ATTR of the Resonate app (env DAWAIT_APP)")
    store: str | None = Field(
        default=None,
        description=f"store URL (default: the app's, else {DEFAULT_STORE})",
    )
    host: str = Field(default="127.0.0.1", description="listen address (default 127.0.0.1)")
    port: int = Field(default=8080, ge=0, le=65535, description="listen port (default 8080)")
    token: SecretStr | None = Field(
        default=None, description="require this bearer token (env DAWAIT_TOKEN)"
    )
    grace_period: float = Field(
        default=30.0, ge=0, description="seconds to let steps finish on stop"
    )
    max_body: Annotated[int, Flag(name=None)] = Field(
        default=DEFAULT_MAX_BODY, ge=1024, description="largest request body, in bytes"
    )
    max_connections: int | None = Field(
        default=None,
        ge=2,
        description="client connections held at once; more are answered 503 at once "
        "(default: the descriptor limit, raised to the hard one, less an eighth)",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a connection has to send a request's headers (default 10)",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="seconds a request has to send its body (default 30)"
    )
    etcd: str | None = Field(
        default=None, description="join the cluster at these etcd endpoints (HOST:PORT,...)"
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[^/]+$",
        description="the cluster's namespace in etcd (default 'default')",
    )
    node_id: str | None = Field(
        default=None,
        pattern=r"^[^/:]+$",
        description="this node's id in the cluster (default HOSTNAME-PID)",
    )
    advertise: str | None = Field(default=None, description="the URL peers reach this node at")
    groups: str | None = Field(
        default=None, description="function groups this node runs (default: all)"
    )
    lease_ttl: int = Field(
        default=5, ge=1, le=300, description="seconds before a silent node is dead"
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="partitions per function group of a new namespace (default 64); fixed "
        "once the namespace exists",
    )
    max_clock_offset: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="seconds a node's clock may be off the majority's before it stands aside "
        "(default 0.5)",
    )
    etcd_compact_every: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="seconds of etcd history the leader keeps: every that many seconds it "
        "compacts what is older (0: never, when etcd compacts itself with "
        "--auto-compaction-retention)",
    )
    retention: str | None = Field(
        default=None,
        description="keep finished invocations and promises this long, then delete them "
        "(500ms, 90s, 30m, 24h, 7d, 2w, or forever; default: the app's, 7d unless it says)",
    )
    max_payload: str | None = Field(
        default=None,
        description="largest argument list, result or promise value, as JSON (256KiB, 2MiB; "
        "default: the store's, 2MiB on SQLite and memory, 256KiB on etcd, its most)",
    )
    cluster_token: SecretStr | None = Field(
        default=None, description="token for peers' forwarded requests"
    )
    token_file: Path | None = Field(
        default=None, description="read --token from this file (a mounted Secret)"
    )
    cluster_token_file: Path | None = Field(
        default=None, description="read --cluster-token from this file"
    )
    open_metrics: bool = Field(
        default=False,
        description="serve /metrics without the token, for a scraper (env DAWAIT_OPEN_METRICS)",
    )

    @model_validator(mode="after")
    def _tokens_from_files(self) -> ServeSettings:
        """``token_file`` / ``cluster_token_file`` (a mounted Secret): the token is the
        file's text without its trailing newline."""
        for name in ("token", "cluster_token"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"give {name} or {name}_file, not both")
            try:
                text = path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{name}_file {path}: {exc.strerror or exc}") from exc
            if not text:
                raise ValueError(f"{name}_file {path} is empty")
            setattr(self, name, SecretStr(text))
        return self

    @model_validator(mode="after")
    def _reachable_by_peers(self) -> ServeSettings:
        if self.etcd and self.port == 0 and not self.advertise:
            raise ValueError("a cluster node (--etcd) needs --port (not 0) or --advertise")
        return self

    @field_validator("retention", "max_payload")
    @classmethod
    def _parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Checked here, parsed where used (``serve``): its ValueError names what is wrong."""
        if value is not None:
            (parse_retention if info.field_name == "retention" else parse_size)(value)
        return value

    @field_validator("app")
    @classmethod
    def _module_and_attribute(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr:
            raise ValueError(f"expected MODULE:ATTR (like myapp.workflows:app), got {value!r}")
        return value


def _flag_name(name: str, info: FieldInfo) -> str | None:
    for item in info.metadata:
        if isinstance(item, Flag):
            return item.name
    return "--" + name.replace("_", "-")


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``ServeSettings`` field that has one, in field order. A flag not given
    parses as None, so the environment variable (or the default) decides."""
    for name, info in ServeSettings.model_fields.items():
        flag = _flag_name(name, info)
        if flag is None:
            continue
        options: dict[str, Any] = {"dest": name, "help": info.description}
        if info.annotation is bool:
            options.update(action="store_true", default=None)
        elif info.annotation in (int, float):
            # argparse converts, so a non-number is its usage error, as for any flag.
            options["type"] = info.annotation
        parser.add_argument(flag, **options)


def settings_from_flags(args: argparse.Namespace) -> ServeSettings:
    """The settings from the flags given in ``args``, the environment for the rest.

    Raises ``pydantic.ValidationError`` naming the field of each bad value."""
    given = {
        name: value
        for name in ServeSettings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    return ServeSettings(**given)
