"""How byte-level ensembles combine their members' next-byte distributions: pure functions on
257-slot natural-log rows (bytes 0-255, then EOS). The conventions for zero probabilities are in
`bytecover.ensemble`'s module doc."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._core import ZeroMassError
from .sampling import N_SLOTS

__all__ = ["mixture_logprobs", "product_logprobs", "proxy_logprobs"]


def _normalise(scores: np.ndarray, what: str) -> np.ndarray:
    m = float(np.max(scores))
    if not math.isfinite(m):
        raise ZeroMassError(f"the {what} gives probability 0 to every next byte and to end-of-text")
    return scores - (m + math.log(float(np.sum(np.exp(scores - m)))))


def _check_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    block = np.asarray(np.stack([np.asarray(r, dtype=np.float64) for r in rows]), dtype=np.float64)
    if block.ndim != 2 or block.shape[1] != N_SLOTS:
        raise ValueError(f"expected rows of {N_SLOTS} log-probabilities, got shape {block.shape}")
    if np.isnan(block).any() or (block == np.inf).any():
        raise ValueError("member distributions must not contain NaN or +inf")
    return block


def mixture_logprobs(rows: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """``log Σ_i w_i p_i`` renormalised (weights need not sum to 1; all-``-inf`` rows drop out)."""
    block = _check_rows(rows)
    w = np.asarray(weights, dtype=np.float64)
    live = (w > 0) & np.isfinite(block).any(axis=1)
    if not live.any():
        raise ZeroMassError("every member of the mixture gives this prefix probability 0")
    terms = block[live] + np.log(w[live])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        combined = np.logaddexp.reduce(terms, axis=0)
    return _normalise(combined, "mixture")


def product_logprobs(rows: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """``Σ_i w_i log p_i`` renormalised; members with weight 0 are skipped (no ``0 · -inf``)."""
    block = _check_rows(rows)
    w = np.asarray(weights, dtype=np.float64)
    used = w > 0
    if not used.any():
        raise ValueError("at least one weight must be positive")
    combined = np.sum(block[used] * w[used][:, None], axis=0)
    return _normalise(combined, "product of experts")


def proxy_logprobs(base: np.ndarray, expert: np.ndarray, anti_expert: np.ndarray, alpha: float) -> np.ndarray:
    """``log p_base + alpha · (log p_expert - log p_anti)`` renormalised (module doc: ``-inf`` rules)."""
    b, e, a = _check_rows([base, expert, anti_expert])
    if alpha == 0:
        return _normalise(b.copy(), "proxy-tuned model")
    e_fin, a_fin = np.isfinite(e), np.isfinite(a)
    # Finite part of the tuning term: each side counts where it is finite (0 stands in elsewhere).
    finite_part = alpha * (np.where(e_fin, e, 0.0) - np.where(a_fin, a, 0.0))
    # Direction of an infinite term: +1 when alpha·(log e - log a) -> +inf, -1 when -> -inf.
    direction = np.zeros(N_SLOTS)
    direction[e_fin & ~a_fin] = math.copysign(1.0, alpha)
    direction[~e_fin & a_fin] = -math.copysign(1.0, alpha)
    possible = np.isfinite(b) & (direction >= 0)
    winners = possible & (direction > 0)
    keep = winners if winners.any() else possible
    scores = np.where(keep, b + finite_part, -np.inf)
    return _normalise(scores, "proxy-tuned model")
