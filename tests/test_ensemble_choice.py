"""The lazy ensemble's byte choices against the full combined distribution.

`EnsembleChoice.choose` combines bounds on every member's next-byte distribution; for every
uniform number u it must return the byte the inverse CDF of the exact combination gives (the
argmax when greedy). The full combination comes from `Ensemble.state()` (each member's eager
engine, oracle-checked in test_ensemble.py); on the first steps of the toy walks it is compared
with the combination of brute-force oracle distributions again here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from real_tokenizers import tokenizer_json
from reference import RandomTokenLM, ReferenceTokenizer, oracle_next_byte, toy_alphabet, toy_eos_id, toy_tokenizers
from tokenizers import Tokenizer

import bytecover
from bytecover import ByteLM, Ensemble
from bytecover.ensemble_choice import EnsembleChoice, decide, member_bounds
from bytecover.sampling import EOS, SamplingConfig


class _FixedU:
    """A stand-in for numpy's generator that hands out given uniform numbers."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _member(name: str, seed: int, eos_bias: float = 0.0) -> tuple[ByteLM, ReferenceTokenizer, RandomTokenLM, list[int]]:
    tj = toy_tokenizers()[name]
    eos = [toy_eos_id(name)]
    hf = Tokenizer.from_str(json.dumps(tj))
    lm = RandomTokenLM(hf.get_vocab_size(), seed=seed, eos_ids=eos, eos_bias=eos_bias)
    return ByteLM(lm, hf, eos_ids=eos), ReferenceTokenizer(tj), lm, eos


def _combine(rows: list[np.ndarray], w: np.ndarray, mode: str) -> np.ndarray:
    if mode == "mixture":
        p = sum(wi * np.exp(r) for wi, r in zip(w, rows))
        with np.errstate(divide="ignore"):
            return np.log(p / p.sum())
    with np.errstate(invalid="ignore"):
        s = sum(wi * r for wi, r in zip(w, rows))
    return s - np.logaddexp.reduce(s)


def _pick(lp: np.ndarray, u: float | None, temperature: float) -> tuple[int, float]:
    """(slot the full distribution gives, distance of u from the nearest CDF boundary)."""
    if u is None:
        top = np.sort(lp)[-2:]
        return int(np.argmax(lp)), float(np.exp(top[1]) - np.exp(top[0]))
    w = np.exp((lp - lp.max()) / temperature)
    cdf = np.cumsum(w) / w.sum()
    return int(np.searchsorted(cdf, u, side="right")), float(np.min(np.abs(cdf - u)))


def _walk(ens: Ensemble, prompt: bytes, us: list[float | None], temperature: float = 1.0, oracles=None) -> int:
    """Choose len(us) bytes with `EnsembleChoice`, comparing each with the full combination.
    Returns the number of steps taken before EOS (or a near-tie, which rounding may flip)."""
    choice = EnsembleChoice([m.spec for m in ens.models], ens.weights, ens.mode, prompt)
    text = prompt
    for i, u in enumerate(us):
        cfg = SamplingConfig(temperature=0.0 if u is None else temperature)
        try:
            lp = ens.next_byte_logprobs(text)
        except bytecover.ZeroMassError:  # e.g. a product whose members share no continuation
            with pytest.raises(bytecover.ZeroMassError):
                choice.choose(cfg, _FixedU([] if u is None else [u]))
            return i
        if oracles is not None and i < 3:
            want_lp = _combine([o(text) for o in oracles], ens.weights, ens.mode)
            np.testing.assert_allclose(np.exp(lp), np.exp(want_lp), atol=1e-9, rtol=0)
        want, margin = _pick(lp, u, temperature)
        if margin < 1e-9:
            return i
        got = choice.choose(cfg, _FixedU([] if u is None else [u]))
        assert got == want, (prompt, text, u, got, want)
        if got == EOS:
            return i
        choice.advance(got)
        text += bytes((got,))
    return len(us)


PAIRS = [("ws_bytelevel", "sp_dummy"), ("abc", "ab_overlap"), ("ab_overlap", "ab_overlap")]


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@pytest.mark.parametrize("mode", ["mixture", "product"])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 0.0])
def test_toy_choices_equal_the_full_combination(pair: tuple[str, str], mode: str, temperature: float) -> None:
    members = [_member(name, seed=11 + i, eos_bias=-1.0) for i, name in enumerate(pair)]
    ens = Ensemble([m[0] for m in members], weights=[2, 1], mode=mode)
    oracles = [lambda text, m=m: oracle_next_byte(m[1], m[2], m[3], m[1].start_prefix + text)[0] for m in members]
    rng = np.random.default_rng(5)
    alphabet = list(toy_alphabet(pair[0]))
    steps = 0
    for walk in range(6):
        prompt = "".join(rng.choice(alphabet, size=int(rng.integers(0, 3)))).encode()
        us: list[float | None] = [None] * 6 if temperature == 0 else [float(u) for u in rng.random(6)]
        steps += _walk(ens, prompt, us, temperature or 1.0, oracles if walk < 2 else None)
    assert steps >= 6  # the walks went somewhere


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.sampled_from(["def f(x):\n    retu", "The cat", "  x = 1", "日本", ""]), seed=st.integers(0, 2**16), mode=st.sampled_from(["mixture", "product"]))
def test_real_vocabularies_choices_equal_the_full_combination(prompt: str, seed: int, mode: str) -> None:
    # Peaked random LMs over SmolLM2's and Qwen2.5's vocabularies: most validity stays undecided
    # and most token prefixes deferred in both members.
    lms = []
    for i, name in enumerate(["smollm2-135m", "qwen2.5-coder-0.5b"]):
        hf = Tokenizer.from_str(tokenizer_json(name))
        lms.append(ByteLM(RandomTokenLM(hf.get_vocab_size(), seed=seed + i, temperature=0.3), hf, eos_ids=[0]))
    ens = Ensemble(lms, weights=[1, 3], mode=mode)
    rng = np.random.default_rng(seed)
    _walk(ens, prompt.encode(), [float(u) for u in rng.random(3)] + [None])


def test_member_that_cannot_continue_drops_out() -> None:
    """ab_overlap has no "c": after "ac" only abc is left, and the mixture chooses as abc does."""
    ab = _member("ab_overlap", 31)[0]
    abc = _member("abc", 32)[0]
    choice = EnsembleChoice([ab.spec, abc.spec], np.array([0.9, 0.1]), "mixture", b"a")
    choice.advance(ord("c"))
    for u in [0.1, 0.5, 0.9]:
        want, _ = _pick(abc.next_byte_logprobs(b"ac"), u, 1.0)
        assert choice.choose(SamplingConfig(), _FixedU([u])) == want
    assert choice.members[0] is None and choice.member_stats[0] is None
    product = EnsembleChoice([ab.spec, abc.spec], np.array([0.5, 0.5]), "product", b"a")
    product.advance(ord("c"))
    with pytest.raises(bytecover.ZeroMassError):
        product.choose(SamplingConfig(temperature=0), _FixedU([]))


def test_generate_goes_through_the_lazy_ensemble_and_makes_fewer_calls() -> None:
    members = [_member("ws_bytelevel", 41, eos_bias=-3.0)[0], _member("sp_dummy", 42, eos_bias=-3.0)[0]]
    ens = Ensemble(members, weights=[2, 1])
    out = ens.generate(b"a", max_new_bytes=24, temperature=0)
    assert isinstance(ens.last_state, EnsembleChoice)
    lazy_calls = ens.last_state.stats.model_calls
    state = ens.state(b"a")
    for byte in out:
        assert int(np.argmax(state.distribution().logprobs)) == byte
        state.advance(byte)
    full_calls = state.stats.model_calls
    assert lazy_calls < full_calls, (lazy_calls, full_calls)
    # Top-k needs the whole distribution: the full path, same seed, same result each time.
    assert ens.generate(b"a", max_new_bytes=8, top_k=3, seed=2) == ens.generate(b"a", max_new_bytes=8, top_k=3, seed=2)


def test_bounds_and_decision_rules_on_hand_made_numbers() -> None:
    known = np.zeros(257)
    known[[1, 2]] = [3.0, 1.0]
    unknown = np.zeros(257)
    unknown[2] = 1.0
    lo, hi = member_bounds(known, unknown, 0.0)
    assert lo[1] == pytest.approx(3 / 5) and hi[1] == pytest.approx(3 / 4)
    assert lo[2] == pytest.approx(1 / 4) and hi[2] == pytest.approx(2 / 5)
    assert decide(lo, hi, None, 1.0) == 1  # 3/5 beats 2/5 whatever the undecided token is
    lo, hi = member_bounds(known, unknown, 4.0)  # deferred mass could land anywhere
    assert lo[1] == pytest.approx(3 / 9) and hi[1] == pytest.approx(7 / 8)
    assert decide(lo, hi, None, 1.0) is None
    settled = member_bounds(known, np.zeros(257), 0.0)
    np.testing.assert_array_equal(settled[0], settled[1])
    assert decide(*settled, 0.74, 1.0) == 1 and decide(*settled, 0.76, 1.0) == 2
