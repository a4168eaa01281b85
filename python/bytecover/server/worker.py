"""The generation worker: each request generates in a thread of its own and pushes its pieces to
the event loop, so a slow or vanished client never holds up the model or the other requests.

Model work is shared between threads in one of two ways. When the model offers
``ByteModel.batched()`` (the batching scheduler), each worker runs inside it and the scheduler
gathers the concurrent requests' model calls into one forward per step. Without it, a lock
serialises whole generations, first come first served: interleaving them step by step would evict
the backend's key/value cache at every step and feed the whole prompt again each time.

The prefix cache across requests is the backend's own (`HFTokenLM` keeps the key/value states
and rows of its last calls), so an editor's prewarm request (``n_predict: 0``: the prompt is
evaluated, nothing generated) leaves the next completion with only the new tokens to feed;
``tokens_cached`` reports how many of the prompt's tokens were not fed again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .prompts import ModelInfo, Prompt
from .stopping import Outcome, Stopper, StopRules

__all__ = ["Job", "Result", "Engine", "Run"]

log = logging.getLogger("bytecover.server")


@dataclass(frozen=True)
class Job:
    prompt: Prompt
    rules: StopRules
    """Stop rules; `rules.max_tokens` = 0 evaluates the prompt only (prewarm)."""
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    bytewise: bool = False
    timeout_s: float = 120.0


@dataclass
class Result:
    text: str = ""
    outcome: Outcome = field(default_factory=Outcome)
    n_prompt_tokens: int = 0
    tokens_cached: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    queued_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def prompt_n(self) -> int:
        """Prompt tokens the model was fed for this request (the rest came from the cache)."""
        return self.n_prompt_tokens - self.tokens_cached


class Engine:
    """The served model and the rule for sharing it between worker threads."""

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.active = 0
        """Generations running or waiting (for /props)."""
        self.started = 0
        """Generations started since start-up."""

    @property
    def batched(self) -> bool:
        """Whether the model gathers concurrent calls (the batching scheduler) or we serialise."""
        return callable(getattr(self.info.lm, "batched", None))

    @contextlib.contextmanager
    def _turn(self, cancelled: threading.Event, deadline: float) -> Iterator[bool]:
        """The right to call the model; yields False if the request ended while waiting."""
        if self.batched:
            with self.info.lm.batched():
                yield True
            return
        while not self._lock.acquire(timeout=0.05):
            if cancelled.is_set() or time.monotonic() > deadline:
                yield False
                return
        try:
            yield True
        finally:
            self._lock.release()

    def generate(self, job: Job, on_piece: Callable[[str], None], cancelled: threading.Event) -> Result:
        """Run `job` in the calling thread; `on_piece` receives the text as it may be shown."""
        t_in = time.monotonic()
        deadline = t_in + job.timeout_s
        with self._count_lock:
            self.active += 1
            self.started += 1
        try:
            with self._turn(cancelled, deadline) as ok:
                res = Result(n_prompt_tokens=job.prompt.n_tokens, queued_ms=(time.monotonic() - t_in) * 1e3)
                if not ok:
                    res.outcome = Outcome("limit", "", "cancelled" if cancelled.is_set() else "timeout")
                    if not cancelled.is_set():
                        res.warnings.append(f"the request waited {job.timeout_s:g} s for the model and was ended (server --timeout)")
                    return res
                return self._generate(job, on_piece, cancelled, deadline, res)
        finally:
            with self._count_lock:
                self.active -= 1

    def _fed(self) -> tuple[int, int] | None:
        """(tokens the backend has fed so far, generations started) while this request is the only
        one running, so that a difference between two readings is this request's own; None when
        the backend does not count or other requests are running."""
        n = getattr(self.info.lm.token_lm, "n_tokens_fed", None)
        with self._count_lock:
            solo = self.active == 1
            started = self.started
        return (int(n), started) if n is not None and solo else None

    def _generate(self, job: Job, on_piece: Callable[[str], None], cancelled: threading.Event, deadline: float, res: Result) -> Result:
        info, p = self.info, job.prompt
        twin = info.lm.with_context(p.context, eos_ids=p.eos_ids)
        n_max = job.rules.max_tokens
        # The token limit is enforced on the text (`Stopper`); the byte budget only has to be
        # generous enough never to bind first.
        budget = max(1, (n_max if n_max is not None else 4096) * max(1, int(info.lm.core.max_token_len)) + 8)
        fed0 = self._fed()
        t0 = time.perf_counter()
        chunks = twin.stream(p.text, max_new_bytes=budget, temperature=job.temperature, top_k=job.top_k, top_p=job.top_p, seed=job.seed, bytewise=job.bytewise)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper: Stopper | None = None
        t_first = t0
        outcome: Outcome | None = None
        try:
            for chunk in chunks:
                if stopper is None:  # the prompt is evaluated: generation starts now
                    t_first = time.perf_counter()
                    res.prompt_ms = (t_first - t0) * 1e3
                    fed = self._fed()
                    if fed0 is not None and fed is not None and fed[1] == fed0[1]:
                        res.tokens_cached = max(0, p.n_tokens - (fed[0] - fed0[0]))
                    stopper = Stopper(job.rules, info.count_tokens)
                if cancelled.is_set():
                    outcome = Outcome("limit", "", "cancelled")
                    break
                shown = stopper.feed(decoder.decode(bytes(chunk)))  # type: ignore[arg-type]
                if shown:
                    on_piece(shown)
                if stopper.done:
                    break
                if time.monotonic() > deadline:
                    outcome = Outcome("limit", "", "timeout")
                    res.warnings.append(f"generation was ended after {job.timeout_s:g} s (server --timeout)")
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # ends the generator: no model call is spent on text nobody reads
        t_end = time.perf_counter()
        if stopper is None:  # the model ended the text before its first byte
            t_first = t_end
            res.prompt_ms = (t_end - t0) * 1e3
            stopper = Stopper(job.rules, info.count_tokens)
        if not stopper.done:
            rest = stopper.feed(decoder.decode(b"", final=True))
            if rest:
                on_piece(rest)
        if stopper.done:
            rest = stopper.finish()
        else:
            o = outcome or Outcome("eos", "", "eos")
            rest = stopper.finish(o.stop_type, o.reason)
        if rest:
            on_piece(rest)
        res.text = stopper.text
        res.outcome = stopper.outcome
        res.predicted_n = info.count_tokens(res.text)
        res.predicted_ms = (t_end - t_first) * 1e3
        return res


class Run:
    """One job in its worker thread; `events` (on the event loop) receives ``(tag, "piece", str)``
    and finally ``(tag, "done", Result)`` or ``(tag, "error", Exception)``; several runs may
    share one queue (OpenAI ``n`` and prompt lists). `cancel` ends the generation at its next
    piece (a client that went away)."""

    def __init__(self, engine: Engine, job: Job, loop: asyncio.AbstractEventLoop, events: asyncio.Queue[tuple[int, str, Any]] | None = None, tag: int = 0) -> None:
        self.engine = engine
        self.job = job
        self.loop = loop
        self.tag = tag
        self.events: asyncio.Queue[tuple[int, str, Any]] = events if events is not None else asyncio.Queue()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._work, name="bytecover-generate", daemon=True)

    def start(self) -> Run:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancelled.set()

    def _push(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (self.tag, kind, value))
        except RuntimeError:  # the loop is closed (server shutting down): nobody is listening
            self.cancelled.set()

    def _work(self) -> None:
        try:
            result = self.engine.generate(self.job, lambda piece: self._push("piece", piece), self.cancelled)
        except Exception as e:  # noqa: BLE001 - reported to the request, the server stays up
            if not isinstance(e, ValueError):
                log.exception("generation failed")
            self._push("error", e)
        else:
            self._push("done", result)
