"""The schedules of Resonate's protocol: ``schedule.create``, ``get``, ``delete``, ``search``.

A schedule an SDK creates is a dawait schedule (the same store, ``dawait schedules`` lists
it) that keeps the promise each firing creates (``SchedulePromise``: an id template, a
timeout, tags with the target); its ``args`` hold that promise's whole param. Each slot
fires once (the promise's id is the slot's), on the node that leads, and its promise is
dispatched to a worker of its target as any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from dawait.core._ids import check_invocation_id, check_schedule_id
from dawait.core._param import call_target
from dawait.core._schedule import Cron, SchedulePromise, ScheduleRecord
from dawait.core._wire import (
    TAG_TARGET,
    WireError,
    field,
    page_fields,
    schedule_wire,
    tags_field,
    value_field,
)

if TYPE_CHECKING:
    from dawait.node._protocol import Answer, Data, ProtocolApi

__all__ = ["SCHEDULE_KINDS"]


async def schedule_create(api: ProtocolApi, data: Data) -> Answer:
    what = "schedule.create"
    id = field(data, "id", str, what)
    cron = field(data, "cron", str, what)
    template = field(data, "promiseId", str, what)
    timeout = field(data, "promiseTimeout", int, what)
    param = value_field(data, "promiseParam", what)
    tags = tags_field(data, "promiseTags", what)
    try:
        check_schedule_id(id)
        expression = Cron(" ".join(cron.split())).expression
    except ValueError as exc:
        raise WireError(400, f"{what}: {exc}") from None
    if TAG_TARGET not in tags:
        raise WireError(400, f"{what}: promiseTags must include a {TAG_TARGET} tag")
    if timeout < 0:
        raise WireError(400, f"{what}: promiseTimeout must be >= 0 (milliseconds; 0: none)")
    spec = SchedulePromise(id=template, timeout=timeout, tags=tags)
    try:
        check_invocation_id(spec.promise_id(id, 0))  # what each firing will name its promise
    except ValueError as exc:
        message = f"{what}: promiseId {template!r} makes ids that cannot be: {exc}"
        raise WireError(400, message) from None
    func, version = call_target(param.data)
    now = api.engine.clock.now()
    record = ScheduleRecord(
        id=id,
        cron=expression,
        func=func or "",
        version=version or 1,
        args=param.data or "null",
        next_run_at=Cron(expression).next_after(now),
        created_at=now,
        promise=spec.encode(),
    )
    created = await api.engine.create_schedule(record)
    return 200, {"schedule": schedule_wire(created.schedule)}  # an existing one as it is


async def schedule_get(api: ProtocolApi, data: Data) -> Answer:
    id = field(data, "id", str, "schedule.get")
    record = await api.engine.get_schedule(id)
    if record is None:
        return 404, f"schedule.get: no schedule with id {id!r}"
    return 200, {"schedule": schedule_wire(record)}


async def schedule_delete(api: ProtocolApi, data: Data) -> Answer:
    id = field(data, "id", str, "schedule.delete")
    if not await api.engine.delete_schedule(id):
        return 404, f"schedule.delete: no schedule with id {id!r}"
    return 200, {}


async def schedule_search(api: ProtocolApi, data: Data) -> Answer:
    """Schedules by id, those whose promise tags hold ``tags``."""
    what = "schedule.search"
    tags = tags_field(data, "tags", what)
    limit, cursor = page_fields(data, what)
    page = await api.engine.search_schedules("*", limit=limit, cursor=cursor)
    found = [schedule_wire(r) for r in page.schedules]
    found = [s for s in found if all(s["promiseTags"].get(k) == v for k, v in tags.items())]
    return 200, {"schedules": found, "cursor": page.cursor}


SCHEDULE_KINDS: dict[str, Callable[[ProtocolApi, Data], Awaitable[Answer]]] = {
    "schedule.create": schedule_create,
    "schedule.get": schedule_get,
    "schedule.delete": schedule_delete,
    "schedule.search": schedule_search,
}
