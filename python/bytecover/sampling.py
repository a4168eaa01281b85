"""Choosing one byte from a 257-slot distribution (256 bytes + EOS).

Controls act on the byte distribution itself: temperature rescales log-probabilities, top-k and
top-p keep the most likely slots, temperature 0 is greedy. A seeded ``numpy`` generator makes a
run reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EOS = 256
"""Index of the end-of-text slot in every byte distribution."""

N_SLOTS = EOS + 1
"""Slots of a next-byte distribution: the 256 bytes, then end of text."""


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or not np.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def warp(logprobs: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """The normalised log-distribution that `cfg` samples from (greedy: one-hot argmax)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if cfg.greedy:
        out = np.full_like(lp, -np.inf)
        out[int(np.argmax(lp))] = 0.0
        return out
    lp = lp / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < lp.size:
        kth = np.partition(lp, -cfg.top_k)[-cfg.top_k]
        lp = np.where(lp >= kth, lp, -np.inf)
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-lp, kind="stable")
        p = np.exp(lp[order] - np.logaddexp.reduce(lp))
        # Keep the smallest set of most likely slots whose mass reaches top_p.
        keep = int(np.searchsorted(np.cumsum(p), cfg.top_p) + 1)
        mask = np.full(lp.shape, -np.inf)
        mask[order[:keep]] = 0.0
        lp = lp + mask
    return lp - np.logaddexp.reduce(lp)


def sample(logprobs: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """One slot index (0-255 a byte, 256 EOS)."""
    lp = warp(logprobs, cfg)
    if cfg.greedy:
        return int(np.argmax(lp))
    p = np.exp(lp)
    return int(rng.choice(p.size, p=p / p.sum()))
