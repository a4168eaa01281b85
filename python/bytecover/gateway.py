"""The one place a model call is made: `ModelGateway`.

Every state, decoder and scorer asks the gateway, never the token LM directly, so counting
(`CallStats`), timing, speculative rows and the check that rows are normalised log-probabilities
live here once. Requests go through the model's `Scheduler`, which serves the requests of all
live sequences (threads inside `ByteModel.batched()`) with one backend call per step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .backends.protocol import ContextTokenLM, TokenLM
from .scheduler import Scheduler
from .speculation import draft
from .token_seqs import Prefix, shared_prefix_len, tail_logprobs, tail_prefixes

__all__ = ["CallStats", "ModelGateway", "NORMALISED_TOLERANCE"]

NORMALISED_TOLERANCE = 1e-3
"""Largest |log Σ exp(row)| accepted as a normalised row (float32 log-softmax over 262k ids is
off by about 1e-5)."""


@dataclass
class CallStats:
    """What the model and the engine cost (for benchmarks and the one-call-per-byte contract)."""

    model_calls: int = 0
    """Forwards the token LM ran (its own counter when it has one, else one per request)."""
    rows: int = 0
    """Next-token rows handed to the engine or the decoder."""
    scores: int = 0
    """Sequence probabilities handed to the engine."""
    model_seconds: float = 0.0
    engine_seconds: float = 0.0

    @contextmanager
    def engine_time(self) -> Iterator[None]:
        """Charge the wall time of the block to the engine."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.engine_seconds += time.perf_counter() - t0

    def add(self, other: CallStats) -> None:
        """Accumulate another state's costs (ensembles report their members' sum)."""
        self.model_calls += other.model_calls
        self.rows += other.rows
        self.scores += other.scores
        self.model_seconds += other.model_seconds
        self.engine_seconds += other.engine_seconds


class ModelGateway:
    """A token LM as the rest of bytecover calls it.

    `speculate` is the length of the prompt-lookup drafts whose rows a call made for decoding
    also computes (`bytecover.speculation`; 0 turns them off; exactness does not depend on it).
    """

    def __init__(self, token_lm: TokenLM, *, speculate: int = 0, scheduler: Scheduler | None = None, context: Sequence[int] = ()) -> None:
        self.token_lm = token_lm
        self.vocab_size = int(token_lm.vocab_size)
        self.speculate = int(speculate)
        self.scheduler = scheduler if scheduler is not None else Scheduler(token_lm)
        """Batches the requests of concurrent sequences (`bytecover.scheduler`); shared by every
        context view of the same model, so FIM prompts with different templates batch together."""
        self.context = tuple(int(t) for t in context)
        """Tokens in front of every prefix this gateway asks about (after the start tokens)."""
        self._normalise: bool | None = None  # decided from the first rows the backend returns

    def with_context(self, context_ids: Sequence[int]) -> ModelGateway:
        """A gateway with the same settings and scheduler for text that follows `context_ids`:
        its token LM (what users see as `token_lm`) is the context view, while requests go to
        the shared scheduler with the context in front."""
        view = ContextTokenLM(self.token_lm, context_ids)
        twin = ModelGateway(view, speculate=self.speculate, scheduler=self.scheduler, context=self.context + view.context)
        twin._normalise = self._normalise
        return twin

    # ------------------------------------------------------------------ rows
    def rows(self, prefixes: Sequence[Sequence[int]], stats: CallStats, *, draft_ahead: bool = False) -> np.ndarray:
        """Next-token rows for `prefixes`, in order, as one request to the scheduler (one backend
        call, shared with the other live sequences when the caller runs inside `batched()`).
        `draft_ahead`: the same request also computes the rows along a prompt-lookup draft after
        the first prefix (when the backend keeps rows), so that later requests find them."""
        wanted: list[Sequence[int]] = [list(p) for p in prefixes]
        extra = self._draft_prefixes(list(wanted[0])) if draft_ahead and wanted else []
        t0 = time.perf_counter()
        served = self.scheduler.logprobs([self.context + tuple(p) for p in wanted + extra])
        stats.model_seconds += time.perf_counter() - t0
        # Rows memoised by the backend cost no forward: count the forwards it actually ran (in a
        # batched step, the step's forwards, shared with the other sequences).
        stats.model_calls += served.forwards
        stats.rows += len(wanted)
        return self._checked(served.values[: len(wanted)])

    def rows_by_prefix(self, prefixes: Iterable[Sequence[int]], stats: CallStats, *, batch: int) -> dict[Prefix, np.ndarray]:
        """Rows for a set of token prefixes, `batch` per request, shortest first (so that a
        backend with a prefix cache finds each trunk already computed)."""
        ordered = sorted({tuple(p) for p in prefixes}, key=lambda p: (len(p), p))
        out: dict[Prefix, np.ndarray] = {}
        for i in range(0, len(ordered), batch):
            chunk = ordered[i : i + batch]
            out.update(zip(chunk, self.rows(chunk, stats)))
        return out

    def _draft_prefixes(self, first: list[int]) -> list[Sequence[int]]:
        tl = self.token_lm
        if self.speculate <= 0 or not getattr(tl, "keeps_rows", False) or tl.has_row(first):  # type: ignore[attr-defined]
            return []
        ahead = draft(first, self.speculate)
        extra = [first + ahead[: i + 1] for i in range(len(ahead))]
        return [p for p in extra if not tl.has_row(p)]  # type: ignore[attr-defined]

    def _checked(self, block: np.ndarray) -> np.ndarray:
        """Rows must be normalised log-probabilities: raw logits would make every probability the
        engine computes wrong without any error. Checked on the first rows the backend returns;
        a backend returning unnormalised rows gets them normalised, with one warning."""
        if block.ndim != 2 or block.shape[0] == 0:
            return block
        if self._normalise is None:
            first = block[0].astype(np.float64)
            finite = first[np.isfinite(first)]
            if finite.size:
                total = float(np.logaddexp.reduce(finite))
                self._normalise = abs(total) > NORMALISED_TOLERANCE
                if self._normalise:
                    warnings.warn(
                        f"{type(self.token_lm).__name__}.logprobs returned rows whose probabilities sum to "
                        f"exp({total:.4g}), not 1 (raw logits?); bytecover normalises them (log-softmax). "
                        "Return log-probabilities to silence this warning",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if self._normalise:
            rows = block.astype(np.float64)
            with np.errstate(invalid="ignore"):
                rows = rows - np.logaddexp.reduce(rows, axis=1, keepdims=True)
            return rows.astype(block.dtype, copy=False)
        return block

    # ------------------------------------------------------------------ sequence scores
    def sequence_logprob(self, seqs: Sequence[Sequence[int]], stats: CallStats) -> np.ndarray:
        """log p(seq) for each sequence (after the start tokens and the context)."""
        if self.context or not hasattr(self.scheduler.token_lm, "sequence_logprob"):
            # The backend scores from its start tokens (after a context, or for a bare object
            # with `logprobs` only): read the conditionals off the checked rows of every prefix
            # instead (one request, on the prefix cache).
            rows = self.rows_by_prefix(tail_prefixes(seqs, 0), stats, batch=1 << 30)
            return np.asarray(tail_logprobs(rows, seqs, 0), dtype=np.float64)
        t0 = time.perf_counter()
        served = self.scheduler.sequence_logprob(seqs)
        stats.model_seconds += time.perf_counter() - t0
        stats.model_calls += served.forwards
        return np.asarray(served.values, dtype=np.float64)

    def shared_trunk_logprob(self, seqs: Sequence[Sequence[int]], stats: CallStats, *, batch: int = 32) -> np.ndarray:
        """log p(seq) for sequences that share a long trunk (the covers of one prompt): the trunk
        is scored once, each remainder from next-token rows (with a prefix cache they cost a few
        tokens each). Scoring each whole sequence would feed the prompt once per sequence."""
        if len(seqs) <= 1:
            return self.sequence_logprob(seqs, stats)
        n = shared_prefix_len(seqs)
        base = float(self.sequence_logprob([seqs[0][:n]], stats)[0]) if n else 0.0
        rows = self.rows_by_prefix(tail_prefixes(seqs, n), stats, batch=batch)
        return base + np.asarray(tail_logprobs(rows, seqs, n), dtype=np.float64)
