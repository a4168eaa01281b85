"""Answering a `CoverEngine`'s requests (next-token rows and sequence probabilities) through the
gateway. The three ways differ only in what they fetch: everything the step needs, the
probabilities of the groups relative to the trunk they share (drawing a cover, lazy choice), or
the rows a lazy decision is waiting for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _core
from .gateway import CallStats, ModelGateway
from .token_seqs import Prefix, shared_prefix_len, tail_logprobs, tail_prefixes

__all__ = ["answer_all", "answer_relative", "answer_pending"]


def answer_all(engine: _core.CoverEngine, gateway: ModelGateway, stats: CallStats, row_cache: Mapping[Prefix, np.ndarray] | None = None) -> None:
    """Everything the current step needs: sequence scores, then rows in one request (or from
    `row_cache` when it holds all of them)."""
    req = engine.requests()
    if req.scores:
        values = gateway.shared_trunk_logprob([list(r.tokens) for r in req.scores], stats)
        stats.scores += len(req.scores)
        engine.provide_scores([r.node for r in req.scores], [float(v) for v in values])
    if req.rows:
        keys = [tuple(r.tokens) for r in req.rows]
        if row_cache is not None and all(k in row_cache for k in keys):
            block = np.stack([row_cache[k] for k in keys])
            stats.rows += len(keys)
        else:
            block = gateway.rows(keys, stats)
        with stats.engine_time():
            engine.provide_rows([r.node for r in req.rows], np.ascontiguousarray(block))


def answer_relative(engine: _core.CoverEngine, gateway: ModelGateway, stats: CallStats, *, exact_rows: bool) -> None:
    """Scores of the engine's groups and their rows (those spelling the text exactly only if
    `exact_rows`) in one request. The scores are *relative to the trunk all groups share*, from
    rows after that trunk: the prompt is fed once, on the prefix cache, and the shared factor
    cancels in every choice made from them. Afterwards the engine's next-byte probabilities are
    right, but its log P(prefix...) is relative to that trunk."""
    req = engine.requests()
    rows = list(req.rows)
    # Rows of groups spelling the text exactly are fetched either way (in a tree-mask forward
    # they cost one token each): token decoding after such a cover starts from that row.
    fetch_only = {tuple(r.tokens) for r in rows}
    if not exact_rows:
        n = len(engine.text)
        exact = {g.node for g in engine.groups() if g.end == n}
        rows = [r for r in rows if r.node not in exact]
    score_seqs: Sequence[list[int]] = [list(r.tokens) for r in req.scores]
    # The trunk every group shares (groups whose probability is already known included, so
    # that all of them are relative to the same thing).
    trunk = shared_prefix_len([list(engine.tokens(g.node)) for g in engine.groups()]) if score_seqs else 0
    needed = tail_prefixes(score_seqs, trunk) | fetch_only
    if not needed:
        return
    fetched = gateway.rows_by_prefix(needed, stats, batch=len(needed))  # one request
    if req.scores:
        stats.scores += len(req.scores)
        engine.provide_scores([r.node for r in req.scores], tail_logprobs(fetched, score_seqs, trunk))
    if rows:
        with stats.engine_time():
            engine.provide_rows([r.node for r in rows], np.ascontiguousarray(np.stack([fetched[tuple(r.tokens)] for r in rows])))


def answer_pending(engine: _core.CoverEngine, gateway: ModelGateway, stats: CallStats) -> None:
    """The rows a lazy engine's last `decide`/`refine` asked for, with speculative rows along a
    draft in the same request."""
    pending = engine.pending()
    block = gateway.rows([r.tokens for r in pending], stats, draft_ahead=True)
    with stats.engine_time():
        engine.provide_rows([r.node for r in pending], np.ascontiguousarray(block))
