"""A transformers causal LM as a `TokenLM`.

During byte-by-byte decoding the engine asks for rows of a handful of token prefixes that share a
long, slowly growing trunk, so `HFTokenLM` keeps the key/value cache of recent sequences and only
feeds the tokens it has not seen yet. See docs/design.md ("Token LM protocol").
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..token_seqs import common_prefix_len, shared_prefix_len
from ..tokenizer_support import detect_start_ids
from .fast_linear import FastLinears
from .protocol import TokenLMBase

__all__ = ["HFTokenLM"]


@dataclass
class _KVPool:
    """Key/value states of the last batch, one row per sequence, kept for the next call.

    Row `i` holds valid states for positions `[0, len(rows[i]))`; anything after that is right
    padding and is never read back (a crop to at most `len(rows[i])` drops it).
    """

    layers: list[tuple[Any, Any]]  # per layer (keys, values), each (B, heads, T, head_dim)
    rows: list[tuple[int, ...]]

    def best_match(self, target: Sequence[int]) -> tuple[int, int]:
        """(row, length) of the row sharing the longest prefix with `target`."""
        best_row, best_len = 0, 0
        for i, row in enumerate(self.rows):
            m = common_prefix_len(row, target)
            if m > best_len:
                best_row, best_len = i, m
        return best_row, best_len

    def slice(self, row: int, length: int) -> list[tuple[Any, Any]]:
        """Views of one row's first `length` positions (views: the pool itself is never written)."""
        return [(k[row : row + 1, :, :length], v[row : row + 1, :, :length]) for k, v in self.layers]


class HFTokenLM(TokenLMBase):
    """A transformers causal LM as a `TokenLM`, with KV-cache reuse across calls.

    Cache strategy: after every batched call the per-row key/value states are kept (`_KVPool`).
    The next call computes the batch's common prefix (capped so every request keeps at least one
    token to feed, which is where its logits come from), takes the pool row sharing the longest
    prefix with it, crops that row (a view), optionally extends it by the missing trunk tokens in
    a batch-1 forward, broadcasts it along the batch and feeds only the per-request suffixes
    (right-padded, positions continuing after the trunk).  In the engine's steady state (requests
    = last call's prefix + one token) this is a single forward feeding `batch` tokens.
    Short trunk extensions are folded into the suffixes instead of costing an extra forward.
    Rows of recent calls are memoised by prefix so repeated requests cost nothing.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any | None = None,
        *,
        bos_ids: Sequence[int] | None = None,
        vocab_size: int | None = None,
        memo_size: int = 64,
        fold_tokens: int = 8,
        cache_reuse: bool | None = None,
        max_batch_tokens: int | None = None,
        tree_mask: bool = True,
        fast_linear: bool = True,
    ) -> None:
        """Wrap `model` (put in eval mode: dropout would make rows random).

        `bos_ids` overrides the start tokens found from `tokenizer`; `vocab_size` overrides
        `len(tokenizer)`.  `fold_tokens` bounds the extra tokens spent folding a trunk extension
        into the batch instead of a separate forward.  `cache_reuse=None` enables reuse for
        attention-only models.  `max_batch_tokens` bounds padded tokens per uncached forward.
        `tree_mask` lets a batch run as one forward feeding each distinct token once (`_tree_rows`).
        `fast_linear` lets linear layers compute ``W @ x.T`` during these forwards on a CPU where
        that measured faster at start-up (`bytecover.fast_linear`; up to 2x per forward here).
        """
        import torch

        self._torch = torch
        self.model = model.eval()
        if vocab_size is None:
            if tokenizer is None:
                raise ValueError("HFTokenLM needs a tokenizer or an explicit vocab_size")
            vocab_size = len(tokenizer)
        self.vocab_size = int(vocab_size)
        self.start_ids: list[int] = (
            [int(t) for t in bos_ids] if bos_ids is not None
            else detect_start_ids(tokenizer) if tokenizer is not None else []
        )
        self.n_logits = self._check_logit_width(self._declared_logit_width())
        self.device = model.get_input_embeddings().weight.device
        self._forward_params = set(inspect.signature(model.forward).parameters)
        self._reuse = self._reuse_supported() if cache_reuse is None else bool(cache_reuse)
        self.fold_tokens = int(fold_tokens)
        self.max_batch_tokens = int(max_batch_tokens or max(64, 2**26 // self.n_logits))
        self._memo: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._memo_size = int(memo_size)
        self._tree = bool(tree_mask)
        self.fast_linears: FastLinears | None = FastLinears(model) if fast_linear else None
        """Linear layers swapped to ``W @ x.T`` during our forwards (None: torch's own path)."""
        self._pool: _KVPool | None = None
        self.n_calls = 0
        self.n_tokens_fed = 0

    # ----------------------------------------------------------------- set-up checks
    def _declared_logit_width(self) -> int | None:
        """Rows of the output embedding (or config.vocab_size), checked before any forward."""
        out = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        weight = getattr(out, "weight", None)
        if weight is not None and weight.dim() == 2:
            return int(weight.shape[0])
        width = getattr(getattr(self.model, "config", None), "vocab_size", None)
        return int(width) if width is not None else None

    def _check_logit_width(self, width: int | None) -> int:
        """Padding columns are trimmed later; too few columns means model and tokenizer differ."""
        if width is None:
            return self.vocab_size
        if width < self.vocab_size:
            raise ValueError(
                f"model produces {width} logits per position but the tokenizer has {self.vocab_size} ids; "
                "the model and tokenizer do not belong together (or pass vocab_size explicitly)"
            )
        return width

    def _reuse_supported(self) -> bool:
        """Cache reuse needs plain attention layers (crop/broadcast of K/V is exact only there)."""
        if "cache" not in self._forward_params and "past_key_values" not in self._forward_params:
            return False
        config: Any = getattr(self.model, "config", None)
        text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        layer_types = getattr(text_config, "layer_types", None) or []
        return all(t in ("full_attention", "sliding_attention") for t in layer_types)

    # ----------------------------------------------------------------- public API
    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        """Next-token log-probabilities (float32) after start tokens + each prefix."""
        keys = [self._key(p) for p in prefixes]
        out = np.empty((len(keys), self.vocab_size), dtype=np.float32)
        fresh: dict[tuple[int, ...], np.ndarray] = {}
        missing = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if missing:
            fresh = self._compute_rows(missing)
        for i, k in enumerate(keys):
            row = fresh.get(k)
            if row is None:
                row = self._memo[k]
                self._memo.move_to_end(k)
            out[i] = row
        for k, row in fresh.items():
            self._remember(k, row)
        return out

    @property
    def keeps_rows(self) -> bool:  # type: ignore[override]
        return self._memo_size > 0

    def has_row(self, prefix: Sequence[int]) -> bool:
        """Whether the row after `prefix` is memoised (asking for it makes no model call)."""
        return tuple(int(t) for t in prefix) in self._memo

    def sequence_logprob(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """Sum of log p(t_j | start + t_<j): one uncached forward per sequence, batched."""
        torch = self._torch
        seqs = [self._key(s) for s in seqs]
        out = np.zeros(len(seqs), dtype=np.float64)
        todo = [i for i, s in enumerate(seqs) if s]
        if todo and not self.start_ids:
            raise ValueError("sequence_logprob: the model has no start tokens, so the first token has no "
                             "distribution; pass bos_ids=[...] (e.g. the EOS id) to HFTokenLM")
        inputs = {i: list(self.start_ids) + list(seqs[i][:-1]) for i in todo}
        for group in self._length_groups(todo, lambda i: len(inputs[i])):
            logits = self._plain_forward([inputs[i] for i in group], keep_all=True)
            for b, i in enumerate(group):
                n, s0 = len(seqs[i]), len(self.start_ids) - 1
                rows = self._log_softmax(logits[b, s0 : s0 + n], seqs[i])
                target = torch.tensor(seqs[i], device=rows.device).unsqueeze(1)
                out[i] = float(rows.gather(1, target).double().sum())
        return out

    def reset_cache(self) -> None:
        """Forget cached key/values and memoised rows (e.g. after changing the model's weights)."""
        self._pool = None
        self._memo.clear()

    # ----------------------------------------------------------------- helpers
    def _key(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """Prefix as a hashable tuple, rejecting ids outside the tokenizer's range early."""
        key = tuple(int(t) for t in prefix)
        for t in key:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token id {t} is outside the vocabulary [0, {self.vocab_size})")
        return key

    def _remember(self, key: tuple[int, ...], row: np.ndarray) -> None:
        """Small LRU: the engine re-asks for the same prefixes across neighbouring bytes."""
        if self._memo_size <= 0:
            return
        self._memo[key] = row
        self._memo.move_to_end(key)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)

    def _length_groups(self, items: list[int], length: Any) -> list[list[int]]:
        """Batches of similar length whose padded size stays within `max_batch_tokens`."""
        groups: list[list[int]] = []
        current: list[int] = []
        for i in sorted(items, key=length):
            if current and (len(current) + 1) * length(i) > self.max_batch_tokens:
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        return groups

    def _log_softmax(self, logits: Any, what: Any) -> Any:
        """Trim padding columns, upcast to float32, refuse NaN/+inf (a broken model, not a 0)."""
        torch = self._torch
        if logits.shape[-1] < self.vocab_size:
            raise ValueError(f"model returned {logits.shape[-1]} logits but the tokenizer has "
                             f"{self.vocab_size} ids")
        logits = logits[..., : self.vocab_size].float()
        bad = torch.isnan(logits) | torch.isposinf(logits)
        if bool(bad.any()):
            raise FloatingPointError(f"model produced NaN/inf logits for prefix {_short(what)}")
        rows = torch.log_softmax(logits, dim=-1)
        if bool(torch.isnan(rows).any()):
            raise FloatingPointError(f"all logits are -inf for prefix {_short(what)}")
        return rows

    def _full(self, key: tuple[int, ...]) -> tuple[int, ...]:
        """Start tokens + prefix; an empty result has no next-token distribution at all."""
        seq = tuple(self.start_ids) + key
        if not seq:
            raise ValueError("empty prefix on a model without start tokens has no distribution; "
                             "pass bos_ids=[...] (e.g. the EOS id) to HFTokenLM")
        return seq

    def _compute_rows(self, keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
        """Rows for distinct, not memoised prefixes."""
        seqs = [self._full(k) for k in keys]
        if self._reuse:
            rows = self._cached_rows(seqs, keys)
            if rows is not None:
                return rows
        out: dict[tuple[int, ...], np.ndarray] = {}
        for group in self._length_groups(list(range(len(seqs))), lambda i: len(seqs[i])):
            logits = self._plain_forward([seqs[i] for i in group], keep_all=False)
            for b, i in enumerate(group):
                out[keys[i]] = self._to_numpy(self._log_softmax(logits[b, 0], keys[i]))
        return out

    def _to_numpy(self, rows: Any) -> np.ndarray:
        return rows.detach().to("cpu").numpy().astype(np.float32, copy=False)

    # ----------------------------------------------------------------- model calls
    def _forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any,
                 keep: Any) -> Any:
        """The single place the model runs: inference mode, counters, optional logits_to_keep."""
        torch = self._torch
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                  "position_ids": position_ids}
        if cache is not None:
            kwargs["cache" if "cache" in self._forward_params else "past_key_values"] = cache
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        if keep is not None and "logits_to_keep" in self._forward_params:
            kwargs["logits_to_keep"] = keep
            keep = None
        with torch.inference_mode(), (self.fast_linears.active() if self.fast_linears is not None else nullcontext()):
            out = self.model(**kwargs)
        self.n_calls += 1
        self.n_tokens_fed += int(input_ids.numel())
        logits = out.logits
        if keep is not None:  # model without logits_to_keep: select positions ourselves
            logits = logits.gather(1, keep.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        return out, logits

    def _pad(self, seqs: Sequence[Sequence[int]], past: int) -> tuple[Any, Any, Any]:
        """Right-padded ids, mask over past + new positions (None when unpadded), positions."""
        torch = self._torch
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), past + width), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            mask[b, : past + len(s)] = 1
        positions = torch.arange(past, past + width, dtype=torch.long).unsqueeze(0).expand(len(seqs), -1)
        padded = any(len(s) != width for s in seqs)
        return (ids.to(self.device), mask.to(self.device) if padded else None, positions.to(self.device))

    def _last_positions(self, seqs: Sequence[Sequence[int]]) -> Any:
        """(B, 1) index of each row's last real token: the only logits we need."""
        torch = self._torch
        return torch.tensor([[len(s) - 1] for s in seqs], dtype=torch.long, device=self.device)

    def _plain_forward(self, seqs: list[Sequence[int]], keep_all: bool) -> Any:
        """Uncached forward of whole sequences; logits at every position or at the last one."""
        ids, mask, positions = self._pad(seqs, 0)
        keep = None if keep_all else self._last_positions(seqs)
        _, logits = self._forward(ids, mask, positions, None, keep)
        return logits

    # ----------------------------------------------------------------- KV-cache reuse
    def _cached_rows(self, seqs: list[tuple[int, ...]],
                     keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray] | None:
        """Rows via the kept K/V states; None when the model's cache turned out not reusable."""
        trunk_len = min(shared_prefix_len(seqs), min(len(s) for s in seqs) - 1)
        trunk = seqs[0][:trunk_len]
        base, have = self._base_from_pool(trunk)
        missing = trunk_len - have
        padded = len(seqs) * (max(len(s) for s in seqs) - have)
        if len(seqs) > 1 and padded > len(seqs) and self._tree_ok(have + padded):
            return self._tree_rows(base, have, seqs, keys)
        if missing > 0 and (len(seqs) - 1) * missing > self.fold_tokens:
            base = self._extend(base, trunk[have:], have)
            if base is None:
                return None
            have = trunk_len
        suffixes = [s[have:] for s in seqs]
        ids, mask, positions = self._pad(suffixes, have)
        cache = self._make_cache(base, len(seqs))
        out, logits = self._forward(ids, mask, positions, cache, self._last_positions(suffixes))
        layers = self._cache_layers(out, have + ids.shape[1], len(seqs))
        if layers is None:
            return None
        self._pool = _KVPool(layers=layers, rows=list(seqs))
        return {k: self._to_numpy(self._log_softmax(logits[b, 0], k)) for b, k in enumerate(keys)}

    def _tree_ok(self, length: int) -> bool:
        """Whether one forward with a tree mask may replace trunk + batch: the model must take a
        4-D mask as it is, which drops a sliding window, so only within the window."""
        if not self._tree:
            return False
        config: Any = getattr(self.model, "config", None)
        text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        window: Any = getattr(text_config, "sliding_window", None)
        uses_window = window is not None and (getattr(text_config, "use_sliding_window", True) or "sliding_attention" in (getattr(text_config, "layer_types", None) or []))
        return not uses_window or length <= int(window)

    def _tree_rows(self, base: list[tuple[Any, Any]] | None, have: int, seqs: list[tuple[int, ...]],
                   keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray] | None:
        """Rows for a batch in *one* forward that feeds every distinct token once: the requests
        beyond the cached `have` positions form a trie, laid out as one sequence in which each
        token sees the cache and its own ancestors only (a 4-D mask; positions are depths).
        Right-padded batches feed every request's whole suffix, so requests that part early
        (a prompt's covers, token prefixes of different lengths) cost their longest member
        times their number; feeding the trunk first and then the batch costs two forwards.
        The kept K/V rows are gathered per request afterwards, so later calls reuse them."""
        torch = self._torch
        node_of: dict[tuple[int, ...], int] = {}
        parent: list[int] = []
        tokens: list[int] = []
        depth: list[int] = []
        last: list[int] = []
        for sq in seqs:
            at = -1
            for d in range(have, len(sq)):
                key = sq[have : d + 1]
                at_next = node_of.get(key)
                if at_next is None:
                    at_next = node_of[key] = len(tokens)
                    parent.append(at)
                    tokens.append(sq[d])
                    depth.append(d)
                at = at_next
            last.append(at)
        q = len(tokens)
        visible = torch.zeros((q, have + q), dtype=torch.bool)
        visible[:, :have] = True
        chains: list[list[int]] = []
        for i in range(q):
            chain = chains[parent[i]] + [i] if parent[i] >= 0 else [i]
            chains.append(chain)
            visible[i, [have + j for j in chain]] = True
        dtype = self.model.get_input_embeddings().weight.dtype
        mask = torch.zeros((1, 1, q, have + q), dtype=dtype)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        pos = torch.tensor([depth], dtype=torch.long, device=self.device)
        keep = torch.tensor([last], dtype=torch.long, device=self.device)
        out, logits = self._forward(ids, mask.to(self.device), pos, self._make_cache(base, 1), keep)
        layers = self._cache_layers(out, have + q, 1)
        if layers is None:
            return None
        # Per request: the cached past, then its chain of trie tokens (right padding repeats 0).
        width = max(len(sq) for sq in seqs)
        index = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, at in enumerate(last):
            own = list(range(have)) + [have + j for j in chains[at]]
            index[b, : len(own)] = torch.tensor(own, dtype=torch.long)
        flat = index.reshape(-1).to(self.device)
        gathered = []
        for k, v in layers:
            heads, dim = k.shape[1], k.shape[3]
            gathered.append(tuple(t[0][:, flat, :].reshape(heads, len(seqs), width, dim).permute(1, 0, 2, 3).contiguous() for t in (k, v)))
        self._pool = _KVPool(layers=gathered, rows=list(seqs))
        return {k: self._to_numpy(self._log_softmax(logits[0, b], k)) for b, k in enumerate(keys)}

    def _base_from_pool(self, trunk: tuple[int, ...]) -> tuple[list[tuple[Any, Any]] | None, int]:
        """Best kept row cropped to its overlap with `trunk` (views, so the pool stays intact)."""
        if self._pool is None or not trunk:
            return None, 0
        row, length = self._pool.best_match(trunk)
        if length == 0:
            return None, 0
        return self._pool.slice(row, length), length

    def _extend(self, base: list[tuple[Any, Any]] | None, tokens: Sequence[int],
                past: int) -> list[tuple[Any, Any]] | None:
        """Feed trunk tokens once (batch 1) instead of once per request."""
        ids, _, positions = self._pad([tokens], past)
        keep = self._torch.tensor([[len(tokens) - 1]], dtype=self._torch.long, device=self.device)
        out, _ = self._forward(ids, None, positions, self._make_cache(base, 1), keep)
        return self._cache_layers(out, past + len(tokens), 1)

    def _make_cache(self, base: list[tuple[Any, Any]] | None, batch: int) -> Any:
        """A fresh DynamicCache holding `base` broadcast to `batch` rows.

        The layers hold expanded *views*; DynamicLayer.update concatenates into new tensors, so
        the kept states are never written and no extra copy is made before the forward's own.
        """
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        if base is None:
            return cache
        for keys, values in base:
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys = keys.expand(batch, -1, -1, -1)
            layer.values = values.expand(batch, -1, -1, -1)
            cache.layers.append(layer)
        return cache

    def _cache_layers(self, out: Any, length: int, batch: int) -> list[tuple[Any, Any]] | None:
        """K/V tensors of the returned cache, or None (and reuse off) if it is not plain attention."""
        from transformers.cache_utils import DynamicLayer

        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        layers: Any = getattr(cache, "layers", None)
        ok = bool(layers) and all(
            type(layer) is DynamicLayer and layer.keys is not None and layer.keys.dim() == 4
            and tuple(layer.keys.shape[:1]) == (batch,) and layer.keys.shape[2] == length
            for layer in layers
        )
        if not ok:
            self._reuse = False
            self._pool = None
            return None
        return [(layer.keys, layer.values) for layer in layers]


def _short(prefix: Any) -> str:
    """A prefix for an error message, shortened so huge prompts do not flood the log."""
    seq = list(prefix)
    return str(seq) if len(seq) <= 12 else f"[{', '.join(map(str, seq[:4]))}, ..., " \
        f"{', '.join(map(str, seq[-6:]))}] ({len(seq)} tokens)"

