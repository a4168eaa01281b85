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

import numpy as np

from . import _core
from .engine_io import answer_pending, answer_relative
from .gateway import CallStats
from .sampling import SamplingConfig
from .spec import ByteSpec

__all__ = ["ChoiceState"]


class ChoiceState:
    """Byte prefix from which the next byte is chosen (`choose`), then taken (`advance`)."""

    def __init__(self, spec: ByteSpec, prefix: bytes, *, tolerance: float = 0.0) -> None:
        self.spec = spec
        self._stats = CallStats()
        with self._stats.engine_time():
            self.engine = _core.CoverEngine(spec.core, prefix, list(spec.eos_ids), tolerance=tolerance, lazy=True)
        # The prompt's groups: scores relative to their shared trunk and all their rows, one request.
        answer_relative(self.engine, spec.gateway, self._stats, exact_rows=True)

    @property
    def stats(self) -> CallStats:
        return self._stats

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        """The next slot (0-255 a byte, 256 EOS) as `cfg` picks it from the exact distribution:
        greedy, or the inverse CDF at one uniform draw from `rng` (temperature applied). Top-k /
        top-p need the whole distribution (`ByteState`)."""
        if cfg.top_k is not None or cfg.top_p is not None:
            raise ValueError("top-k / top-p need the whole next-byte distribution: use ByteLM.state()")
        u = None if cfg.greedy else float(rng.random())
        while True:
            with self._stats.engine_time():
                b = self.engine.decide(u, cfg.temperature if u is not None else 1.0)
            if b is not None:
                return int(b)
            answer_pending(self.engine, self.spec.gateway, self._stats)

    def bounds(self) -> _core.Bounds:
        """This step's 257 numerators as bounds, all scaled by one factor (for combining models,
        `EnsembleChoice`)."""
        with self._stats.engine_time():
            return self.engine.step_bounds()

    def refine(self) -> bool:
        """One step towards exact numerators: decide the validity of the heaviest undecided
        tokens, or fetch the heaviest deferred rows (one request). False when already exact."""
        with self._stats.engine_time():
            step = self.engine.refine()
        if step == "rows":
            answer_pending(self.engine, self.spec.gateway, self._stats)
        return step != "settled"

    def advance(self, byte: int) -> None:
        with self._stats.engine_time():
            self.engine.advance(byte)

    @property
    def error_bound(self) -> float:
        """With a tolerance: the largest bound so far on a step's total-variation distance from
        the exact next-byte distribution (at most the tolerance). 0 when exact."""
        return float(self.engine.error_bound())

    @property
    def text(self) -> bytes:
        return self.spec.user_text(bytes(self.engine.text))
