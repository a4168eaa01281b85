"""A transformers causal LM as a `TokenLM`.

During byte-by-byte decoding the engine asks for rows of a handful of token prefixes that share a
long, slowly growing trunk, so `HFTokenLM` keeps the key/value cache of recent sequences and only
feeds the tokens it has not seen yet. See docs/design.md ("Token LM protocol").
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tokenizer_support import detect_start_ids
from .fast_linear import FastLinears
from .kv_arena import KVArena, tree_mask
from .protocol import TokenLMBase
from .radix_tree import RadixNode, RadixTree
from .row_memo import ComputedRows, RowMemo

__all__ = ["HFTokenLM"]


class HFTokenLM(TokenLMBase):
    """A transformers causal LM as a `TokenLM`, with a prefix (radix) K/V cache across calls.

    Cache strategy: the keys/values of every token fed are kept in an arena (`kv_arena`), and a
    token trie (`radix_tree`) says which prefix each slot belongs to. A call looks up the
    longest cached prefix of every request, lays the remaining tokens of all requests out as
    one sequence (each distinct token once) and runs one forward in which every token attends
    to the slots of its own cached prefix and its own ancestors (a tree mask; positions are
    depths). So requests from many trunks (many sequences, many covers) cost one forward that
    feeds only their new tokens. The arena has a memory budget (`kv_budget_mb`); the least
    recently used prefixes are evicted when it is full. Rows of recent calls are also
    memoised by prefix, so repeated requests cost nothing. `cache_stats()` reports hits.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any | None = None,
        *,
        bos_ids: Sequence[int] | None = None,
        vocab_size: int | None = None,
        memo_size: int = 64,
        cache_reuse: bool | None = None,
        max_batch_tokens: int | None = None,
        kv_budget_mb: float = 1024.0,
        max_tree_tokens: int = 2048,
        fast_linear: bool = True,
    ) -> None:
        """Wrap `model` (put in eval mode: dropout would make rows random).

        `bos_ids` overrides the start tokens found from `tokenizer`; `vocab_size` overrides
        `len(tokenizer)`.  `cache_reuse=None` enables the prefix cache for attention-only models.
        `max_batch_tokens` bounds padded tokens per uncached forward.  `kv_budget_mb` bounds the
        prefix cache's memory; `max_tree_tokens` the new tokens of one forward (a batch whose
        requests need more, such as many fresh prompts, is fed in several forwards).
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
        self.max_batch_tokens = int(max_batch_tokens or max(64, 2**26 // self.n_logits))
        self._memo = RowMemo(memo_size, self.vocab_size)
        self.fast_linears: FastLinears | None = FastLinears(model) if fast_linear else None
        """Linear layers swapped to ``W @ x.T`` during our forwards (None: torch's own path)."""
        self.max_tree_tokens = int(max_tree_tokens)
        self.kv_budget_bytes = int(kv_budget_mb * 2**20)
        self._radix = RadixTree()
        self._arena: KVArena | None = None
        self._hits = _CacheCounters()
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
        """The prefix cache needs plain attention layers (keys/values kept per token are exact
        only there)."""
        if "cache" not in self._forward_params and "past_key_values" not in self._forward_params:
            return False
        layer_types = getattr(self._text_config(), "layer_types", None) or []
        return all(t in ("full_attention", "sliding_attention") for t in layer_types)

    # ----------------------------------------------------------------- public API
    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        """Next-token log-probabilities (float32) after start tokens + each prefix."""
        return self._memo.rows([self._key(p) for p in prefixes], self._compute_rows)

    @property
    def keeps_rows(self) -> bool:  # type: ignore[override]
        return self._memo.size > 0

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
        self._radix.clear()
        self._arena = None
        self._memo.clear()

    # ----------------------------------------------------------------- helpers
    def _key(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """Prefix as a hashable tuple, rejecting ids outside the tokenizer's range early."""
        # map/min/max run in C: a scoring request hands over 1.8 M token ids (2,883 prefixes of
        # 4 KB of prose), and a generator with a check per id took 0.7 s of it.
        key = tuple(map(int, prefix))
        if key and (min(key) < 0 or max(key) >= self.vocab_size):
            bad = next(t for t in key if not 0 <= t < self.vocab_size)
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return key

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
        """Trim padding columns, upcast to float32, refuse NaN/+inf (a broken model, not a 0).
        `what` names the prefix of a single row, or is a list naming each row of a 2-D block."""
        torch = self._torch
        if logits.shape[-1] < self.vocab_size:
            raise ValueError(f"model returned {logits.shape[-1]} logits but the tokenizer has "
                             f"{self.vocab_size} ids")
        logits = logits[..., : self.vocab_size].float()
        rows = torch.log_softmax(logits, dim=-1)
        # One pass over the rows finds every bad one: a NaN or +inf logit, or all logits -inf,
        # make the row's log-softmax NaN, and a NaN makes its sum NaN (-inf entries only make it
        # -inf). Checking the logits and the rows element by element (four passes and two bool
        # blocks) took 0.6 s of a 2,883-row scoring request (SmolLM2, 2 cores).
        bad = torch.isnan(rows.sum(dim=-1))
        if bool(bad.any()):
            broken = torch.isnan(logits) | torch.isposinf(logits)
            if bool(broken.any()):
                raise FloatingPointError(f"model produced NaN/inf logits for prefix {_short(_culprit(what, broken))}")
            raise FloatingPointError(f"all logits are -inf for prefix {_short(_culprit(what, torch.isnan(rows)))}")
        return rows

    def _full(self, key: tuple[int, ...]) -> tuple[int, ...]:
        """Start tokens + prefix; an empty result has no next-token distribution at all."""
        seq = tuple(self.start_ids) + key
        if not seq:
            raise ValueError("empty prefix on a model without start tokens has no distribution; "
                             "pass bos_ids=[...] (e.g. the EOS id) to HFTokenLM")
        return seq

    def _compute_rows(self, keys: list[tuple[int, ...]]) -> ComputedRows:
        """Rows for distinct, not memoised prefixes, in the order of `keys`."""
        seqs = [self._full(k) for k in keys]
        if self._reuse:
            block = self._arena_rows(seqs, keys)
            if block is not None:
                return ComputedRows(keys, block)
        out = np.empty((len(keys), self.vocab_size), dtype=np.float32)
        for group in self._length_groups(list(range(len(seqs))), lambda i: len(seqs[i])):
            logits = self._plain_forward([seqs[i] for i in group], keep_all=False)
            out[group] = self._to_numpy(self._log_softmax(logits[:, 0], [keys[i] for i in group]))
        return ComputedRows(keys, out)

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

    # ----------------------------------------------------------------- prefix cache
    def cache_stats(self) -> dict[str, Any]:
        """Prefix-cache counters: tokens asked for, found cached, fed; slots, bytes, evictions."""
        arena = self._arena
        return {
            **vars(self._hits),
            "hit_rate": self._hits.tokens_cached / max(1, self._hits.tokens_requested),
            "nodes": self._radix.size,
            "slots_used": arena.used if arena else 0,
            "capacity": arena.capacity if arena else 0,
            "bytes": arena.nbytes() if arena else 0,
            "budget_bytes": self.kv_budget_bytes,
        }

    def _arena_for(self) -> KVArena:
        if self._arena is None:
            self._arena = KVArena(len(self._attention_layer_types()), max(1, self.kv_budget_bytes // self._bytes_per_token()))
        return self._arena

    def _text_config(self) -> Any:
        config: Any = getattr(self.model, "config", None)
        return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config

    def _attention_layer_types(self) -> list[str]:
        cfg = self._text_config()
        types = getattr(cfg, "layer_types", None)
        return list(types) if types else ["full_attention"] * int(cfg.num_hidden_layers)

    def _bytes_per_token(self) -> int:
        """Keys + values of one token over all layers, from the config (the arena's size)."""
        cfg = self._text_config()
        heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        size = self.model.get_input_embeddings().weight.element_size()
        return len(self._attention_layer_types()) * 2 * heads * dim * size

    def _window(self) -> int | None:
        """The sliding window of a model whose layers all slide (no `layer_types`), else None."""
        cfg = self._text_config()
        window = getattr(cfg, "sliding_window", None)
        if window is None or getattr(cfg, "layer_types", None) or not getattr(cfg, "use_sliding_window", True):
            return None
        return int(window)

    def _masks(self, visible: np.ndarray, query_depth: np.ndarray, key_depth: np.ndarray) -> Any:
        """The tree mask as the model takes it: per layer type where the config has layer types
        (full and sliding layers see different keys), else one mask (windowed when every layer
        slides). A 4-D mask is used as given, so the window has to be in it."""
        dtype = self.model.get_input_embeddings().weight.dtype
        cfg = self._text_config()
        if getattr(cfg, "layer_types", None):
            window = getattr(cfg, "sliding_window", None)
            return {t: tree_mask(visible, query_depth, key_depth, int(window) if t == "sliding_attention" and window else None, dtype, self.device)
                    for t in set(cfg.layer_types)}
        return tree_mask(visible, query_depth, key_depth, self._window(), dtype, self.device)

    def _arena_rows(self, seqs: list[tuple[int, ...]], keys: list[tuple[int, ...]]) -> np.ndarray | None:
        """Rows (in the order of `keys`) via the prefix cache, one forward per `max_tree_tokens`
        new tokens (one forward in the steady state); None when the model's cache turned out
        not usable this way."""
        blocks: list[np.ndarray] = []
        done = 0
        while done < len(seqs):
            plan = _TreeBatch.build(self._radix, seqs[done:], self.max_tree_tokens)
            if plan.q > self._arena_for().capacity // 2:
                return None  # too long to cache: the caller runs plain forwards
            logits = self._tree_forward(plan)
            if logits is None:
                return None
            # One log-softmax and one copy for the whole block: per row, the calls cost ~1 s of
            # the 12 s a 2,874-row scoring request took (SmolLM2, 2 cores).
            taken = keys[done : done + plan.n_requests]
            blocks.append(self._to_numpy(self._log_softmax(logits[0, : len(taken)], taken)))
            done += plan.n_requests
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def _tree_forward(self, plan: _TreeBatch) -> Any:
        """One forward feeding `plan`'s new tokens over the arena; the new states join the tree."""
        torch = self._torch
        arena = self._arena_for()
        self._hits.tokens_requested += plan.tokens_requested
        self._hits.tokens_cached += plan.tokens_matched
        paths = {b: self._radix.path(node) for b, node in plan.bases.items()}
        if not self._make_room(plan.q, paths):
            return None
        slots = {b: np.fromiter((n.slot for n in p), dtype=np.int64, count=len(p)) for b, p in paths.items()}
        start = min((int(s.min()) for s in slots.values() if len(s)), default=arena.used)
        used, q = arena.used, plan.q
        width = used - start
        visible = np.zeros((q, width + q), dtype=bool)
        for b, js in plan.by_base().items():
            if len(slots[b]):
                visible[np.ix_(js, slots[b] - start)] = True
        for j, parent in enumerate(plan.parent):  # parents come first: copy their chain, add self
            if parent >= 0:
                visible[j, width:] = visible[parent, width:]
            visible[j, width + j] = True
        depth = np.asarray(plan.depth, dtype=np.int64)
        key_depth = np.concatenate([arena.depth[start:used], depth])
        ids = torch.tensor([plan.tokens], dtype=torch.long, device=self.device)
        pos = torch.tensor([plan.depth], dtype=torch.long, device=self.device)
        keep = torch.tensor([plan.last], dtype=torch.long, device=self.device)
        # Tried and dropped (2026-12-02): stacking each key/value group's query heads so that
        # transformers' SDPA skips its per-head copies of the window's keys/values (`repeat_kv`,
        # taken whenever q > 1): 16 FIM tasks on Qwen2.5-Coder-0.5B at batch 16 took 65.6 s with
        # it and 62.7 s without; the copies are not where a batched step's time goes.
        out, logits = self._forward(ids, self._masks(visible, depth, key_depth), pos, arena.cache(start), keep)
        if not all(layer is mine for layer, mine in zip(getattr(out.past_key_values, "layers", []), arena.layers)):
            self._reuse = False  # the model swapped our cache layers for its own: not plain attention
            self.reset_cache()
            return None
        arena.commit(depth)
        plan.insert(self._radix, used)
        self._hits.tokens_fed += q
        return logits

    def _make_room(self, q: int, paths: dict[int, list[RadixNode]]) -> bool:
        """Keep the attention window near what the batch reads and `q` free slots at the end:
        move the batch's slots to the end when attending to the window's stale slots would cost
        more than the move (`RELOCATE_RATIO`); compact (evicting the least recently used
        prefixes if needed) when the arena is full. False when the batch's own prefixes and new
        tokens do not fit in the arena at all."""
        arena = self._arena_for()
        hot = {id(n): n for p in paths.values() for n in p}
        if len(hot) + q > arena.capacity:
            return False
        start = min((n.slot for n in hot.values()), default=arena.used)
        fits = arena.used + q <= arena.capacity
        stale = arena.used - start - len(hot)
        if fits and stale * q <= RELOCATE_RATIO * len(hot):
            return True
        if arena.used + len(hot) + q <= arena.capacity:
            nodes = sorted(hot.values(), key=lambda n: n.slot)
            arena.move(np.fromiter((n.slot for n in nodes), dtype=np.int64, count=len(nodes)), arena.used)
            for i, n in enumerate(nodes):
                n.slot = arena.used + i
            arena.used += len(nodes)
            self._hits.relocations += 1
            return True
        keep = (3 * arena.capacity) // 4 - q
        if self._radix.size > keep:
            self._hits.evicted += self._radix.evict(self._radix.size - max(keep, len(hot)), before=self._radix.clock)
        nodes = sorted(self._radix.nodes(), key=lambda n: (n.stamp, n.slot))  # the batch's (newest) last
        arena.move(np.fromiter((n.slot for n in nodes), dtype=np.int64, count=len(nodes)), 0)
        for i, n in enumerate(nodes):
            n.slot = i
        arena.used = len(nodes)
        self._hits.compactions += 1
        return True


RELOCATE_RATIO = 16
"""The batch's slots are moved together to the end of the arena when (stale slots in its
attention window) x (new tokens) exceeds this many times the slots it reads. A move copies the
keys/values of every slot read (~9 us a slot for SmolLM2, 30 layers); a stale slot costs
attention for every new token (~0.5 us a query-key pair over all layers with the dense tree
mask; benches/bench_score.py, 2 CPU cores), so the break-even is ~17. The rule it replaced
(window over twice the slots read plus 256) ignored the number of new tokens: scoring 4 KB of
prose fed 1,365 new tokens over a window of 1,365 slots of which about half were other
branches, and its attention ran over 5.8 M query-key pairs a layer; with this rule and 682 rows
a request (`prefix_scoring.ROW_BLOCK_BYTES`), 3.3 M and 1.7-1.9 s instead of 3.1-3.3 s of
attention.
For a decoding step (16 new tokens) the two rules nearly agree."""


@dataclass
class _CacheCounters:
    tokens_requested: int = 0
    tokens_cached: int = 0
    tokens_fed: int = 0
    evicted: int = 0
    relocations: int = 0
    compactions: int = 0


@dataclass
class _TreeBatch:
    """The new tokens of a batch of requests laid out as one sequence: each distinct (cached
    prefix, continuation) once, parents before children."""

    bases: dict[int, RadixNode]  # id -> deepest cached node a request continues
    tokens: list[int]
    depth: list[int]
    parent: list[int]  # index of the new token before this one, -1: it continues its base
    base_of: list[int]  # id of the base node of each new token
    last: list[int]  # per request: index of its last token (whose logits are its row)
    n_requests: int
    tokens_requested: int
    tokens_matched: int  # found in the cache before this batch

    @property
    def q(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, tree: RadixTree, seqs: list[tuple[int, ...]], limit: int) -> _TreeBatch:
        """Requests from the start of `seqs` while their new tokens fit in `limit` (at least one
        request)."""
        tree.tick()
        plan = cls({}, [], [], [], [], [], 0, 0, 0)
        # A new token is identified by (base node, index of the new token before it or -1,
        # token): linear in a request's length. Keying by the whole continuation (tried first)
        # hashed O(length^2) tokens per request: 11 s of Python for the 2,874 token prefixes
        # of 4 KB of prose scored in one request.
        index: dict[tuple[int, int, int], int] = {}
        # Per request laid out: its match in the tree and (base, index of its last new token).
        # Scoring asks for thousands of prefixes, each one token longer than one asked before
        # it (shortest first): starting from that parent's entry skips walking the tree and the
        # index token by token (1.8 M steps, 1.3 s of Python for 4 KB of prose, SmolLM2).
        seen: dict[tuple[int, ...], tuple[RadixNode, int, int, int]] = {}
        for seq in seqs:
            parent_entry = seen.get(seq[:-1]) if len(seq) > 1 else None
            if parent_entry is None:
                matched, m_seq = tree.match(seq)
            else:
                matched, m_seq = parent_entry[0], parent_entry[1]
                if m_seq == len(seq) - 1 and (child := matched.children.get(seq[-1])) is not None:
                    matched, m_seq = child, m_seq + 1
            node, m = matched, m_seq
            if m == len(seq):  # cached, but its row is not: feed the last token again
                assert node.parent is not None
                node, m = node.parent, m - 1
            base = id(node)
            at, d = -1, m
            if parent_entry is not None and parent_entry[2] == base and m < len(seq) - 1:
                at, d = parent_entry[3], len(seq) - 1  # the parent's chain ends where ours goes on
            while d < len(seq) and (j := index.get((base, at, seq[d]))) is not None:
                at, d = j, d + 1
            if plan.n_requests and plan.q + len(seq) - d > limit:
                break
            plan.bases[base] = node
            for d in range(d, len(seq)):
                j = index[(base, at, seq[d])] = plan.q
                plan.tokens.append(seq[d])
                plan.depth.append(d)
                plan.parent.append(at)
                plan.base_of.append(base)
                at = j
            plan.last.append(at)
            seen[seq] = (matched, m_seq, base, at)
            plan.n_requests += 1
            plan.tokens_requested += len(seq)
            plan.tokens_matched += m
        return plan

    def by_base(self) -> dict[int, np.ndarray]:
        groups: dict[int, list[int]] = {}
        for j, b in enumerate(self.base_of):
            groups.setdefault(b, []).append(j)
        return {b: np.asarray(js, dtype=np.int64) for b, js in groups.items()}

    def insert(self, tree: RadixTree, first_slot: int) -> None:
        """Record the new tokens in the tree: token j's states are at slot `first_slot + j`."""
        made: list[RadixNode] = []
        for j, tok in enumerate(self.tokens):
            parent = made[self.parent[j]] if self.parent[j] >= 0 else self.bases[self.base_of[j]]
            made.append(tree.add(parent, tok, first_slot + j))


def _culprit(what: Any, bad: Any) -> Any:
    """The prefix of the first bad row: `what` itself for one row, its entry for a block."""
    if isinstance(what, list) and bad.dim() == 2:
        return what[int(bad.any(dim=-1).nonzero()[0, 0])]
    return what


def _short(prefix: Any) -> str:
    """A prefix for an error message, shortened so huge prompts do not flood the log."""
    seq = list(prefix)
    return str(seq) if len(seq) <= 12 else f"[{', '.join(map(str, seq[:4]))}, ..., " \
        f"{', '.join(map(str, seq[-6:]))}] ({len(seq)} tokens)"

