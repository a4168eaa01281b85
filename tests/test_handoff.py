"""Prompt healing with hand-off: covers, cover sampling, and the hand-off generation path.

* The engine's covers of a prefix are exactly the oracle's covers, with log p(cover) to 1e-9.
* Drawing a cover with a uniform u follows those weights; greedy takes the most likely one.
* On a token LM that gives no mass to non-canonical sequences (the one a byte Markov model
  induces), hand-off sampling and byte-by-byte sampling have the same distribution: both match
  the Markov model's own conditional distribution of whole continuations (a frequency test whose
  power is shown by the naive baseline failing it).
"""

from __future__ import annotations

import collections
import itertools
import json
import math

import numpy as np
import pytest
from real_tokenizers import loaded, tokenizer_json
from reference import MarkovTextLM, RandomTokenLM, ReferenceTokenizer, toy_alphabet, toy_eos_id, toy_tokenizers
from reference.oracle import RowCache, covers
from tokenizers import Tokenizer

from bytecover import ByteLM, Ensemble

TOYS = list(toy_tokenizers())


def _toy(name: str):
    tj = toy_tokenizers()[name]
    eos = [toy_eos_id(name)]
    ref = ReferenceTokenizer(tj, extra_witnesses=[c.encode() for c in toy_alphabet(name)])
    return eos, ref, Tokenizer.from_str(json.dumps(tj))


def _engine_covers(blm: ByteLM, user: bytes) -> dict[tuple[int, ...], float]:
    state = blm.state(user)
    state.ready()
    return {tuple(c.tokens): c.logprob for c in state.engine.covers()}


def _check_covers(blm: ByteLM, ref: ReferenceTokenizer, rows: RowCache, user: bytes) -> None:
    got = _engine_covers(blm, user)
    want = {c: rows.logp(c) for c in covers(ref, ref.start_prefix + user)}
    want = {c: w for c, w in want.items() if w > -math.inf}
    assert set(got) == set(want), (user, sorted(set(got) ^ set(want))[:5])
    for c, w in want.items():
        assert abs(got[c] - w) <= 1e-9 * max(1.0, abs(w)), (user, c, got[c], w)


@pytest.mark.parametrize("name", TOYS)
def test_covers_match_oracle_on_toys(name: str) -> None:
    eos, ref, hf = _toy(name)
    lm = RandomTokenLM(hf.get_vocab_size(), seed=5, eos_ids=eos, eos_bias=1.0)
    blm, rows = ByteLM(lm, hf, eos_ids=eos), RowCache(lm)
    alphabet = toy_alphabet(name).encode()
    longest = 3 if len(alphabet) <= 3 else 2
    for n in range(longest + 1):
        for chars in itertools.product(alphabet, repeat=n):
            _check_covers(blm, ref, rows, bytes(chars))


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_covers_match_oracle_on_real_tokenizers(name: str) -> None:
    core, ref = loaded(name)
    hf = Tokenizer.from_str(tokenizer_json(name))
    eos = sorted(core.special_ids)[:1] or [0]
    lm = RandomTokenLM(core.n_ids, seed=7, eos_ids=eos, eos_bias=2.0)
    blm, rows = ByteLM(lm, hf, eos_ids=eos), RowCache(lm)
    for user in [b"x = np.arr", b"a  ", "中".encode()[:2]]:
        _check_covers(blm, ref, rows, user)


def test_choose_cover_follows_the_weights() -> None:
    eos, ref, hf = _toy("ab_overlap")
    lm = RandomTokenLM(hf.get_vocab_size(), seed=2, eos_ids=eos, eos_bias=1.0)
    state = ByteLM(lm, hf, eos_ids=eos).state(b"abab")
    state.ready()
    weights = {tuple(c.tokens): c.logprob for c in state.engine.covers()}
    assert len(weights) >= 3
    total = np.logaddexp.reduce(list(weights.values()))
    assert abs(total - state.distribution().log_prefix) < 1e-9  # the covers' weights sum to P(x...)
    n = 20000
    counts = collections.Counter(tuple(state.engine.choose_cover((i + 0.5) / n).tokens) for i in range(n))
    # A sweep of u over a uniform grid lands in each cover's interval in proportion to its width.
    for c, w in weights.items():
        assert abs(counts[c] / n - math.exp(w - total)) <= 2.0 / n, c
    chosen = state.engine.choose_cover(None)
    best, w_best = chosen.tokens, chosen.logprob
    assert w_best == max(weights.values()) and weights[tuple(best)] == w_best


def _continuations(lm, prompt: bytes, n: int, **kw) -> collections.Counter:
    return collections.Counter(lm.generate(prompt, max_new_bytes=16, seed=s, **kw) for s in range(n))


def _deviation(counts: collections.Counter, markov: MarkovTextLM, prompt: bytes) -> float:
    """Largest |empirical - exact| over all continuations, in standard errors."""
    n = sum(counts.values())
    z = prefix = markov.prefix_prob(prompt)
    worst = 0.0
    for text, p in markov.texts():
        if not text.startswith(prompt) or p == 0:
            continue
        q = p / z
        se = math.sqrt(q * (1 - q) / n) + 1.0 / n
        worst = max(worst, abs(counts.get(text[len(prompt):], 0) / n - q) / se)
    assert prefix > 0
    return worst


@pytest.mark.parametrize("prompt", [b"A", b"AAA", b"AB", b""])
def test_handoff_samples_the_exact_distribution(prompt: bytes) -> None:
    eos, ref, hf = _toy("ab_classic")
    markov = MarkovTextLM("AB", max_len=5, seed=3)
    lm = markov.token_lm(ref, eos[0])
    blm = ByteLM(lm, hf, eos_ids=eos)
    n = 3000
    handoff = _continuations(blm, prompt, n, bytewise=False)
    assert _deviation(handoff, markov, prompt) < 4.5
    if prompt:
        # Power: the same test rejects naive conditioning on the prompt's canonical tokens
        # (the prompt as fixed context, nothing to heal), at least where the prompt ends in "A".
        naive = blm.with_context(ref.encode(prompt))
        wrong = _deviation(_continuations(naive, b"", n, bytewise=False), markov, prompt)
        if prompt.endswith(b"A"):
            assert wrong > 8


def test_handoff_and_bytewise_agree() -> None:
    eos, ref, hf = _toy("ab_classic")
    markov = MarkovTextLM("AB", max_len=5, seed=3)
    blm = ByteLM(markov.token_lm(ref, eos[0]), hf, eos_ids=eos)
    n = 1500
    assert _deviation(_continuations(blm, b"A", n, bytewise=True), markov, b"A") < 4.5
    assert _deviation(_continuations(blm, b"A", n, bytewise=False), markov, b"A") < 4.5


def test_path_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    eos, ref, hf = _toy("ab_classic")
    markov = MarkovTextLM("AB", max_len=5, seed=3)
    blm = ByteLM(markov.token_lm(ref, eos[0]), hf, eos_ids=eos)
    taken = []
    real_handoff, real_bytes = blm.handoff_chunks, blm.choice_state
    monkeypatch.setattr(blm, "handoff_chunks", lambda *a: (taken.append("handoff"), real_handoff(*a))[1])
    monkeypatch.setattr(blm, "choice_state", lambda *a: (taken.append("bytes"), real_bytes(*a))[1])
    blm.generate(b"A", seed=0)  # plain sampling: the same distribution either way -> hand-off
    blm.generate(b"A", temperature=0)  # byte-level greedy
    blm.generate(b"A", top_k=1, seed=0)
    blm.generate(b"A", temperature=0, bytewise=False)
    blm.generate(b"A", seed=0, bytewise=True)
    assert taken == ["handoff", "bytes", "bytes", "handoff", "bytes"]
    with pytest.raises(ValueError, match="hand-off"):
        Ensemble([blm, blm]).generate(b"A", bytewise=False)


def test_handoff_respects_limits_and_stops() -> None:
    eos, ref, hf = _toy("ab_classic")
    markov = MarkovTextLM("AB", max_len=10, seed=4, stop_range=(0.0, 0.01))
    blm = ByteLM(markov.token_lm(ref, eos[0]), hf, eos_ids=eos)
    for seed in range(20):
        out = blm.generate(b"A", max_new_bytes=3, seed=seed, bytewise=False)
        assert len(out) <= 3
        cut = blm.generate(b"A", max_new_bytes=9, seed=seed, stop=[b"BA"], bytewise=False)
        assert b"BA" not in cut and (b"A" + cut).count(b"BA") == 0
