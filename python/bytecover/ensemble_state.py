"""`EnsembleState`: one full state per member, combined slot by slot (the full-distribution
path of `Ensemble` and `ProxyTuned`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._core import NextByte, ZeroMassError
from .gateway import CallStats
from .sampling import N_SLOTS, SamplingConfig, sample
from .state_protocol import DistributionState

__all__ = ["EnsembleState", "Combine"]

Combine = Callable[[list[np.ndarray]], np.ndarray]
"""Member rows (257 natural-log slots each; all -inf for a dead member) -> combined row."""

_DEAD = np.full(N_SLOTS, -np.inf)
_DEAD.setflags(write=False)


class EnsembleState:
    """One state per member, combined slot by slot; advanced on the same byte for all.

    `distribution()`'s `log_prefix` and `log_total` are both the ensemble's own log-probability
    of the bytes advanced since the state was made: an ensemble removes no non-canonical mass of
    its own (its members report theirs)."""

    def __init__(self, members: Sequence[DistributionState | None], combine: Combine, prefix: bytes) -> None:
        self.members: list[DistributionState | None] = list(members)
        """Member states, ``None`` where the member is dead (gives the prefix probability 0)."""
        self._combine = combine
        self._text = bytearray(prefix)
        self._log_prefix = 0.0
        self._cache: tuple[np.ndarray, float, list[np.ndarray]] | None = None

    def _member_rows(self) -> tuple[list[np.ndarray], float]:
        rows: list[np.ndarray] = []
        bound = 0.0
        for i, m in enumerate(self.members):
            if m is None:
                rows.append(_DEAD)
                continue
            try:
                d = m.distribution()
            except ZeroMassError:
                self.members[i] = None
                rows.append(_DEAD)
                continue
            rows.append(np.asarray(d.logprobs, dtype=np.float64))
            bound = max(bound, float(d.error_bound))
        return rows, bound

    def _combined(self) -> tuple[np.ndarray, float, list[np.ndarray]]:
        if self._cache is None:
            rows, bound = self._member_rows()
            self._cache = (self._combine(rows), bound, rows)
        return self._cache

    def distribution(self) -> NextByte:
        lp, bound, _ = self._combined()
        return NextByte(np.ascontiguousarray(lp, dtype=np.float64), self._log_prefix, self._log_prefix, bound)

    def logprobs(self) -> np.ndarray:
        return self._combined()[0]

    def member_logprobs(self) -> list[np.ndarray]:
        """Each member's own next-byte distribution (all ``-inf`` for a dead member)."""
        return list(self._combined()[2])

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        return sample(self.logprobs(), cfg, rng)

    def advance(self, byte: int) -> None:
        """Append `byte` (0-255) for every member; a member that gave it probability 0 dies."""
        byte = int(byte)
        if not 0 <= byte < 256:
            raise ValueError(f"can only advance on a byte 0-255, got {byte}")
        lp, _, rows = self._combined()
        for i, m in enumerate(self.members):
            if m is None:
                continue
            if rows[i][byte] == -np.inf:
                self.members[i] = None
            else:
                m.advance(byte)
        self._log_prefix += float(lp[byte])
        self._text.append(byte)
        self._cache = None

    @property
    def text(self) -> bytes:
        """User bytes so far (prompt + advanced bytes)."""
        return bytes(self._text)

    @property
    def member_stats(self) -> list[CallStats | None]:
        """Each live member's costs, ``None`` for dead members."""
        return [m.stats if m is not None else None for m in self.members]

    @property
    def stats(self) -> CallStats:
        """The live members' costs, summed."""
        total = CallStats()
        for s in self.member_stats:
            if s is not None:
                total.add(s)
        return total
