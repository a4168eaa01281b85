"""Byte-level ensembles of models whose tokenizers differ.

Every `ByteModel` speaks the same alphabet: 256 bytes plus end-of-text (slot 256). So models with
unrelated vocabularies can be combined one byte at a time:

* `Ensemble(lms, weights, mode="mixture")`: ``p(b | x) = Σ_i w_i p_i(b | x)`` (weights
  normalised to sum to 1);
* `Ensemble(lms, weights, mode="product")`: ``p(b | x) ∝ Π_i p_i(b | x) ** w_i`` (a weighted
  geometric mean: weights normalised too, so an ensemble of identical members is that member);
* `ProxyTuned(base, expert, anti_expert, alpha)`: ``p(b | x) ∝ p_base(b | x) ·
  (p_expert(b | x) / p_anti(b | x)) ** alpha`` (proxy tuning, Liu et al. 2024, in bytes).

The combined state keeps one state per member. ``distribution()`` asks every member for its own
exact next-byte distribution (each member makes its own batched model call, on whatever device
its model lives) and combines them; ``advance(b)`` advances every member on the same byte.
`Ensemble` and `ProxyTuned` are `ByteModel`s, so ``generate``, ``stream``, ``score`` and
``next_byte_logprobs`` work unchanged.

Zero probabilities (``-inf`` log-probabilities) follow these conventions:

* A member whose prefix has become impossible (it gave probability 0 to a byte that the
  combination nevertheless chose, or it cannot produce the prompt at all) is *dead*: from then on
  its row is all ``-inf``. In a mixture the remaining members' weights are renormalised; in a
  product any dead member with positive weight leaves no mass at all.
* Members with weight 0 are ignored entirely (``0 · -inf`` is taken as 0, not NaN).
* Proxy tuning: a slot impossible for the base stays impossible. The tuning term
  ``alpha · (log p_expert - log p_anti)`` is taken as 0 where both are ``-inf`` (``-inf - -inf
  := 0``: neither tuning model can produce that byte, so they have no opinion and the base
  decides). Where exactly one of them is ``-inf`` the term is the exact limit of the formula:
  ``-inf`` (the slot is ruled out) when ``alpha · (log p_expert - log p_anti)`` tends to
  ``-inf``; when it tends to ``+inf`` for some slots, those slots take all the mass, shared in
  proportion to ``p_base · p_expert ** alpha`` (or ``p_base · p_anti ** -alpha`` for a negative
  alpha). With tuning models that share a tokenizer family this never happens.
* If nothing is left with positive probability, `ZeroMassError` is raised.

The reported bound is the maximum of the members' bounds (bounded-error mode). The second and third
items of ``distribution()`` are both the ensemble's own log-probability of the bytes advanced since
the state was made (an ensemble removes no non-canonical mass of its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal

import numpy as np

from ._core import ZeroMassError
from .byte_lm import ByteModel, Text, _as_bytes, chosen_bytes
from .sampling import EOS, SamplingConfig

__all__ = [
    "Ensemble",
    "EnsembleState",
    "ProxyTuned",
    "mixture_logprobs",
    "product_logprobs",
    "proxy_logprobs",
]

Mode = Literal["mixture", "product"]
_SLOTS = EOS + 1
_DEAD = np.full(_SLOTS, -np.inf)
_DEAD.setflags(write=False)


# -- combination rules (pure functions on 257-slot natural-log rows) ------------------------------


def _normalise(scores: np.ndarray, what: str) -> np.ndarray:
    m = float(np.max(scores))
    if not math.isfinite(m):
        raise ZeroMassError(f"the {what} gives probability 0 to every next byte and to end-of-text")
    return scores - (m + math.log(float(np.sum(np.exp(scores - m)))))


def _check_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    block = np.asarray(np.stack([np.asarray(r, dtype=np.float64) for r in rows]), dtype=np.float64)
    if block.ndim != 2 or block.shape[1] != _SLOTS:
        raise ValueError(f"expected rows of {_SLOTS} log-probabilities, got shape {block.shape}")
    if np.isnan(block).any() or (block == np.inf).any():
        raise ValueError("member distributions must not contain NaN or +inf")
    return block


def mixture_logprobs(rows: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
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


def product_logprobs(rows: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
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
    direction = np.zeros(_SLOTS)
    direction[e_fin & ~a_fin] = math.copysign(1.0, alpha)
    direction[~e_fin & a_fin] = -math.copysign(1.0, alpha)
    possible = np.isfinite(b) & (direction >= 0)
    winners = possible & (direction > 0)
    keep = winners if winners.any() else possible
    scores = np.where(keep, b + finite_part, -np.inf)
    return _normalise(scores, "proxy-tuned model")


# -- the combined state -------------------------------------------------------------------------


class EnsembleState:
    """One state per member, combined slot by slot; advanced on the same byte for all."""

    def __init__(self, members: Sequence[Any | None], combine: Callable[[list[np.ndarray]], np.ndarray], prefix: bytes) -> None:
        self.members: list[Any | None] = list(members)
        """Member states, ``None`` where the member is dead (gives the prefix probability 0)."""
        self._combine = combine
        self._text = bytearray(prefix)
        self._log_prefix = 0.0
        self._cache: tuple[np.ndarray, float, list[np.ndarray]] | None = None

    def _member_rows(self) -> tuple[list[np.ndarray], float]:
        rows: list[np.ndarray] = []
        bound = 0.0
        for i, m in enumerate(self.members):
            if m is None:
                rows.append(_DEAD)
                continue
            try:
                lp, _, _, b = m.distribution()
            except ZeroMassError:
                self.members[i] = None
                rows.append(_DEAD)
                continue
            rows.append(np.asarray(lp, dtype=np.float64))
            bound = max(bound, float(b))
        return rows, bound

    def _combined(self) -> tuple[np.ndarray, float, list[np.ndarray]]:
        if self._cache is None:
            rows, bound = self._member_rows()
            self._cache = (self._combine(rows), bound, rows)
        return self._cache

    def distribution(self) -> tuple[np.ndarray, float, float, float]:
        """(257 combined log-probabilities, log P, log P, max member bound); P is the ensemble's
        probability of the bytes advanced since this state was made."""
        lp, bound, _ = self._combined()
        return lp, self._log_prefix, self._log_prefix, bound

    def logprobs(self) -> np.ndarray:
        return self._combined()[0]

    def member_logprobs(self) -> list[np.ndarray]:
        """Each member's own next-byte distribution (all ``-inf`` for a dead member)."""
        return list(self._combined()[2])

    def advance(self, byte: int) -> None:
        """Append `byte` (0-255) for every member; a member that gave it probability 0 dies."""
        byte = int(byte)
        if not 0 <= byte < 256:
            raise ValueError(f"can only advance on a byte 0-255, got {byte}")
        lp, _, rows = self._combined()
        for i, m in enumerate(self.members):
            if m is None:
                continue
            if rows[i][byte] == -np.inf:
                self.members[i] = None
            else:
                m.advance(byte)
        self._log_prefix += float(lp[byte])
        self._text.append(byte)
        self._cache = None

    @property
    def text(self) -> bytes:
        """User bytes so far (prompt + advanced bytes)."""
        return bytes(self._text)

    @property
    def stats(self) -> list[Any]:
        """Each live member's ``stats`` (e.g. `CallStats`), ``None`` for dead or stat-less ones."""
        return [getattr(m, "stats", None) if m is not None else None for m in self.members]


def _check_models(lms: Sequence[Any], what: str) -> list[Any]:
    if isinstance(lms, (str, bytes)) or not isinstance(lms, Sequence):
        raise TypeError(f"{what} must be a list of byte-level models")
    out = list(lms)
    if not out:
        raise ValueError(f"{what} must not be empty")
    for i, m in enumerate(out):
        if not callable(getattr(m, "state", None)):
            raise TypeError(f"{what}[{i}] is a {type(m).__name__}, not a byte-level model (ByteLM, Ensemble, ProxyTuned)")
    return out


def _member_state(model: Any, make: Callable[[Any], Any]) -> Any | None:
    try:
        return make(model)
    except ZeroMassError:
        return None


class _Combined(ByteModel):
    """Shared plumbing: member states from a prefix, or scoring states prefetched per member."""

    models: list[Any]

    def _combine(self, rows: list[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _make(self, prefix: bytes, make: Callable[[Any], Any]) -> EnsembleState:
        members = [_member_state(m, make) for m in self.models]
        state = EnsembleState(members, self._combine, prefix)
        if all(m is None for m in members):
            raise ZeroMassError(f"no member of the {type(self).__name__} can produce the prompt {prefix!r}")
        return state

    def state(self, prefix: Text = b"") -> EnsembleState:
        """Combined state after `prefix` (every member conditioned on the same bytes)."""
        data = _as_bytes(prefix)
        return self._make(data, lambda m: m.state(data))

    def _scoring_state(self, data: bytes) -> EnsembleState:
        return self._make(b"", lambda m: m._scoring_state(data) if hasattr(m, "_scoring_state") else m.state(b""))


class Ensemble(_Combined):
    """Models with any tokenizers combined per byte: a weighted mixture or a product of experts.

    ``Ensemble([lm_a, lm_b])`` mixes two models equally; ``weights=[3, 1]`` gives the first three
    quarters of the mass; ``mode="product"`` multiplies the members' probabilities raised to the
    normalised weights (a weighted geometric mean) and renormalises. Members are any byte-level
    models (`ByteLM`, other ensembles, `ProxyTuned`), each on its own device.
    """

    def __init__(self, lms: Sequence[Any], weights: Sequence[float] | None = None, mode: Mode = "mixture") -> None:
        self.models = _check_models(lms, "lms")
        if mode not in ("mixture", "product"):
            raise ValueError(f"mode must be 'mixture' or 'product', got {mode!r}")
        self.mode: Mode = mode
        if weights is None:
            w = np.ones(len(self.models))
        else:
            try:
                w = np.asarray([float(x) for x in weights], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"weights must be numbers, got {weights!r}") from err
            if w.shape != (len(self.models),):
                raise ValueError(f"got {w.size} weights for {len(self.models)} models")
            if not np.isfinite(w).all():
                raise ValueError(f"weights must be finite, got {list(weights)}")
            if (w < 0).any():
                raise ValueError(f"weights must be >= 0, got {list(weights)}")
            if not (w > 0).any():
                raise ValueError("at least one weight must be positive")
        self.weights: np.ndarray = w / w.sum()
        """Normalised weights (sum to 1)."""

    def _byte_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:
        """Byte by byte. When every member is a `ByteLM`, greedy and temperature sampling choose
        each byte from bounds on the members' distributions (`EnsembleChoice`: the byte the full
        combination gives, with the members' model calls only where the bounds need them);
        otherwise, and for top-k / top-p, from the full combined distribution."""
        from .byte_lm import ByteLM
        from .ensemble_choice import EnsembleChoice

        if cfg.top_k is not None or cfg.top_p is not None or not all(isinstance(m, ByteLM) for m in self.models):
            yield from super()._byte_chunks(prompt, cfg, rng)
            return
        data = _as_bytes(prompt)
        for m in self.models:
            m._check_prompt(data)
        state = EnsembleChoice(self.models, self.weights, self.mode, data)
        self.last_state = state
        yield from chosen_bytes(state, lambda: state.choose(cfg, rng))

    def _combine(self, rows: list[np.ndarray]) -> np.ndarray:
        if self.mode == "mixture":
            return mixture_logprobs(rows, self.weights)
        return product_logprobs(rows, self.weights)

    def __repr__(self) -> str:
        return f"Ensemble({len(self.models)} models, weights={np.round(self.weights, 4).tolist()}, mode={self.mode!r})"


class ProxyTuned(_Combined):
    """Proxy tuning in bytes: ``p ∝ p_base · (p_expert / p_anti_expert) ** alpha``.

    Typically the expert is a small tuned model and the anti-expert its untuned version, steering a
    larger base model; here the three may have different tokenizers. ``alpha`` must be finite
    (negative values steer away from the expert). See the module doc for the ``-inf`` conventions.
    """

    def __init__(self, base: Any, expert: Any, anti_expert: Any, alpha: float = 1.0) -> None:
        self.models = _check_models([base, expert, anti_expert], "[base, expert, anti_expert]")
        try:
            a = float(alpha)
        except (TypeError, ValueError) as err:
            raise ValueError(f"alpha must be a finite number, got {alpha!r}") from err
        if not math.isfinite(a):
            raise ValueError(f"alpha must be a finite number, got {alpha!r}")
        self.alpha = a

    @property
    def base(self) -> Any:
        return self.models[0]

    @property
    def expert(self) -> Any:
        return self.models[1]

    @property
    def anti_expert(self) -> Any:
        return self.models[2]

    def _combine(self, rows: list[np.ndarray]) -> np.ndarray:
        return proxy_logprobs(rows[0], rows[1], rows[2], self.alpha)

    def __repr__(self) -> str:
        return f"ProxyTuned(alpha={self.alpha})"
