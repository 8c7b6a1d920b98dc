"""A job queue without leases: each job is an invocation whose id is the job id.

A leased queue hands a job to a worker for a while and to another worker when the lease
runs out, so a slow job runs twice and a producer's duplicate is a second job. Here
submitting a job is ``app.start(job.id, process_job, job)``: the id makes it idempotent (a
job submitted twice runs once; asking again returns the stored result), the store makes it
survive restarts (pending jobs resume when the next app opens the store), and
``Resonate(max_active=...)`` bounds how many run at once (the rest wait their turn).

    python examples/leased_queue.py
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, Field

from dawait import Context, Resonate


class Job(BaseModel):
    id: str
    image_url: str
    width: int = Field(gt=0)


@dataclass(frozen=True)
class Thumbnail:
    job_id: str
    url: str


class Renderer:
    """Stands in for the real work: counts renders and how many overlap."""

    def __init__(self) -> None:
        self.renders: Counter[str] = Counter()
        self.in_flight = 0
        self.peak = 0

    def reset(self) -> None:
        self.renders.clear()
        self.in_flight = 0
        self.peak = 0

    async def render(self, job: Job) -> Thumbnail:
        self.renders[job.id] += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.005)  # the IO a real renderer would wait on
        finally:
            self.in_flight -= 1
        return Thumbnail(job_id=job.id, url=f"{job.image_url}?w={job.width}")


renderer = Renderer()


async def render_thumbnail(job: Job) -> Thumbnail:
    return await renderer.render(job)


async def process_job(ctx: Context, job: Job) -> Thumbnail:
    thumbnail: Thumbnail = await ctx.run(render_thumbnail, job)
    return thumbnail


@dataclass
class QueueReport:
    results: dict[str, Thumbnail]
    renders: dict[str, int]
    peak_concurrency: int
    resubmitted: Thumbnail


async def main(store: str | None = None, jobs: int = 12, concurrency: int = 4) -> QueueReport:
    renderer.reset()
    app = Resonate(store=store, max_active=concurrency)
    app.register(process_job)
    batch = [
        Job(id=f"job-{n:03}", image_url=f"https://img.example.com/{n}.png", width=200)
        for n in range(1, jobs + 1)
    ]
    async with app:
        # The first three jobs are submitted twice, as an at-least-once producer would.
        submitted = batch + batch[:3]
        handles = [await app.start(job.id, process_job, job) for job in submitted]
        thumbnails: list[Thumbnail] = await asyncio.gather(*(h.result() for h in handles))
        # Later, someone asks for job-002 again: its stored result, nothing re-rendered.
        resubmitted: Thumbnail = await app.run(batch[1].id, process_job, batch[1])
    results = {t.job_id: t for t in thumbnails}
    print(f"{len(submitted)} submissions, {len(results)} jobs done")
    print(f"renders in this process: {renderer.renders.total()}, at most {renderer.peak} at once")
    print(f"{batch[1].id} resubmitted: {resubmitted.url}")
    return QueueReport(
        results=results,
        renders=dict(renderer.renders),
        peak_concurrency=renderer.peak,
        resubmitted=resubmitted,
    )


if __name__ == "__main__":
    asyncio.run(main("sqlite:///.dawait/leased_queue.db"))
