"""Speculative rows: prompt-lookup drafts, rows memoised for later, exactness untouched."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_token_lm import BOS, reference_rows, tiny_llama  # noqa: E402

from bytecover.backends.hf import HFTokenLM  # noqa: E402
from bytecover.backends.protocol import ContextTokenLM, TokenLMBase  # noqa: E402
from bytecover.gateway import CallStats, ModelGateway  # noqa: E402
from bytecover.speculation import draft  # noqa: E402


def logprobs_with_draft(token_lm, prefixes, length):
    """Rows through the gateway, drafting `length` tokens ahead of the first prefix."""
    return ModelGateway(token_lm, speculate=length).rows(prefixes, CallStats(), draft_ahead=True)


def test_draft_follows_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    assert draft([1, 2, 3, 9, 1, 2, 3], 4) == [9, 1, 2, 3]
    assert draft([1, 2, 3, 9, 1, 2, 3], 2) == [9, 1]
    # The latest earlier occurrence wins: "5 6" was followed by 7, later by 8.
    assert draft([5, 6, 7, 5, 6, 8, 0, 5, 6], 1) == [8]
    # A longer matching suffix beats a later shorter one: "4 5 6" -> 1, while "5 6" alone last saw 2.
    assert draft([4, 5, 6, 1, 5, 6, 2, 4, 5, 6], 1) == [1]
    assert draft([1, 2, 3, 4], 3) == []  # no repeated run of two tokens
    assert draft([7, 7, 7], 2) == [7]  # "7 7" occurred at 0, followed by the last 7
    assert draft([1, 2, 1, 2], 0) == [] and draft([], 3) == []


def test_drafted_rows_are_exact_and_save_the_next_call() -> None:
    model = tiny_llama()
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    ctx = [3, 4, 5, 6, 3, 4]  # "3 4" occurred before, followed by "5 6 3"
    rows = logprobs_with_draft(lm, [ctx], 3)
    assert lm.n_calls == 1 and rows.shape == (1, 50)
    for ahead in ([5], [5, 6], [5, 6, 3]):
        assert lm.has_row(ctx + ahead)
        np.testing.assert_allclose(lm.logprobs([ctx + ahead]), reference_rows(model, [ctx + ahead]), atol=1e-5)
    assert lm.n_calls == 1  # all three came from the memo
    np.testing.assert_allclose(rows, reference_rows(model, [ctx]), atol=1e-5)
    # Already memoised: no call at all, drafts or not.
    logprobs_with_draft(lm, [ctx + [5]], 3)
    assert lm.n_calls == 1
    # Without a memo (memo_size=0) drafts would be thrown away: none are fetched.
    bare = HFTokenLM(model, bos_ids=[BOS], vocab_size=50, memo_size=0)
    assert not bare.keeps_rows
    logprobs_with_draft(bare, [ctx], 3)
    assert bare.n_tokens_fed == len(ctx) + 1  # start token + the prefix, nothing drafted
    # Through a fixed context the memo keys include the context.
    wrapped = ContextTokenLM(lm, [9, 9])
    assert not wrapped.has_row([5]) and not wrapped.has_row([])
    logprobs_with_draft(wrapped, [[1, 2, 1, 2]], 2)
    assert wrapped.has_row([1, 2, 1, 2, 1, 2]) and lm.has_row([9, 9, 1, 2, 1, 2, 1])


def test_token_lms_without_a_memo_get_plain_calls() -> None:
    class Counting:
        vocab_size = 5

        def __init__(self) -> None:
            self.asked: list[list[list[int]]] = []

        def logprobs(self, prefixes):
            self.asked.append([list(p) for p in prefixes])
            return np.full((len(prefixes), 5), -np.log(5), dtype=np.float32)

    lm = Counting()
    logprobs_with_draft(lm, [[1, 2, 1, 2]], 3)
    assert lm.asked == [[[1, 2, 1, 2]]]

    class Based(Counting, TokenLMBase):  # the shared base: keeps no rows, so no drafts
        pass

    based = Based()
    assert not based.keeps_rows and not based.has_row([1, 2])
    logprobs_with_draft(based, [[1, 2, 1, 2]], 3)
    assert based.asked == [[[1, 2, 1, 2]]]
