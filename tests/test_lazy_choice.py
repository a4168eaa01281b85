"""The lazy engine's byte choices against the full distribution.

`ChoiceState.choose` (engine in lazy mode) must return, for every uniform number u, the byte the
inverse CDF of the exact next-byte distribution gives (and the argmax when greedy), whatever it
left undecided. The full distribution comes from the eager engine, itself checked against the
brute-force oracle in test_engine_oracle.py (here it is checked against the oracle again on the
toys). Walks follow the chosen bytes, so later steps exercise deferred token prefixes whose rows
arrive after the text has moved on.
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

from bytecover import ByteLM
from bytecover.choice import ChoiceState
from bytecover.sampling import EOS, SamplingConfig

TOYS = list(toy_tokenizers())


class _FixedU:
    """A stand-in for numpy's generator that hands out given uniform numbers."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _inverse_cdf(logprobs: np.ndarray, u: float, temperature: float) -> int:
    w = np.exp((logprobs - logprobs.max()) / temperature)
    cdf = np.cumsum(w)
    return int(np.searchsorted(cdf / cdf[-1], u, side="right"))


def _margin(logprobs: np.ndarray, u: float, temperature: float) -> float:
    """Distance of u from the nearest CDF boundary (tiny ones could flip on rounding)."""
    w = np.exp((logprobs - logprobs.max()) / temperature)
    cdf = np.cumsum(w) / w.sum()
    return float(np.min(np.abs(cdf - u)))


def _walk(blm: ByteLM, prompt: bytes, us: list[float | None], temperature: float = 1.0, oracle=None) -> int:
    """Choose len(us) bytes lazily; at each step compare with the full engine. Returns how many
    steps ended before EOS."""
    state = ChoiceState(blm.spec, prompt)
    text = prompt
    for i, u in enumerate(us):
        lp = blm.state(text).distribution().logprobs
        if oracle is not None:
            np.testing.assert_allclose(np.exp(lp), np.exp(oracle(text)), atol=1e-9, rtol=0)
        cfg = SamplingConfig(temperature=0.0 if u is None else temperature)
        got = state.choose(cfg, _FixedU([u] if u is not None else []))
        if u is None:
            want = int(np.argmax(lp))
        else:
            if _margin(lp, u, temperature) < 1e-9:
                return i
            want = _inverse_cdf(lp, u, temperature)
        assert got == want, (prompt, text, u, got, want)
        if got == EOS:
            return i
        state.advance(got)
        text += bytes((got,))
    return len(us)


def _toy(name: str):
    tj = toy_tokenizers()[name]
    eos = [toy_eos_id(name)]
    ref = ReferenceTokenizer(tj, extra_witnesses=[c.encode() for c in toy_alphabet(name)])
    return eos, ref, Tokenizer.from_str(json.dumps(tj))


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_toy_choices_equal_inverse_cdf(name: str, temperature: float) -> None:
    eos, ref, hf = _toy(name)
    lm = RandomTokenLM(hf.get_vocab_size(), seed=7, eos_ids=eos, eos_bias=-1.0)
    blm = ByteLM(lm, hf, eos_ids=eos)
    rng = np.random.default_rng(3)
    alphabet = toy_alphabet(name).encode()
    oracle = lambda text: oracle_next_byte(ref, lm, eos, ref.start_prefix + text)[0]  # noqa: E731
    for walk in range(12):
        prompt = bytes(int(c) for c in rng.choice(list(alphabet), size=int(rng.integers(0, 4))))
        _walk(blm, prompt, [float(u) for u in rng.random(8)], temperature, oracle if walk < 3 else None)


@pytest.mark.parametrize("name", TOYS)
def test_toy_greedy_equals_argmax(name: str) -> None:
    eos, _, hf = _toy(name)
    blm = ByteLM(RandomTokenLM(hf.get_vocab_size(), seed=9, eos_ids=eos, eos_bias=-2.0), hf, eos_ids=eos)
    a = toy_alphabet(name).encode()
    for prompt in [b"", a[:1], a[:2], a[1::-1]]:
        _walk(blm, prompt, [None] * 8)


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.sampled_from(["def f(x):\n    retu", "The cat", "  x = 1", "日本", "a\n\n", ""]), seed=st.integers(0, 2**16))
def test_real_tokenizer_choices_equal_inverse_cdf(name: str, prompt: str, seed: int) -> None:
    # A peaked random LM (temperature 0.3) over the real vocabulary: the lazy engine leaves most
    # validity undecided and defers most token prefixes, which is what this has to survive.
    hf = Tokenizer.from_str(tokenizer_json(name))
    lm = RandomTokenLM(hf.get_vocab_size(), seed=seed, temperature=0.3)
    blm = ByteLM(lm, hf, eos_ids=[0])
    rng = np.random.default_rng(seed)
    _walk(blm, prompt.encode(), [float(u) for u in rng.random(3)] + [None])


def test_lazy_engine_refuses_the_full_distribution() -> None:
    eos, _, hf = _toy(TOYS[0])
    blm = ByteLM(RandomTokenLM(hf.get_vocab_size(), seed=1, eos_ids=eos), hf, eos_ids=eos)
    state = ChoiceState(blm.spec, toy_alphabet(TOYS[0])[:1].encode())
    with pytest.raises(Exception, match="lazy"):
        state.engine.distribution()
    with pytest.raises(ValueError, match="top-k"):
        state.choose(SamplingConfig(top_k=3), np.random.default_rng(0))
