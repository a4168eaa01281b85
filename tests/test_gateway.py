"""The gateway: every model call counted once, rows checked for being log-probabilities."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from reference.synthetic_lm import RandomTokenLM
from reference.toy import toy_eos_id, toy_tokenizers
from tokenizers import Tokenizer

from bytecover import ByteLM
from bytecover.gateway import CallStats, ModelGateway


def _toy(name: str = "ws_bytelevel") -> tuple[Tokenizer, list[int], RandomTokenLM]:
    hf = Tokenizer.from_str(json.dumps(toy_tokenizers()[name]))
    eos = [toy_eos_id(name)]
    return hf, eos, RandomTokenLM(hf.get_vocab_size(), seed=5, eos_ids=eos, eos_bias=1.0)


class RawLogits:
    """A token LM that forgot its log-softmax: every row shifted by a different constant."""

    def __init__(self, inner: RandomTokenLM) -> None:
        self.inner = inner
        self.vocab_size = inner.vocab_size

    def logprobs(self, prefixes):
        rows = np.asarray(self.inner.logprobs(prefixes), dtype=np.float64)
        return rows + np.arange(3.0, 3.0 + len(rows))[:, None]


@pytest.mark.parametrize("text", [b"a", b"ab a", b""])
def test_raw_logits_are_normalised_with_a_warning(text: bytes) -> None:
    hf, eos, lm = _toy()
    want = ByteLM(lm, hf, eos_ids=eos).next_byte_logprobs(text)
    with pytest.warns(RuntimeWarning, match="raw logits"):
        got = ByteLM(RawLogits(lm), hf, eos_ids=eos).next_byte_logprobs(text)
    np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=0, atol=1e-9)


def test_normalised_rows_raise_no_warning() -> None:
    hf, eos, lm = _toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ByteLM(lm, hf, eos_ids=eos).generate(b"a", max_new_bytes=6, seed=0)


def test_calls_and_rows_are_counted_once_per_request() -> None:
    _, _, lm = _toy()
    gateway = ModelGateway(lm)
    stats = CallStats()
    gateway.rows([[1], [1, 2], []], stats)
    assert (stats.model_calls, stats.rows) == (1, 3)
    gateway.rows_by_prefix([[1], [2], [3], [1, 2], [2]], stats, batch=2)  # 4 distinct: 2 requests
    assert (stats.model_calls, stats.rows) == (3, 7)
    assert stats.model_seconds > 0


def test_backend_counters_are_used_when_present() -> None:
    """A backend that memoises rows reports the forwards it ran; the gateway trusts that."""
    _, _, lm = _toy()

    class Memo:
        vocab_size = lm.vocab_size

        def __init__(self) -> None:
            self.n_calls = 0
            self.seen: dict[tuple[int, ...], np.ndarray] = {}

        def logprobs(self, prefixes):
            missing = [tuple(p) for p in prefixes if tuple(p) not in self.seen]
            if missing:
                self.n_calls += 1
                self.seen.update(zip(missing, lm.logprobs([list(m) for m in missing])))
            return np.stack([self.seen[tuple(p)] for p in prefixes])

    gateway, stats = ModelGateway(Memo()), CallStats()
    gateway.rows([[1]], stats)
    gateway.rows([[1]], stats)  # memoised: no forward
    assert stats.model_calls == 1 and stats.rows == 2


def test_sequence_scores_match_sums_of_rows() -> None:
    _, _, lm = _toy()
    seqs = [[1, 2, 3], [1, 2, 4, 5], [1]]
    stats = CallStats()
    shared = ModelGateway(lm).shared_trunk_logprob(seqs, stats)
    plain = [sum(float(lm.logprobs([s[:k]])[0][s[k]]) for k in range(len(s))) for s in seqs]
    np.testing.assert_allclose(shared, plain, rtol=0, atol=1e-9)
