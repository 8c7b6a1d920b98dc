"""The route table of the HTTP API, and the OpenAPI 3.1 document generated from it and from
the pydantic models of the bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from aiohttp import web
from pydantic.json_schema import models_json_schema

from dawait.node._api_models import ErrorBody

__all__ = ["QUERY_PARAMETERS", "Route", "openapi_document"]

QUERY_PARAMETERS: Mapping[str, dict[str, Any]] = {
    "state": {
        "description": "Only promises in this state",
        "schema": {
            "type": "string",
            "enum": ["pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"],
        },
    },
    "states": {
        "description": "Only invocations in these states as of now, comma-separated: pending, "
        "resolved, rejected, canceled (rejected_canceled), timedout (rejected_timedout), "
        "failed (the last three)",
        "schema": {"type": "string"},
    },
    "function": {
        "description": "Only invocations of functions whose name starts with this",
        "schema": {"type": "string"},
    },
    "created_after": {
        "description": "Only invocations created at or after this ISO 8601 time (UTC if no zone)",
        "schema": {"type": "string", "format": "date-time"},
    },
    "created_before": {
        "description": "Only invocations created before this ISO 8601 time (UTC if no zone)",
        "schema": {"type": "string", "format": "date-time"},
    },
    "tag": {
        "description": "key=value: only invocations carrying this tag; repeat for several",
        "schema": {"type": "array", "items": {"type": "string"}},
        "style": "form",
        "explode": True,
    },
    "count": {
        "description": "true: count the matches by state too (counts)",
        "schema": {"type": "boolean", "default": False},
    },
    "limit": {
        "description": "Page size",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    "cursor": {"description": "From a previous page's cursor", "schema": {"type": "string"}},
    "wait": {
        "description": "Seconds to wait for the outcome",
        "schema": {"type": "number", "minimum": 0, "maximum": 300},
    },
    "id": {"description": "Id pattern; * matches any run", "schema": {"type": "string"}},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    tag: str
    summary: str
    body: type[pydantic.BaseModel] | None = None
    response: type[pydantic.BaseModel] | None = None
    statuses: Mapping[int, str] = field(default_factory=dict)
    query: list[str] = field(default_factory=list)
    """Query parameters, by name in ``QUERY_PARAMETERS``; ``name=entry`` where the name
    means something else here (``state=states``)."""
    auth: bool = True
    text: bool = False


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    models: set[type[pydantic.BaseModel]] = {ErrorBody}
    for route in routes:
        models.update(model for model in (route.body, route.response) if model is not None)
    ordered = sorted(models, key=lambda model: model.__name__)
    _, schemas = models_json_schema(
        [(model, "validation") for model in ordered], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "dawait node", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(route: Route) -> dict[str, Any]:
    error = {"application/json": {"schema": _ref(ErrorBody)}}
    ok_status = next((s for s in (201, 204) if s in route.statuses), 200)
    responses: dict[str, Any] = {}
    if route.text:
        responses["200"] = {"description": route.summary}
    for status in sorted({ok_status, *route.statuses}):
        description = route.statuses.get(status, "ok")
        if status == 204:
            responses["204"] = {"description": description}
        elif status < 300 and route.response is not None:
            content = {"application/json": {"schema": _ref(route.response)}}
            responses[str(status)] = {"description": description, "content": content}
        elif status >= 400:
            responses[str(status)] = {"description": description, "content": error}
    if route.auth:
        responses["401"] = {"description": "missing or wrong bearer token", "content": error}
    if route.body is not None:
        responses["400"] = {"description": "malformed JSON", "content": error}
        responses["413"] = {"description": "body too large", "content": error}
        responses.setdefault("422", {"description": "invalid body", "content": error})
    if route.query:
        responses.setdefault("422", {"description": "invalid query parameter", "content": error})
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.handler.__name__,
        "responses": responses,
    }
    parameters = [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        for _ in [0]
        if "{id}" in route.path
    ]
    parameters += [_query_parameter(entry) for entry in route.query]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    if route.auth:
        operation["security"] = [{"bearer": []}]
    return operation


def _query_parameter(entry: str) -> dict[str, Any]:
    name, _, described = entry.partition("=")
    return {"name": name, "in": "query", **QUERY_PARAMETERS[described or name]}
