"""Choosing each byte of an ensemble exactly without every member's whole distribution.

The full path (`EnsembleState`) asks every member for its exact next-byte distribution at every
byte: a validity check of every token at every fresh token prefix and about one model call per
byte per member. A *choice* needs much less. Each member's lazy engine (`ChoiceState`) bounds its
257 numerators: slot c holds ``known[c]``, plus at most ``unknown[c]`` (tokens whose validity is
undecided), plus some share of ``deferred`` (token prefixes whose row is not fetched; their mass
may land on any slot). Its probability ``p_i(c) = N(c) / Σ_d N(d)`` then lies in

    [ known[c] / (K + U + D - unknown[c]),  (known[c] + unknown[c] + D) / (K + unknown[c] + D) ]

(K, U: sums of ``known``, ``unknown``; D: ``deferred``), since x / (x + y) grows with x and
shrinks with y. A mixture ``Σ_i w_i p_i(c)`` and a product ``Π_i p_i(c) ** w_i`` are both
increasing in every ``p_i(c)``, so the member bounds give bounds on each slot's combined weight,
and those settle which slot the argmax, or the inverse CDF at a uniform number u, picks, by the
same rules as the single-model engine (rust/core/src/engine/lazy.rs). While they do not, the
member whose bounds are widest on the slots that can still win takes one refinement step (a
validity check, or the rows of its heaviest deferred token prefixes). When every member is
settled the bounds are the exact values, so the loop always ends with the byte the full
combination gives for the same u. tests/test_ensemble_choice.py checks exactly that;
benches/bench_generate.py (row "ensemble") measures what it bought.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._core import ZeroMassError
from .choice import ChoiceState
from .gateway import CallStats
from .sampling import EOS, N_SLOTS, SamplingConfig
from .spec import ByteSpec

__all__ = ["EnsembleChoice", "member_bounds", "decide"]


def member_bounds(known: np.ndarray, unknown: np.ndarray, deferred: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds on a member's 257 next-slot probabilities from its numerator bounds."""
    k_total, u_total = float(known.sum()), float(unknown.sum())
    top = known + unknown + deferred
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(known > 0, known / (k_total + u_total + deferred - unknown), 0.0)
        hi = np.where(top > 0, top / (k_total + unknown + deferred), 0.0)
    return np.minimum(lo, 1.0), np.minimum(hi, 1.0)


def decide(lo: np.ndarray, hi: np.ndarray, u: float | None, temperature: float) -> int | None:
    """The slot that the argmax (u None) or the inverse CDF at u of the weights raised to
    1/temperature picks for every weight vector between `lo` and `hi`, or None if that depends."""
    if u is None:
        a = int(np.argmax(lo))
        below = np.arange(N_SLOTS) < a
        beats = np.where(below, lo[a] > hi, lo[a] >= hi)
        beats[a] = True
        return a if bool(beats.all()) else None
    if temperature != 1.0:
        lo, hi = lo ** (1.0 / temperature), hi ** (1.0 / temperature)
    # Sequential sums, like numpy's choice: the settled case must reproduce it exactly.
    cum_lo, cum_hi = np.cumsum(lo), np.cumsum(hi)
    z_lo, z_hi = float(cum_lo[-1]), float(cum_hi[-1])
    if z_lo <= 0:
        return None
    b = min(int(np.searchsorted(cum_lo, u * z_lo, side="right")), EOS)
    hi_below = float(cum_hi[b - 1]) if b > 0 else 0.0
    return b if hi_below <= u * z_lo and u * z_hi < float(cum_lo[b]) else None


class EnsembleChoice:
    """Byte prefix of a mixture or product of `ByteLM`s from which the next byte is chosen
    (`choose`), then taken (`advance`); one lazy `ChoiceState` per member with positive weight.
    Always exact: the members' bounded-error tolerances are not used here."""

    def __init__(self, specs: Sequence[ByteSpec], weights: np.ndarray, mode: Literal["mixture", "product"], prefix: bytes) -> None:
        used = [i for i, w in enumerate(weights) if w > 0]
        self.weights = np.asarray([weights[i] for i in used], dtype=np.float64)
        self.mode = mode
        self.members: list[ChoiceState | None] = []
        for i in used:
            try:
                self.members.append(ChoiceState(specs[i], prefix))
            except ZeroMassError:
                self.members.append(None)
        # Each member's probability bounds, recomputed only for the member a refinement touched
        # (None: stale); every member's after `advance`.
        self._bounds: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.members)
        self._text = bytearray(prefix)

    def choose(self, cfg: SamplingConfig, rng: np.random.Generator) -> int:
        """The next slot (0-255 a byte, 256 EOS) that `cfg` picks from the exact combined
        distribution: greedy, or the inverse CDF at one uniform draw from `rng`."""
        if cfg.top_k is not None or cfg.top_p is not None:
            raise ValueError("top-k / top-p need the whole next-byte distribution: use Ensemble.state()")
        u = None if cfg.greedy else float(rng.random())
        while True:
            per_member = self._member_bounds()
            lo, hi = self._combined(per_member)
            b = decide(lo, hi, u, cfg.temperature if u is not None else 1.0)
            if b is not None:
                return b
            # Slots that can still be picked: all when sampling, else those that can beat the leader.
            focus = np.ones(N_SLOTS, dtype=bool) if u is not None else hi >= lo[int(np.argmax(lo))]
            widths = [-1.0 if m is None else w * float((mh - ml)[focus].sum()) for m, w, (ml, mh) in zip(self.members, self.weights, per_member)]
            i = int(np.argmax(widths))
            member = self.members[i]
            if member is None or not member.refine():
                raise RuntimeError("ensemble choice: bounds unsettled with every member settled (a bug)")
            self._bounds[i] = None

    def _member_bounds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each member's probability bounds; a member left with no mass at all is dropped."""
        for i, m in enumerate(self.members):
            if self._bounds[i] is not None:
                continue
            if m is not None:
                b = m.bounds()
                known, unknown = np.asarray(b.known), np.asarray(b.unknown)
                if known.sum() == 0 and unknown.sum() == 0 and b.deferred == 0:
                    self.members[i] = m = None  # it gives this prefix probability 0
            self._bounds[i] = (np.zeros(N_SLOTS), np.zeros(N_SLOTS)) if m is None else member_bounds(known, unknown, b.deferred)
        if all(m is None for m in self.members):
            raise ZeroMassError(f"every member of the ensemble gives the prefix {bytes(self._text)!r} probability 0")
        return [b for b in self._bounds if b is not None]

    def _combined(self, per_member: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        live = [i for i, m in enumerate(self.members) if m is not None]
        if self.mode == "mixture":
            w = self.weights[live] / self.weights[live].sum()  # dead members' weight goes to the rest
            lo = sum(wi * per_member[i][0] for wi, i in zip(w, live))
            hi = sum(wi * per_member[i][1] for wi, i in zip(w, live))
            return np.asarray(lo), np.minimum(np.asarray(hi), 1.0)
        if len(live) < len(self.members):
            raise ZeroMassError("a member of the product of experts gives this prefix probability 0")
        w = self.weights / self.weights.sum()
        lo = np.prod([pm[0] ** wi for pm, wi in zip(per_member, w)], axis=0)
        hi = np.prod([pm[1] ** wi for pm, wi in zip(per_member, w)], axis=0)
        return lo, hi

    def advance(self, byte: int) -> None:
        """Append `byte` (0-255) for every member; one that cannot produce it drops out."""
        for i, m in enumerate(self.members):
            if m is None:
                continue
            try:
                m.advance(byte)
            except ZeroMassError:
                self.members[i] = None
        self._bounds = [None] * len(self.members)
        self._text.append(byte)

    @property
    def text(self) -> bytes:
        """User bytes so far (prompt + advanced bytes)."""
        return bytes(self._text)

    @property
    def member_stats(self) -> list[CallStats | None]:
        """Each live member's call counts and times, ``None`` for members that dropped out."""
        return [m.stats if m is not None else None for m in self.members]

    @property
    def stats(self) -> CallStats:
        """The live members' costs, summed."""
        total = CallStats()
        for s in self.member_stats:
            if s is not None:
                total.add(s)
        return total
