"""The one place a model call is made: `ModelGateway`.

Every state, decoder and scorer asks the gateway, never the token LM directly, so counting
(`CallStats`), timing, speculative rows and the check that rows are normalised log-probabilities
live here once. A batching scheduler (many live states served by one forward) belongs here too:
it only has to change how the gateway groups requests, not the states that post them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .backends.protocol import TokenLM
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

    def __init__(self, token_lm: TokenLM, *, speculate: int = 0) -> None:
        self.token_lm = token_lm
        self.vocab_size = int(token_lm.vocab_size)
        self.speculate = int(speculate)
        self._normalise: bool | None = None  # decided from the first rows the backend returns

    def over(self, token_lm: TokenLM) -> ModelGateway:
        """A gateway with the same settings over another token LM (a context-prefixed view)."""
        twin = ModelGateway(token_lm, speculate=self.speculate)
        twin._normalise = self._normalise
        return twin

    # ------------------------------------------------------------------ rows
    def rows(self, prefixes: Sequence[Sequence[int]], stats: CallStats, *, draft_ahead: bool = False) -> np.ndarray:
        """Next-token rows for `prefixes`, in order, as one request to the backend.
        `draft_ahead`: the same request also computes the rows along a prompt-lookup draft after
        the first prefix (when the backend keeps rows), so that later requests find them."""
        tl = self.token_lm
        wanted: list[Sequence[int]] = [list(p) for p in prefixes]
        extra = self._draft_prefixes(list(wanted[0])) if draft_ahead and wanted else []
        calls_before = getattr(tl, "n_calls", None)
        t0 = time.perf_counter()
        block = np.asarray(tl.logprobs(wanted + extra))[: len(wanted)]
        stats.model_seconds += time.perf_counter() - t0
        calls_after = getattr(tl, "n_calls", None)
        # Rows memoised by the backend cost no forward: count the forwards it actually ran.
        stats.model_calls += 1 if calls_before is None or calls_after is None else int(calls_after) - int(calls_before)
        stats.rows += len(wanted)
        return self._checked(block)

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
        """log p(seq) for each sequence (after the start tokens), by the backend's own method."""
        tl = self.token_lm
        calls_before = getattr(tl, "n_calls", None)
        t0 = time.perf_counter()
        if hasattr(tl, "sequence_logprob"):
            out = np.asarray(tl.sequence_logprob([list(s) for s in seqs]), dtype=np.float64)
        else:  # a bare object with `logprobs` only: the sum of its rows
            rows = self.rows_by_prefix(tail_prefixes(seqs, 0), CallStats(), batch=max(1, len(seqs)))
            out = np.asarray(tail_logprobs(rows, seqs, 0), dtype=np.float64)
        stats.model_seconds += time.perf_counter() - t0
        calls_after = getattr(tl, "n_calls", None)
        stats.model_calls += 1 if calls_before is None or calls_after is None else int(calls_after) - int(calls_before)
        return out

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
