"""Rows of recent calls, by token prefix: the engine re-asks for the same prefixes across
neighbouring bytes, and a memoised row costs no forward. Shared by the backends."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["RowMemo"]

Key = tuple[int, ...]


class RowMemo:
    """A small LRU of next-token rows (`size` 0 keeps none)."""

    def __init__(self, size: int, width: int) -> None:
        self.size = int(size)
        self.width = int(width)
        self._rows: OrderedDict[Key, np.ndarray] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def rows(self, keys: Sequence[Key], compute: Callable[[list[Key]], dict[Key, np.ndarray]]) -> np.ndarray:
        """(len(keys), width) float32 rows: memoised ones from here, the rest from one
        `compute(distinct missing keys)` call, which are then remembered."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        fresh = compute(missing) if missing else {}
        out = np.empty((len(keys), self.width), dtype=np.float32)
        for i, k in enumerate(keys):
            row = fresh.get(k)
            if row is None:
                row = self._rows[k]
                self._rows.move_to_end(k)
            out[i] = row
        for k, row in fresh.items():
            self._remember(k, row)
        return out

    def clear(self) -> None:
        self._rows.clear()

    def _remember(self, key: Key, row: np.ndarray) -> None:
        if self.size <= 0:
            return
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)
