"""Batching the requests of concurrent clients into shared forward passes (`Batcher`): the first request of a
batch waits a few milliseconds for company, then one forward pass serves them all, so throughput grows with load
instead of every client paying for its own small forward pass. Inference runs in one dedicated thread, away from
the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BatchStats", "Batcher"]

log = logging.getLogger("alexnet.serve")


@dataclass
class _Job:
    x: torch.Tensor  # (rows, 3, S, S) float
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did so far: tests and operators read it to see that batching happens."""

    batches: int = 0  # forward passes run
    rows: int = 0  # rows (images or crops) through the model
    jobs: int = 0  # requests served
    largest_batch: int = 0  # most rows in one forward pass
    busy_seconds: float = 0.0  # time spent in forward passes

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "requests": self.jobs,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "busy_seconds": round(self.busy_seconds, 4),
        }


class Batcher:
    """Gathers the rows of concurrent requests into one forward pass.

    A request submits its rows and awaits its share of the output. The worker takes the first waiting job, lets
    ``window_s`` pass so that other clients' jobs can join (skipped when the queue already fills a batch), and runs
    ``forward`` on the concatenation in its single inference thread, away from the event loop. While one batch runs,
    the next one queues up, so under load batches grow by themselves. A job with more rows than ``max_batch`` runs
    alone rather than being split.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int, window_s: float) -> None:
        self._forward = forward
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-infer")
        self.stats = BatchStats()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="alexnet-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        """Whether the worker is alive to take requests (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def run_in_inference_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the inference thread (e.g. a warm-up pass), in order with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """Queue ``x`` (rows, ...) and return ``forward``'s output for those rows."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(x, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        carry: _Job | None = None
        while True:
            jobs = [carry if carry is not None else await self._queue.get()]
            carry = self._collect(jobs)
            if carry is None and self._rows(jobs) < self._max_batch and self._window_s > 0:
                await asyncio.sleep(self._window_s)
                carry = self._collect(jobs)
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            if jobs:
                await self._run_batch(jobs)

    def _collect(self, jobs: list[_Job]) -> _Job | None:
        """Move waiting jobs into ``jobs`` up to max_batch rows; return the first one that did not fit."""
        assert self._queue is not None
        rows = self._rows(jobs)
        while rows < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if rows + job.x.shape[0] > self._max_batch:
                return job
            jobs.append(job)
            rows += job.x.shape[0]
        return None

    @staticmethod
    def _rows(jobs: list[_Job]) -> int:
        return sum(j.x.shape[0] for j in jobs)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        x = torch.cat([j.x for j in jobs]) if len(jobs) > 1 else jobs[0].x
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._forward, x)
        except Exception as e:  # a failed pass fails its requests, never the worker
            log.exception("inference failed on a batch of %d rows", x.shape[0])
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        s = self.stats
        s.batches += 1
        s.rows += x.shape[0]
        s.jobs += len(jobs)
        s.largest_batch = max(s.largest_batch, x.shape[0])
        s.busy_seconds += time.perf_counter() - t0
        start = 0
        for j in jobs:
            n = j.x.shape[0]
            if not j.future.done():
                j.future.set_result(out[start : start + n])
            start += n
