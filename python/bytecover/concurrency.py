"""Running many sequences at once: one worker thread per live sequence, at most `batch` of them.

Each job runs inside `enter()` (a byte model's `batched()`), so its model calls join the
scheduler's steps with the other live jobs. A finished job frees its thread for the next one
(continuous batching: no sequence waits for the slowest of a fixed batch).

The first wave of jobs starts together: each waits, already a member, until all of them are,
so the first model call is one step for all of them instead of a step for whichever thread
started first (a scheduler runs a step as soon as every *current* member is waiting). Later jobs
join whenever a slot frees; a step that runs just before one joins is merely smaller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TypeVar

__all__ = ["map_batched", "iter_batched"]

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")


def map_batched(fn: Callable[[T], R], items: Sequence[T], *, batch: int, enter: Callable[[], AbstractContextManager[object]]) -> list[R]:
    """`[fn(x) for x in items]`, with up to `batch` items live at once. The first error is
    raised once the jobs already running have stopped (queued ones are cancelled)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if len(items) <= 1 or batch == 1:
        return [fn(x) for x in items]

    wave = _FirstWave(len(items), batch)

    def job(i: int, x: T) -> R:
        with wave.joined(i, enter):
            return fn(x)

    with ThreadPoolExecutor(max_workers=wave.width, thread_name_prefix="bytecover-seq") as pool:
        futures = [pool.submit(job, i, x) for i, x in enumerate(items)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            wave.abort()  # a cancelled first-wave job must not leave the others waiting
            for f in futures:
                f.cancel()
            raise


_DONE = object()


class _FirstWave:
    """The first `width` jobs: each enters, then waits until all of them have (module doc)."""

    def __init__(self, n_items: int, batch: int) -> None:
        self.width = max(1, min(batch, n_items))
        self._barrier = threading.Barrier(self.width)

    @contextmanager
    def joined(self, i: int, enter: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
        """`enter()` for job `i`, then, if it is in the first wave, wait for the rest of it."""
        first = i < self.width
        with ExitStack() as stack:
            try:
                stack.enter_context(enter())
            except BaseException:
                if first:
                    self.abort()  # the others must not wait for a job that will never arrive
                raise
            if first:
                self._barrier.wait()
            yield

    def abort(self) -> None:
        """Release every job waiting for the wave (one of it was cancelled or failed)."""
        self._barrier.abort()


def iter_batched(gen: Callable[[T], Iterable[P]], items: Sequence[T], *, batch: int, enter: Callable[[], AbstractContextManager[object]]) -> Iterator[tuple[int, P]]:
    """The pieces of `gen(x)` for every item, tagged with the item's index, in the order they
    are produced. Workers never wait for the consumer (pieces are queued), so a slow reader
    does not hold back the batch; closing the iterator stops the workers at their next piece."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out: queue.Queue[tuple[int, object]] = queue.Queue()
    stop = threading.Event()

    wave = _FirstWave(len(items), batch)

    def job(i: int, x: T) -> None:
        try:
            with wave.joined(i, enter):
                for piece in gen(x):
                    if stop.is_set():
                        return
                    out.put((i, piece))
        except BaseException as exc:  # handed to the consumer, raised there
            out.put((i, exc))
        finally:
            out.put((i, _DONE))

    pool = ThreadPoolExecutor(max_workers=wave.width, thread_name_prefix="bytecover-seq")
    try:
        for i, x in enumerate(items):
            pool.submit(job, i, x)
        live = len(items)
        while live:
            i, piece = out.get()
            if piece is _DONE:
                live -= 1
            elif isinstance(piece, BaseException):
                raise piece
            else:
                yield i, piece  # type: ignore[misc]
    finally:
        stop.set()
        wave.abort()  # cancelled first-wave jobs must not leave the started ones waiting
        pool.shutdown(wait=True, cancel_futures=True)
