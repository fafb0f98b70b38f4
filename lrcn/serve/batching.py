"""Gather concurrent callers' inputs into one model call, run off the event loop.

A caller awaits `Batcher.submit`; one gathering task takes the first waiting input, then whatever
else arrives within ``wait_s`` (up to ``max_batch`` inputs), and hands the batch to ``run`` in a
single worker thread, so the model is only ever called from that thread and the event loop keeps
accepting requests meanwhile. Inputs that arrive during a model call wait in the queue and form
the next batch at once. A failure of ``run`` fails the callers of that batch only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")


class Batcher(Generic[Item, Out]):
    """See the module docstring; `start` and `stop` inside the running event loop.

    Args:
        run: inputs -> outputs, one per input in order; called in the worker thread.
        max_batch: the most inputs one call gets (``eval.batch_size``).
        wait_s: how long the first input of a batch waits for company.
    """

    def __init__(
        self, run: Callable[[list[Item]], list[Out]], max_batch: int, wait_s: float
    ) -> None:
        self.run, self.max_batch, self.wait_s = run, max(max_batch, 1), max(wait_s, 0.0)
        self.batch_sizes: deque[int] = deque(maxlen=4096)  # the latest calls' sizes (tests)
        self.calls = self.items = 0  # model calls and inputs since start (``GET /info``)
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Out]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Begin gathering (call from the event loop that will submit)."""
        self._queue = asyncio.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrcn-model")
        self._task = asyncio.get_running_loop().create_task(self._gather_forever())

    async def stop(self) -> None:
        """Stop gathering and let the worker finish its current call."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._worker is not None:
            self._worker.shutdown(wait=True)

    async def submit(self, item: Item) -> Out:
        """The output for ``item``, computed in some batch."""
        if self._queue is None:
            raise RuntimeError("Batcher.submit before Batcher.start")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather_forever(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
                    break
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Item, Any]]) -> None:
        live = [(item, future) for item, future in batch if not future.done()]  # caller gone
        if not live:
            return
        self.batch_sizes.append(len(live))
        self.calls, self.items = self.calls + 1, self.items + len(live)
        try:
            outputs = await loop.run_in_executor(self._worker, self.run, [i for i, _ in live])
        except Exception as exc:  # noqa: BLE001 (each caller gets the failure as its own)
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), output in zip(live, outputs):
            if not future.done():
                future.set_result(output)
