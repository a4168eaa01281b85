"""Choosing each next byte exactly without computing the whole distribution.

`ChoiceState` drives the engine in lazy mode (rust/core/src/engine/lazy.rs): for a uniform
number u (or greedily) the engine returns the byte the exact next-byte distribution gives, using
bounds on the 257 numerators, and asks for model rows only when the bounds cannot settle it. In a
confident stretch of text that is the row of the token prefix the text follows, about one model
call per token, where the full distribution costs one per byte plus a validity check of every
token at every fresh token prefix. With a tolerance (the bounded-error mode) a step may leave
out unfetched token prefixes that together weigh at most tolerance x the mass it knows, so each
step's distribution is within the tolerance in total variation; `error_bound` reports the
largest fraction used.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from . import _core
from .sampling import SamplingConfig

if TYPE_CHECKING:
    from .byte_lm import ByteLM


class ChoiceState:
    """Byte prefix of a `ByteLM` from which the next byte is chosen (`choose`), then taken
    (`advance`). `stats` counts model calls, rows and time like `ByteState.stats`."""

    def __init__(self, lm: ByteLM, prefix: bytes, tolerance: float = 0.0) -> None:
        from .byte_lm import CallStats, fetch_relative

        self.lm = lm
        self.stats = CallStats()
        t0 = time.perf_counter()
        self.engine = _core.CoverEngine(lm.core, prefix, lm.eos_ids, tolerance=tolerance, lazy=True)
        self.stats.engine_seconds += time.perf_counter() - t0
        # The prompt's groups: scores relative to their shared trunk and all their rows, one call.
        fetch_relative(self, exact_rows=True)

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        """The next slot (0-255 a byte, 256 EOS) as `cfg` picks it from the exact distribution:
        greedy, or the inverse CDF at one uniform draw from `rng` (temperature applied). Top-k /
        top-p need the whole distribution (`ByteState`)."""
        if cfg.top_k is not None or cfg.top_p is not None:
            raise ValueError("top-k / top-p need the whole next-byte distribution: use ByteLM.state()")
        u = None if cfg.greedy else float(rng.random())
        while True:
            t0 = time.perf_counter()
            b = self.engine.decide(u, cfg.temperature if u is not None else 1.0)
            self.stats.engine_seconds += time.perf_counter() - t0
            if b is not None:
                return int(b)
            self._fetch(self.engine.pending())

    def bounds(self) -> tuple[np.ndarray, np.ndarray, float]:
        """This step's 257 numerators as bounds, all scaled by one factor: (known, undecided by
        slot, deferred mass that may land on any slot). For combining models (`EnsembleChoice`)."""
        t0 = time.perf_counter()
        known, unknown, deferred = self.engine.step_bounds()
        self.stats.engine_seconds += time.perf_counter() - t0
        return known, unknown, deferred

    def refine(self) -> bool:
        """One step towards exact numerators: decide the validity of the heaviest undecided
        tokens, or fetch the heaviest deferred rows (one model call). False when already exact."""
        t0 = time.perf_counter()
        step = self.engine.refine()
        self.stats.engine_seconds += time.perf_counter() - t0
        if step == "rows":
            self._fetch(self.engine.pending())
        return step != "settled"

    def _fetch(self, pending: list[tuple[int, list[int]]]) -> None:
        from .speculation import logprobs_with_draft

        t0 = time.perf_counter()
        tl = self.lm.token_lm
        calls = getattr(tl, "n_calls", None)
        rows = logprobs_with_draft(tl, [toks for _, toks in pending], self.lm.speculate)
        self.stats.model_seconds += time.perf_counter() - t0
        # Rows drafted by an earlier call are memoised: count the forwards actually run.
        self.stats.model_calls += 1 if calls is None else tl.n_calls - calls
        self.stats.rows += len(pending)
        t0 = time.perf_counter()
        self.engine.provide_rows([n for n, _ in pending], np.ascontiguousarray(rows))
        self.stats.engine_seconds += time.perf_counter() - t0

    def advance(self, byte: int) -> None:
        t0 = time.perf_counter()
        self.engine.advance(byte)
        self.stats.engine_seconds += time.perf_counter() - t0

    @property
    def error_bound(self) -> float:
        """With a tolerance: the largest bound so far on a step's total-variation distance from
        the exact next-byte distribution (at most the tolerance). 0 when exact."""
        return float(self.engine.error_bound())

    @property
    def text(self) -> bytes:
        """User bytes so far (the tokenizer's start prefix removed)."""
        return bytes(self.engine.text)[len(self.lm.core.start_prefix):]
