"""Running many sequences at once: one worker thread per live sequence, at most `batch` of them.

Each job runs inside `enter()` (a byte model's `batched()`), so its model calls join the
scheduler's steps with the other live jobs. A finished job frees its thread for the next one
(continuous batching: no sequence waits for the slowest of a fixed batch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
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

    def job(x: T) -> R:
        with enter():
            return fn(x)

    with ThreadPoolExecutor(max_workers=min(batch, len(items)), thread_name_prefix="bytecover-seq") as pool:
        futures = [pool.submit(job, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


_DONE = object()


def iter_batched(gen: Callable[[T], Iterable[P]], items: Sequence[T], *, batch: int, enter: Callable[[], AbstractContextManager[object]]) -> Iterator[tuple[int, P]]:
    """The pieces of `gen(x)` for every item, tagged with the item's index, in the order they
    are produced. Workers never wait for the consumer (pieces are queued), so a slow reader
    does not hold back the batch; closing the iterator stops the workers at their next piece."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out: queue.Queue[tuple[int, object]] = queue.Queue()
    stop = threading.Event()

    def job(i: int, x: T) -> None:
        try:
            with enter():
                for piece in gen(x):
                    if stop.is_set():
                        return
                    out.put((i, piece))
        except BaseException as exc:  # handed to the consumer, raised there
            out.put((i, exc))
        finally:
            out.put((i, _DONE))

    pool = ThreadPoolExecutor(max_workers=max(1, min(batch, len(items))), thread_name_prefix="bytecover-seq")
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
        pool.shutdown(wait=True, cancel_futures=True)
