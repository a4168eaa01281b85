"""Per-vocabulary tables that token-level decoding consults at every step, built once per
`ByteLM` (and shared by its context views) instead of per call.

* which ids decoding never draws (tokens without bytes that do not end the text);
* which ids keep the text valid UTF-8 in each state of the UTF-8 automaton (`utf8_mask`);
* which ids are consistent with bytes still owed by the prompt (exact hand-off after a cover
  that ends inside the prompt, and the FIM heal method).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from .utf8_mask import Utf8Masks

__all__ = ["TokenTables"]


class TokenTables:
    """Masks over the `width` columns of a model's rows, for the tokenizer `core`."""

    def __init__(self, core: _core.Tokenizer, width: int) -> None:
        self.core = core
        self.width = int(width)
        self._utf8: Utf8Masks | None = None
        self._healer = _core.TokenHealer(core)
        self._control: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def utf8(self) -> Utf8Masks:
        """Tokens allowed in each UTF-8 automaton state (masks built when first needed)."""
        if self._utf8 is None:
            self._utf8 = Utf8Masks(self.core, self.width)
        return self._utf8

    def control_ids(self, eos_ids: Sequence[int]) -> np.ndarray:
        """Ids decoding never draws: tokens without bytes other than the end-of-text ids."""
        eos = tuple(sorted(set(int(t) for t in eos_ids)))
        ids = self._control.get(eos)
        if ids is None:
            ids = np.array([i for i in self.core.special_ids if i not in eos and i < self.width], dtype=np.int64)
            self._control[eos] = ids
        return ids

    def consistent_with(self, owed: bytes) -> np.ndarray:
        """Boolean mask of the ids whose bytes agree with `owed` (start with it, or are a prefix
        of it): the tokens that can spell bytes the text still owes."""
        mask = np.zeros(self.width, dtype=bool)
        ids = [t for t in self._healer.allowed(owed) if t < self.width]
        mask[ids] = True
        return mask
