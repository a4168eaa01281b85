"""What the byte engine needs from a token-level model, and the generic pieces every backend
can use.

The cover engine asks one question of a model: "what is the next-token distribution after each
of these token prefixes?" (`TokenLM.logprobs`). Everything else (which prefixes, how many at
once, counting and timing the calls) is decided above the backend, in `bytecover.gateway`, so a
backend only has to answer that question well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..token_seqs import tail_logprobs

__all__ = ["TokenLM", "TokenLMBase", "ContextTokenLM"]


@runtime_checkable
class TokenLM(Protocol):
    """A token model as the byte engine sees it (the contract in docs/design.md)."""

    vocab_size: int

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        """(len(prefixes), vocab_size) natural-log next-token rows after start tokens + prefix.
        Rows must be normalised log-probabilities (the gateway checks and warns otherwise)."""
        ...

    def sequence_logprob(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """float64 sum_j log p(t_j | start + t_<j) for each sequence."""
        ...


class TokenLMBase:
    """Base class giving any `logprobs` implementation the rest of the protocol.

    Backends that can score a whole sequence in one forward (`HFTokenLM`) override
    `sequence_logprob`; the default exists so that toy models and test oracles only write
    `logprobs`.
    """

    vocab_size: int

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    keeps_rows = False
    """Whether rows computed for one request are kept for later ones (`has_row`); speculative
    rows (`bytecover.speculation`) are only worth fetching for token LMs that keep them."""

    def has_row(self, prefix: Sequence[int]) -> bool:
        """Whether asking for the row after `prefix` would cost no model call."""
        return False

    def sequence_logprob(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """Sum of per-step rows, asking `logprobs` for every prefix of every sequence at once."""
        seqs = [[int(t) for t in s] for s in seqs]
        prefixes = sorted({tuple(s[:j]) for s in seqs for j in range(len(s))})
        rows = self.logprobs([list(p) for p in prefixes]) if prefixes else np.zeros((0, self.vocab_size))
        by_prefix = dict(zip(prefixes, rows))
        return np.asarray(tail_logprobs(by_prefix, seqs, 0), dtype=np.float64)


class ContextTokenLM(TokenLMBase):
    """`base` with fixed tokens in front of every prefix (a FIM template, a chat turn).

    The byte engine then models the text that follows those tokens; a backend with a prefix
    cache computes the shared context once and reuses its key/value states like any other trunk.
    """

    def __init__(self, base: TokenLM, context: Sequence[int]) -> None:
        self.base = base
        self.context = tuple(int(t) for t in context)
        self.vocab_size = int(base.vocab_size)

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        return self.base.logprobs([self.context + tuple(p) for p in prefixes])

    @property
    def keeps_rows(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base, "keeps_rows", False))

    def has_row(self, prefix: Sequence[int]) -> bool:
        return self.keeps_rows and bool(self.base.has_row(self.context + tuple(prefix)))  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # Counters and settings of the wrapped model (n_calls, n_tokens_fed, start_ids, ...).
        return getattr(self.base, name)
