"""`ByteState`: the exact next-byte distribution after a byte prefix, advanced byte by byte.

The Rust engine keeps the covers of the current prefix and says which token prefixes it needs
rows (and sequence probabilities) for; the state answers with one request to the gateway per
step and hands the rows over without copying.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _core
from .engine_io import answer_all, answer_relative
from .gateway import CallStats
from .sampling import SamplingConfig, sample
from .spec import ByteSpec
from .token_seqs import Prefix

__all__ = ["ByteState"]


class ByteState:
    """The exact next-byte distribution after a byte prefix (`DistributionState`)."""

    def __init__(self, spec: ByteSpec, prefix: bytes, *, tolerance: float = 0.0, row_cache: Mapping[Prefix, np.ndarray] | None = None, stats: CallStats | None = None) -> None:
        self.spec = spec
        self._stats = stats if stats is not None else CallStats()
        self._row_cache = row_cache
        with self._stats.engine_time():
            self.engine = _core.CoverEngine(spec.core, prefix, list(spec.eos_ids), tolerance=tolerance)
        self._ready = False

    @property
    def stats(self) -> CallStats:
        return self._stats

    def ready(self) -> None:
        """Fetch what the current step needs from the model (rows and scores), if not done yet."""
        if not self._ready:
            answer_all(self.engine, self.spec.gateway, self._stats, self._row_cache)
            self._ready = True

    def fulfil_for_cover(self) -> None:
        """What drawing a cover needs, in one request: rows of the groups whose tokens cross the
        end of the text (not of those spelling it exactly: a cover needs only their probability,
        and their rows would make the engine decide validity for every token after them), and
        the groups' probabilities relative to the trunk all covers share. Afterwards
        `distribution()` still gives the right next-byte probabilities, but its `log_prefix` and
        `log_total` are relative to that trunk."""
        answer_relative(self.engine, self.spec.gateway, self._stats, exact_rows=False)

    def distribution(self) -> _core.NextByte:
        self.ready()
        with self._stats.engine_time():
            return self.engine.distribution()

    def logprobs(self) -> np.ndarray:
        """The 257 natural-log next-slot probabilities (bytes 0-255, then EOS)."""
        return np.asarray(self.distribution().logprobs)

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        return sample(self.logprobs(), cfg, rng)

    def advance(self, byte: int) -> None:
        self.ready()
        with self._stats.engine_time():
            self.engine.advance(byte)
        self._ready = False

    @property
    def text(self) -> bytes:
        return self.spec.user_text(bytes(self.engine.text))
