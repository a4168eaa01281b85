"""Exact scoring of given texts from prefix probabilities (`score_texts`).

For a text x the byte-level model's prefix probability is P(x[:j]...) = the total probability of
the covers of x[:j] (Byte-Token Representation Lemma, docs/scoring.md). Scoring reports

* per byte j: ``log P(x[:j]...) - log P(x[:j+1]...)`` (the surprisal of byte j as the ratio of
  consecutive prefix probabilities; these telescope, so they sum to ``-log P(x...)``);
* ``prefix_logprob`` = log P(x...);
* ``logprob`` = log p(encode(x)) + log p(EOS | encode(x)) (the text, then end of text).

The Rust `PrefixScorer` needs, per valid token prefix along the text, one model row and the
validity of the tokens starting with the next byte only; rows are reduced to a few masses as they
arrive. The rows of every text in a call are fetched together, `batch` token prefixes per
gateway request (shortest first, so a backend with a prefix cache reuses each trunk; as many per
request as `ROW_BLOCK_BYTES` of rows allow, so the backend's forwards are large).

With ``per_byte=False`` only P(x...) and the end-of-text term are wanted: each scorer is asked for
the prefix probabilities at its window's two ends (`_core.PrefixScorer`'s ``at``), so its rows are
the canonical encoding's prefixes (what one forward computes) and the few token prefixes within a
token's length of those ends, and only those few need validity verdicts.

Long texts are scored in windows whose canonical encoding fits the model's context (see
`windows`): every byte is scored once, in the first window that contains it, and a window after
the first starts `overlap` bytes before the first byte it scores, so those bytes are context. A
byte scored in a later window is therefore conditioned on at most the `overlap` bytes before
its window's first scored byte (as if the text began there), not on the whole text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import _core
from .gateway import CallStats
from .spec import ByteSpec

__all__ = ["PrefixScore", "score_texts", "windows", "row_batch", "ROW_BLOCK_BYTES", "MIN_ROWS", "WINDOW_MARGIN"]

ROW_BLOCK_BYTES = 128 * 2**20
"""Float32 rows per gateway request when fetching the rows a batch of texts needs, in bytes
(682 token prefixes for SmolLM2's 49k ids), but never fewer than `MIN_ROWS` prefixes (Gemma-3's
262k ids: 256 prefixes, 256 MB).

Why large: a request's rows are computed in one tree-mask forward over their new tokens
(`bytecover.backends.hf`), and on a CPU a forward over a few tokens is bound by reading the
weights, one over hundreds of tokens by arithmetic. 16 prefixes per request (the first
setting) made the model part of scoring 4 KB of prose 58.5 s in 180 requests; 512 or more
per request 11-12 s in 3-6 requests, against 5.3 s for one plain forward over the text
(SmolLM2-135M, 2 cores, benches/results/score/). Why not larger: the dense tree mask makes a
forward's attention grow with its new tokens times its window; with 256 MB (1,365 SmolLM2
prefixes) the tree forwards of 4 KB of prose took 8.3-8.6 s, with 128 MB and the relocation
rule of `backends.hf.RELOCATE_RATIO` 6.7-7.5 s. Gemma-3 at 128 prefixes a request (128 MB)
took 19-20 s against 14-15 s at 256: its 262k-wide output layer wants larger forwards."""

MIN_ROWS = 256
"""Fewest token prefixes per request, whatever the vocabulary (see `ROW_BLOCK_BYTES`)."""


def row_batch(vocab_size: int) -> int:
    """Token prefixes per request for a model with `vocab_size` ids (`ROW_BLOCK_BYTES`)."""
    return max(MIN_ROWS, ROW_BLOCK_BYTES // (4 * max(1, vocab_size)))

WINDOW_MARGIN = 16
"""Tokens kept free below the context length in a window: token prefixes along a text can be a
few tokens longer than its canonical encoding (e.g. a space run spelled one space at a time)."""


@dataclass
class PrefixScore:
    """What `score_texts` returns for one text (natural logs)."""

    log_prefix: np.ndarray
    """``log_prefix[j]`` = log P(the text starts with its first j bytes), j = 0..len (with
    windows: the sum of the per-window ratios up to j). With ``per_byte=False`` only at 0 and at
    the windows' ends; NaN elsewhere."""
    logprob: float
    """log P(text, then end of text): log p(encode(x)) + log p(EOS | encode(x)) in one window;
    with windows, log P(x...) plus the last window's log P(EOS | its text)."""
    canonical_logprob: float
    """log p(encode(x)) of the last window's text (the whole text when there is one window)."""
    windows: int
    """Windows the text was scored in (1 when it fits the model's context)."""
    rows: int
    """Model rows the text needed (over all windows)."""
    nodes: int
    """Valid token prefixes along the text (rows are needed for those that have a valid next token)."""


def windows(spec: ByteSpec, data: bytes, *, max_tokens: int | None = None, overlap: int = 1024) -> list[tuple[int, int, int]]:
    """Windows ``(context_start, score_start, end)`` over `data`: bytes ``[score_start, end)`` are
    scored on the text ``data[context_start:end]``; consecutive windows' scored parts tile `data`.
    A window's canonical encoding stays `WINDOW_MARGIN` tokens below `max_tokens` (default: the
    model's context length less its fixed context); `overlap` bytes of context are kept before
    each later window, at most half a window's worth."""
    limit = max_tokens if max_tokens is not None else spec.max_prompt_tokens
    if limit is None:
        return [(0, 0, len(data))]
    budget = limit - spec.context_len - WINDOW_MARGIN
    if budget < 8:
        raise ValueError(f"the model's context ({limit} tokens) leaves no room to score text in windows")
    core = spec.core
    if len(core.encode(data)) <= budget:
        return [(0, 0, len(data))]
    out: list[tuple[int, int, int]] = []
    start = ctx = 0
    while start < len(data):
        # The longest end whose window fits, by bisection on the byte length (encoding grows
        # monotonically with the text's length, up to a token or two at the cut).
        lo, hi = start + 1, len(data)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(core.encode(data[ctx:mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        end = lo
        out.append((ctx, start, end))
        if end >= len(data):
            break
        start = end
        ctx = max(start - min(overlap, (end - ctx) // 2), 0)
    return out


def score_texts(spec: ByteSpec, texts: Sequence[bytes], *, stats: CallStats | None = None, batch: int | None = None,
                max_tokens: int | None = None, overlap: int = 1024, threads: int | None = None,
                progress: Callable[[int], None] | None = None, per_byte: bool = True) -> list[PrefixScore]:
    """Exact prefix probabilities of each text (see the module doc). The rows of all texts (all
    their windows) are fetched together through the gateway, `batch` token prefixes per request.
    `batch=None` takes `row_batch` of the model's vocabulary. `progress(k)` is called as k more
    rows have been provided. `per_byte=False`: only at the windows' ends (module doc)."""
    stats = stats if stats is not None else CallStats()
    batch = batch if batch is not None else row_batch(spec.gateway.vocab_size)
    plans: list[list[tuple[int, int, int]]] = []
    scorers: list[_core.PrefixScorer] = []
    for t, data in enumerate(texts):
        for s in spec.special_texts:
            if s in data:
                raise ValueError(f"the text contains the special-token text {s.decode(errors='replace')!r}, which the tokenizer "
                                 "turns into a control token with no bytes; remove it before scoring")
        plan = windows(spec, data, max_tokens=max_tokens, overlap=overlap)
        plans.append(plan)
        for ctx, start, end in plan:
            ends = None if per_byte else [start - ctx, end - ctx]  # the offsets whose P(x[:m]...) are wanted
            with stats.engine_time():
                scorers.append(_core.PrefixScorer(spec.core, data[ctx:end], list(spec.eos_ids), threads=threads, at=ends))
    # Every scorer's requests, shortest first across texts (shared trunks are fed once).
    wanted: list[tuple[int, int, tuple[int, ...]]] = []
    for i, sc in enumerate(scorers):
        wanted.extend((i, r.node, tuple(r.tokens)) for r in sc.requests())
    wanted.sort(key=lambda w: (len(w[2]), w[2]))
    rows_per_scorer = [0] * len(scorers)
    for k in range(0, len(wanted), batch):
        chunk = wanted[k : k + batch]
        distinct = list(dict.fromkeys(w[2] for w in chunk))
        block = spec.gateway.rows(distinct, stats)
        at = {p: j for j, p in enumerate(distinct)}
        by_scorer: dict[int, list[tuple[int, int]]] = {}
        for i, node, p in chunk:
            by_scorer.setdefault(i, []).append((node, at[p]))
        with stats.engine_time():
            for i, pairs in by_scorer.items():
                picked = _rows_at(block, [j for _, j in pairs])
                scorers[i].provide_rows([n for n, _ in pairs], picked)
                rows_per_scorer[i] += len(pairs)
        if progress is not None:
            progress(len(chunk))
    out: list[PrefixScore] = []
    at_scorer = 0
    for t, data in enumerate(texts):
        plan = plans[t]
        log_prefix = np.zeros(len(data) + 1) if per_byte else np.full(len(data) + 1, np.nan)
        log_prefix[0] = 0.0
        logprob = canonical = 0.0
        nodes = 0
        for w, (ctx, start, end) in enumerate(plan):
            sc = scorers[at_scorer]
            at_scorer += 1
            res = sc.result()
            lp = np.asarray(res.log_prefix)  # offsets relative to ctx
            if per_byte:
                # Scored bytes [start, end): ratios of consecutive prefix probabilities in this window.
                ratios = np.diff(lp[start - ctx :])
                log_prefix[start + 1 : end + 1] = log_prefix[start] + np.cumsum(ratios)
            else:
                log_prefix[end] = log_prefix[start] + lp[end - ctx] - lp[start - ctx]
            if w == len(plan) - 1:
                logprob = float(log_prefix[-1] + (res.log_eos - lp[-1])) if math.isfinite(res.log_eos) else -math.inf
                canonical = float(res.log_canonical)
            nodes += sc.n_nodes
        rows = sum(rows_per_scorer[i] for i in range(at_scorer - len(plan), at_scorer))
        out.append(PrefixScore(log_prefix=log_prefix, logprob=logprob, canonical_logprob=canonical, windows=len(plan), rows=rows, nodes=nodes))
    return out


def _rows_at(block: np.ndarray, at: list[int]) -> np.ndarray:
    """``block[at]`` as a C-contiguous array; a view when `at` is a run of consecutive rows (one
    text per call), not a copy of a block that can be 268 MB."""
    if at and at == list(range(at[0], at[0] + len(at))) and block.flags.c_contiguous:
        return block[at[0] : at[0] + len(at)]
    return np.ascontiguousarray(block[at])
