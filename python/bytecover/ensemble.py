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

The reported bound is the maximum of the members' bounds (bounded-error mode). The `NextByte`'s
``log_prefix`` and ``log_total`` are both the ensemble's own log-probability of the bytes advanced
since the state was made (an ensemble removes no non-canonical mass of its own).

The combination rules are in `bytecover.ensemble_rules`, the states in `bytecover.ensemble_state`
(full distributions) and `bytecover.ensemble_choice` (lazy choice from bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ._core import ZeroMassError
from .byte_lm import ByteLM
from .byte_model import ByteModel
from .ensemble_choice import EnsembleChoice
from .ensemble_rules import mixture_logprobs, product_logprobs, proxy_logprobs
from .ensemble_state import EnsembleState
from .sampling import SamplingConfig
from .scheduler import Scheduler
from .state_protocol import ByteStep, DistributionState
from .streaming import Text, as_bytes

__all__ = [
    "Ensemble",
    "EnsembleState",
    "ProxyTuned",
    "mixture_logprobs",
    "product_logprobs",
    "proxy_logprobs",
]

Mode = Literal["mixture", "product"]


def _check_models(lms: Sequence[Any], what: str) -> list[ByteModel]:
    if isinstance(lms, (str, bytes)) or not isinstance(lms, Sequence):
        raise TypeError(f"{what} must be a list of byte-level models")
    out = list(lms)
    if not out:
        raise ValueError(f"{what} must not be empty")
    for i, m in enumerate(out):
        if not callable(getattr(m, "state", None)):
            raise TypeError(f"{what}[{i}] is a {type(m).__name__}, not a byte-level model (ByteLM, Ensemble, ProxyTuned)")
    return out


def _member_state(model: ByteModel, make: Callable[[ByteModel], DistributionState]) -> DistributionState | None:
    try:
        return make(model)
    except ZeroMassError:
        return None


class CombinedModel(ByteModel):
    """Shared plumbing of `Ensemble` and `ProxyTuned`: member states from a prefix, or scoring
    states prefetched per member."""

    models: list[ByteModel]

    def _combine(self, rows: list[np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _make(self, prefix: bytes, make: Callable[[ByteModel], DistributionState]) -> EnsembleState:
        members = [_member_state(m, make) for m in self.models]
        state = EnsembleState(members, self._combine, prefix)
        if all(m is None for m in members):
            raise ZeroMassError(f"no member of the {type(self).__name__} can produce the prompt {prefix!r}")
        return state

    def state(self, prefix: Text = b"") -> EnsembleState:
        """Combined state after `prefix` (every member conditioned on the same bytes)."""
        data = as_bytes(prefix)
        return self._make(data, lambda m: m.state(data))

    def scoring_state(self, data: bytes) -> EnsembleState:
        return self._make(b"", lambda m: m.scoring_state(data))

    def schedulers(self) -> list[Scheduler]:
        """Every member's schedulers, once each (members may share a model)."""
        out: list[Scheduler] = []
        for m in self.models:
            out.extend(s for s in m.schedulers() if all(s is not o for o in out))
        return out

    def check_prompt(self, prompt: Text) -> None:
        as_bytes(prompt)


class Ensemble(CombinedModel):
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

    def choice_state(self, prompt: bytes, cfg: SamplingConfig) -> ByteStep:
        """When every member is a `ByteLM`, greedy and temperature sampling choose each byte from
        bounds on the members' distributions (`EnsembleChoice`: the byte the full combination
        gives, with the members' model calls only where the bounds need them); otherwise, and for
        top-k / top-p, from the full combined distribution."""
        if cfg.top_k is not None or cfg.top_p is not None or not all(isinstance(m, ByteLM) for m in self.models):
            return self.state(prompt)
        specs = [m.spec for m in self.models if isinstance(m, ByteLM)]
        for spec in specs:
            spec.check_prompt(prompt)
        return EnsembleChoice(specs, self.weights, self.mode, prompt)

    def _combine(self, rows: list[np.ndarray]) -> np.ndarray:
        if self.mode == "mixture":
            return mixture_logprobs(rows, self.weights)
        return product_logprobs(rows, self.weights)

    def __repr__(self) -> str:
        return f"Ensemble({len(self.models)} models, weights={np.round(self.weights, 4).tolist()}, mode={self.mode!r})"


class ProxyTuned(CombinedModel):
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
