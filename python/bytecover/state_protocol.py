"""The one shape every byte state has.

A state is a byte prefix of some byte-level model from which the next slot (a byte 0-255, or
`EOS` = 256) is chosen and then taken. Four kinds implement it: `ByteState` (the full exact
distribution), `ChoiceState` (the lazy engine: the chosen byte without the full distribution),
and their ensemble counterparts `EnsembleState` and `EnsembleChoice`. States that can give the
whole distribution also implement `DistributionState`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ._core import NextByte
from .gateway import CallStats
from .sampling import SamplingConfig

__all__ = ["ByteStep", "DistributionState", "NextByte"]


@runtime_checkable
class ByteStep(Protocol):
    """A byte prefix from which the next slot is chosen (`choose`) and taken (`advance`)."""

    @property
    def text(self) -> bytes:
        """User bytes so far (prompt + bytes advanced)."""
        ...

    @property
    def stats(self) -> CallStats:
        """Model calls, rows and time this state has cost (ensembles: summed over members)."""
        ...

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        """The next slot as `cfg` picks it from the exact distribution (0-255 a byte, 256 EOS)."""
        ...

    def advance(self, byte: int) -> None:
        """Take byte `byte` (0-255)."""
        ...


@runtime_checkable
class DistributionState(ByteStep, Protocol):
    """A state that also gives the whole next-byte distribution."""

    def distribution(self) -> NextByte:
        """The exact next-byte distribution and the prefix's probability (`NextByte`)."""
        ...
