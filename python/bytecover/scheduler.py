"""One forward per step for every live sequence: the batching scheduler under the gateway.

Every byte state already asks its model through one door (`ModelGateway.rows` /
`sequence_logprob`), synchronously: a state posts the token prefixes it needs and waits for the
rows. So batching needs no change to the states: each live sequence runs in a thread of its own,
and the scheduler holds a thread's request until every other live sequence of the same model is
also waiting, then serves all of them with one backend call (duplicate prefixes once) and wakes
them. Sequences finish independently and a new one takes the free thread (continuous batching,
`concurrency.map_batched`); nothing is padded to the slowest.

A thread joins the batch inside `member()` (`ByteModel.batched()` enters it for every model a
byte model uses). Threads outside it are served one at a time, as before, so single-sequence
code pays nothing. A member that does not ask for a while (engine work, a consumer that stopped
reading a stream) delays the others by at most `max_wait` seconds: then the step runs with the
requests it has.

Why threads and not a step loop over the states: the states' control flow (the lazy engine's
decide/refine loop, the hand-off's token decoding, the ensemble's rounds over its members)
stays as it is, written once, and each waits on exactly the rows it needs; the Rust engine
releases the GIL while it works, so two members' engine work overlaps with each other and with
the forward. Tried first on paper: a generator protocol over all four states duplicated every
loop as a resumable one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends.protocol import TokenLM

__all__ = ["Scheduler", "SchedulerStats", "Served"]

DEFAULT_MAX_WAIT = 0.05
"""Seconds a posted request waits for members that are still busy before its step runs anyway."""


@dataclass
class SchedulerStats:
    """What the scheduler did (for benchmarks and the one-call-per-step contract)."""

    steps: int = 0
    """Times the scheduler served pending requests (each: one rows call, one scores call at most)."""
    backend_calls: int = 0
    """Calls made to the backend (`logprobs` and `sequence_logprob`)."""
    forwards: int = 0
    """Forwards the backend reported running (its `n_calls`; memoised rows cost none)."""
    requests: int = 0
    """Requests posted by members."""
    rows_asked: int = 0
    """Rows members asked for, duplicates included."""
    rows_fetched: int = 0
    """Distinct rows asked of the backend."""
    full_steps: int = 0
    """Steps that ran because every member was waiting (the rest ran at `max_wait`)."""
    model_seconds: float = 0.0
    """Wall time inside backend calls."""
    batch_sizes: list[int] = field(default_factory=list)
    """Requests served per step."""

    def as_dict(self) -> dict[str, Any]:
        sizes = self.batch_sizes or [0]
        return {
            "steps": self.steps, "backend_calls": self.backend_calls, "forwards": self.forwards, "requests": self.requests,
            "rows_asked": self.rows_asked, "rows_fetched": self.rows_fetched, "full_steps": self.full_steps,
            "model_seconds": self.model_seconds, "mean_batch": float(np.mean(sizes)), "max_batch": int(max(sizes)),
        }


@dataclass(frozen=True)
class Served:
    """A request's answer: the values asked for and the forwards the step that served it ran
    (shared with every request of that step)."""

    values: np.ndarray
    forwards: int


@dataclass
class _Ticket:
    kind: str  # "rows" or "scores"
    seqs: list[tuple[int, ...]]
    thread: int
    posted: float
    result: Served | None = None
    error: BaseException | None = None


class _Waiting:
    """Threads blocked in any scheduler's `_wait`. Shared by all schedulers of the process: a
    member of two models (an ensemble) waiting on one of them will not post to the other, so
    the other may run its step without it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        # thread id -> the ticket it waits on. Keyed by ticket, not just thread: a served thread
        # can wake (its wait timed out while the step ran unlocked), return, and post its next
        # ticket before the step's end clears the served ones; it must stay counted as waiting.
        self.threads: dict[int, _Ticket] = {}

    def stop_waiting(self, ticket: _Ticket) -> None:
        """`ticket`'s thread no longer waits on it (a later ticket of the thread still counts)."""
        if self.threads.get(ticket.thread) is ticket:
            del self.threads[ticket.thread]


_WAITING = _Waiting()


class Scheduler:
    """Gathers the requests of member threads into one backend call per step (see module doc)."""

    def __init__(self, token_lm: TokenLM, *, max_wait: float = DEFAULT_MAX_WAIT) -> None:
        self.token_lm = token_lm
        self.max_wait = float(max_wait)
        self.stats = SchedulerStats()
        self._members: dict[int, int] = {}  # thread id -> nesting depth
        self._pending: list[_Ticket] = []
        self._busy = False  # a step is running (outside the condition's lock)
        self._step_ended = 0.0  # perf_counter time the last step finished
        self._backend = threading.Lock()  # one backend call at a time, members or not

    # ------------------------------------------------------------------ membership
    @contextmanager
    def member(self) -> Iterator[None]:
        """The calling thread is a live sequence: its requests join the others' steps."""
        me = threading.get_ident()
        with _WAITING.cond:
            self._members[me] = self._members.get(me, 0) + 1
        try:
            yield
        finally:
            with _WAITING.cond:
                self._members[me] -= 1
                if not self._members[me]:
                    del self._members[me]
                _WAITING.cond.notify_all()  # the others may now all be waiting

    def is_member(self) -> bool:
        return threading.get_ident() in self._members

    @property
    def n_members(self) -> int:
        return len(self._members)

    # ------------------------------------------------------------------ requests
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> Served:
        """Next-token rows for `prefixes` (in order), batched with the other members' requests."""
        return self._serve("rows", prefixes)

    def sequence_logprob(self, seqs: Sequence[Sequence[int]]) -> Served:
        """log p(seq) for each sequence, batched like `logprobs`."""
        return self._serve("scores", seqs)

    def _serve(self, kind: str, seqs: Sequence[Sequence[int]]) -> Served:
        wanted = [tuple(map(int, s)) for s in seqs]
        me = threading.get_ident()
        if me not in self._members:
            with self._backend:
                values, forwards = self._call(kind, wanted)
            return Served(values, forwards)
        ticket = _Ticket(kind, wanted, me, time.perf_counter())
        with _WAITING.cond:
            self._pending.append(ticket)
            self.stats.requests += 1
            self.stats.rows_asked += len(wanted) if kind == "rows" else 0
            _WAITING.threads[me] = ticket
            _WAITING.cond.notify_all()
            try:
                self._wait(ticket)
            finally:
                _WAITING.stop_waiting(ticket)
        if ticket.error is not None:
            raise ticket.error
        assert ticket.result is not None
        return ticket.result

    def _wait(self, ticket: _Ticket) -> None:
        """Block (holding `_WAITING.cond`) until `ticket` is served; the thread that finds the
        step ready runs it."""
        cond = _WAITING.cond
        while ticket.result is None and ticket.error is None:
            if not self._busy and self._pending:
                everyone = all(t in _WAITING.threads for t in self._members)
                waited = time.perf_counter() - self._waiting_since()
                if everyone or waited >= self.max_wait:
                    self._run_step(full=everyone)
                    continue
            if self._busy:
                cond.wait()
            else:
                cond.wait(max(1e-4, self.max_wait - (time.perf_counter() - self._waiting_since())))

    def _waiting_since(self) -> float:
        """When the oldest pending request started waiting for the others: when it was posted,
        or when the step that was running then ended. Counting from the post alone split the
        members into groups that never met again: requests posted during a long forward were
        already "late" when it ended, so the next step ran before the members it had just
        served could post (measured: 16 FIM tasks on Qwen2.5-Coder, mean step 3.3 requests,
        101 of 150 steps short)."""
        return max(self._pending[0].posted, self._step_ended)

    def _run_step(self, *, full: bool) -> None:
        """Serve every pending ticket: one backend call per kind, duplicates asked once.
        Called holding the condition's lock; releases it during the backend calls."""
        batch, self._pending = self._pending, []
        self._busy = True
        _WAITING.cond.release()
        try:
            for kind in ("rows", "scores"):
                tickets = [t for t in batch if t.kind == kind]
                if not tickets:
                    continue
                distinct = list(dict.fromkeys(s for t in tickets for s in t.seqs))
                try:
                    with self._backend:
                        values, forwards = self._call(kind, distinct)
                except BaseException as exc:  # every waiter gets the error, none hangs
                    for t in tickets:
                        t.error = exc
                    continue
                where = {s: i for i, s in enumerate(distinct)}
                for t in tickets:
                    t.result = Served(values[[where[s] for s in t.seqs]], forwards)
                if kind == "rows":
                    self.stats.rows_fetched += len(distinct)
        finally:
            _WAITING.cond.acquire()
            # Served threads stop counting as waiting now, not when they wake up: otherwise the
            # first to wake would find the rest "waiting" and run a step of one.
            for t in batch:
                _WAITING.stop_waiting(t)
            self._busy = False
            self._step_ended = time.perf_counter()
            self.stats.steps += 1
            self.stats.full_steps += int(full)
            self.stats.batch_sizes.append(len(batch))
            _WAITING.cond.notify_all()

    def _call(self, kind: str, seqs: list[tuple[int, ...]]) -> tuple[np.ndarray, int]:
        """The backend call itself, timed and counted (forwards by the backend's own counter
        where it has one)."""
        tl = self.token_lm
        before = getattr(tl, "n_calls", None)
        t0 = time.perf_counter()
        lists: list[Sequence[int]] = [list(s) for s in seqs]
        if kind == "rows":
            values = np.asarray(tl.logprobs(lists))
        else:  # the gateway reads scores off rows for a backend without `sequence_logprob`
            values = np.asarray(tl.sequence_logprob(lists), dtype=np.float64)
        self.stats.model_seconds += time.perf_counter() - t0
        after = getattr(tl, "n_calls", None)
        forwards = 1 if before is None or after is None else int(after) - int(before)
        self.stats.backend_calls += 1
        self.stats.forwards += forwards
        return values, forwards
