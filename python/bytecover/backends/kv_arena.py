"""Keys and values of every cached token, in one preallocated buffer per layer (the arena).

A forward over a batch of requests from many trunks runs as *one* sequence: the new tokens of
all requests, each attending to the arena slots of its own cached prefix and to its own
ancestors among the new tokens (a tree mask, `tree_mask`). The new tokens' states are written
into the arena in place (`ArenaLayer.update`), so nothing is concatenated or copied per step.

Attention reads a window of the arena, ``[start, used + new)``; slots outside a request's path
are masked. To keep the window close to what the live requests need, the hot slots are moved to
the end of the arena when the window has grown mostly stale (`move`), and the arena is
compacted (live slots first, coldest first) when it is full.

What was tried: a batch with each request's past in its own batch row (padded) copies every
request's whole past into a fresh tensor per step (the copy cost as much as the forward on this
CPU for 16 requests of 300 tokens); keeping only the last batch's rows (the previous design)
refed whole prompts whenever requests from different trunks met in one call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["ArenaLayer", "KVArena", "tree_mask"]


class ArenaLayer(DynamicLayer):
    """One layer's keys/values in a fixed buffer; `update` writes new states at `used` and
    returns the window ``[start, used + new)`` (views, no copy)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None
        self.used = 0
        self.start = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        heads, dim = key_states.shape[1], key_states.shape[3]
        self.buf_k = key_states.new_empty((1, heads, self.capacity, dim))
        self.buf_v = value_states.new_empty((1, value_states.shape[1], self.capacity, value_states.shape[3]))
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.buf_k is None:
            self.lazy_initialization(key_states, value_states)
        assert self.buf_k is not None and self.buf_v is not None
        n = key_states.shape[-2]
        self.buf_k[:, :, self.used : self.used + n].copy_(key_states)
        self.buf_v[:, :, self.used : self.used + n].copy_(value_states)
        self.keys = self.buf_k[:, :, self.start : self.used + n]
        self.values = self.buf_v[:, :, self.start : self.used + n]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.used - self.start

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


class KVArena:
    """The arena of every layer, and the depth (position id) of the token in each slot."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.capacity = int(capacity)
        self.layers = [ArenaLayer(self.capacity) for _ in range(n_layers)]
        self.used = 0
        """Slots written so far (live or garbage); new states go after them."""
        self.depth = np.zeros(self.capacity, dtype=np.int64)

    def cache(self, start: int) -> DynamicCache:
        """A cache over the arena for one forward that attends to slots ``[start, used)`` and
        appends after `used`."""
        cache = DynamicCache()
        for layer in self.layers:
            layer.used, layer.start = self.used, start
        cache.layers.extend(self.layers)
        return cache

    def commit(self, depths: np.ndarray) -> None:
        """The forward wrote len(depths) new slots after `used`."""
        self.depth[self.used : self.used + len(depths)] = depths
        self.used += len(depths)

    def move(self, src: np.ndarray, dst: int) -> None:
        """Copy slots `src` (in order) to ``dst, dst + 1, ...`` (ranges may overlap: the source
        is gathered first)."""
        if not len(src):
            return
        index = torch.as_tensor(src, dtype=torch.long)
        with torch.inference_mode():  # the buffers were made inside the forward's inference mode
            for layer in self.layers:
                if layer.buf_k is None or layer.buf_v is None:
                    continue
                at = index.to(layer.buf_k.device)
                layer.buf_k[:, :, dst : dst + len(src)] = layer.buf_k.index_select(2, at)
                layer.buf_v[:, :, dst : dst + len(src)] = layer.buf_v.index_select(2, at)
        self.depth[dst : dst + len(src)] = self.depth[src]

    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for layer in self.layers for t in (layer.buf_k, layer.buf_v) if t is not None)


def tree_mask(visible: np.ndarray, query_depth: np.ndarray, key_depth: np.ndarray, window: int | None, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """Additive (1, 1, q, k) mask: 0 where query i may attend to key j (`visible`, and within
    the sliding `window` of positions when given), the dtype's minimum elsewhere."""
    allowed = visible
    if window is not None:
        allowed = allowed & ((query_depth[:, None] - key_depth[None, :]) < window)
    mask = torch.zeros((1, 1) + allowed.shape, dtype=dtype)
    mask.masked_fill_(torch.from_numpy(~allowed)[None, None], torch.finfo(dtype).min)
    return mask.to(device)
