"""ByteLM's public behaviour on toy tokenizers: sampling controls, streaming, errors, healing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference.synthetic_lm import RandomTokenLM
from reference.toy import toy_eos_id, toy_tokenizers
from tokenizers import Tokenizer

import bytecover
from bytecover import ByteLM
from bytecover.sampling import SamplingConfig, warp


class CountingLM(RandomTokenLM):
    pass


def _lm(name: str = "ws_bytelevel", seed: int = 3) -> tuple[ByteLM, RandomTokenLM]:
    tj = toy_tokenizers()[name]
    hf = Tokenizer.from_str(json.dumps(tj))
    eos = [toy_eos_id(name)]
    lm = RandomTokenLM(hf.get_vocab_size(), seed=seed, eos_ids=eos, eos_bias=1.0)
    return ByteLM(lm, hf, eos_ids=eos), lm


def test_generate_types_and_seed() -> None:
    blm, _ = _lm()
    a = blm.generate("a", max_new_bytes=12, seed=7)
    b = blm.generate("a", max_new_bytes=12, seed=7)
    assert isinstance(a, str) and a == b
    raw = blm.generate(b"a", max_new_bytes=12, seed=7)
    assert isinstance(raw, bytes) and raw.decode() == a
    assert len(raw) <= 12


def test_greedy_follows_argmax() -> None:
    blm, _ = _lm()
    out = blm.generate(b"a", max_new_bytes=5, temperature=0)
    state = blm.state(b"a")
    for b in out:
        assert int(np.argmax(state.distribution().logprobs)) == b
        state.advance(b)


def test_stream_concatenates_to_generate_and_stops() -> None:
    blm, _ = _lm()
    pieces = list(blm.stream("a", max_new_bytes=16, seed=1))
    assert "".join(pieces) == blm.generate("a", max_new_bytes=16, seed=1)
    full = blm.generate("a", max_new_bytes=16, seed=1)
    if len(full) > 3:
        stop = full[2:4]
        cut = blm.generate("a", max_new_bytes=16, seed=1, stop=[stop])
        assert cut == full[: full.index(stop)]


def test_one_model_call_per_byte() -> None:
    blm, lm = _lm()
    state = blm.state(b"ab")
    state.distribution()
    before = state.stats.model_calls
    for _ in range(6):
        lp = state.distribution().logprobs
        b = int(np.argmax(lp[:256]))
        state.advance(b)
    state.distribution()
    assert state.stats.model_calls - before <= 6


def test_warp_controls() -> None:
    lp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isclose(np.exp(warp(lp, SamplingConfig(top_k=2))).sum(), 1)
    assert np.isinf(warp(lp, SamplingConfig(top_k=2))[2:]).all()
    kept = np.isfinite(warp(lp, SamplingConfig(top_p=0.7)))
    assert kept.tolist() == [True, True, False, False]
    greedy = warp(lp, SamplingConfig(temperature=0))
    assert greedy[0] == 0 and np.isinf(greedy[1:]).all()
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


def test_special_token_text_in_prompt_is_refused() -> None:
    blm, _ = _lm()
    with pytest.raises(ValueError, match="special-token text"):
        blm.next_byte_logprobs("a<|endoftext|>")


def test_impossible_and_invalid_utf8_prompts() -> None:
    blm, _ = _lm()
    with pytest.raises(bytecover.ZeroMassError):
        blm.next_byte_logprobs(b"a\xff")


def test_nan_and_wrong_width_rows() -> None:
    blm, lm = _lm()

    class NanLM:
        vocab_size = lm.vocab_size

        def logprobs(self, prefixes):  # noqa: ANN001
            out = lm.logprobs(prefixes)
            out[:, 3] = np.nan
            return out

    class NarrowLM:
        vocab_size = lm.vocab_size

        def logprobs(self, prefixes):  # noqa: ANN001
            return lm.logprobs(prefixes)[:, :-1].copy()

    tj = json.dumps(toy_tokenizers()["ws_bytelevel"])
    with pytest.raises(bytecover.InvalidLogitsError, match="NaN"):
        ByteLM(NanLM(), Tokenizer.from_str(tj), eos_ids=[0]).next_byte_logprobs(b"a")
    with pytest.raises(bytecover.LogitsShapeError, match="shape"):
        ByteLM(NarrowLM(), Tokenizer.from_str(tj), eos_ids=[0]).next_byte_logprobs(b"a")


def test_unsupported_tokenizer_is_named() -> None:
    wordpiece = {"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}}
    with pytest.raises(bytecover.UnsupportedTokenizerError, match="WordPiece"):
        bytecover.Tokenizer.from_json(json.dumps(wordpiece))


def test_tolerance_reports_a_bound() -> None:
    blm, lm = _lm()
    exact = blm.next_byte_logprobs(b"ab")
    approx_state = ByteLM(lm, blm.tokenizer, eos_ids=blm.eos_ids, tolerance=1e-3).state(b"ab")
    d = approx_state.distribution()
    approx, bound = d.logprobs, d.error_bound
    assert 0 <= bound <= 1e-3 * 10
    assert np.abs(np.exp(exact) - np.exp(approx)).sum() <= 2 * bound + 1e-12


def test_token_healing_plan_and_mask() -> None:
    from bytecover.healing import heal_prompt

    blm, _ = _lm()
    kept, removed = heal_prompt(blm.core, b"ab a")
    assert blm.core.decode(kept) + removed == b"ab a"
    if removed:
        mask = blm.spec.tables.consistent_with(removed)
        for t in np.flatnonzero(mask):
            tb = blm.core.token_bytes(int(t))
            assert tb.startswith(removed) or removed.startswith(tb)
