"""Brute-force byte-level distribution of a token LM (the test oracle; slow, obvious).

For a byte prefix x (internal bytes) it enumerates every *cover* of x by depth-first search over
the vocabulary: token sequences t, valid, with decode(t[:-1]) a strict prefix of x and x a prefix
of decode(t).  When x is a prefix of the start prefix (b"", or b" " for SentencePiece dummy-prefix
tokenizers: the user's empty prefix) the only cover is the empty sequence, P(x...) = 1.  Then

    P(x...)  = sum over covers t of p(t)                          (Byte-Token Representation Lemma)
    N[b]     = P(xb...)                      for b in 0..255
    N[256]   = p(encode(x)) * sum_{e in EOS} p(e | encode(x))
               (0 when x is not start_prefix + valid UTF-8, or encode(x) is not valid or does not
               decode back to x; the empty text, encoded as [], counts as spelling the start prefix)

and returns (log N - log sum N, log P(x...), log sum N).  sum N <= P(x...): the gap is the mass the
model puts on invalid continuations.  When sum N = 0 the first item is all -inf.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .canonical import ReferenceTokenizer


def logsumexp(values: Iterable[float]) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or not np.isfinite(v.max()):
        return float("-inf")
    m = v.max()
    return float(m + np.log(np.sum(np.exp(v - m))))


class RowCache:
    """Memoised rows of a TokenLM, and log p(t) as the sum of conditionals."""

    def __init__(self, lm):
        self.lm = lm
        self.rows: dict[tuple[int, ...], np.ndarray] = {}

    def row(self, prefix: Sequence[int]) -> np.ndarray:
        key = tuple(prefix)
        if key not in self.rows:
            self.rows[key] = np.asarray(self.lm.logprobs([list(key)])[0], dtype=np.float64)
        return self.rows[key]

    def logp(self, seq: Sequence[int]) -> float:
        return float(sum(self.row(seq[:j])[t] for j, t in enumerate(seq)))


def _by_first_byte(ref: ReferenceTokenizer) -> dict[int, list[tuple[bytes, int]]]:
    index = getattr(ref, "_oracle_index", None)
    if index is None:
        index = defaultdict(list)
        for tid, b in enumerate(ref.token_bytes):
            if b:  # skip special tokens (None) and empty strings
                index[b[0]].append((b, tid))
        ref._oracle_index = index
    return index


def covers(ref: ReferenceTokenizer, x: bytes) -> Iterator[tuple[int, ...]]:
    """Every cover of x (see module doc), each once."""
    if ref.start_prefix.startswith(x):  # b"" (or, for dummy-prefix tokenizers, b" "): every text
        yield ()
        return
    index = _by_first_byte(ref)

    def dfs(prefix: tuple[int, ...], pos: int) -> Iterator[tuple[int, ...]]:
        rest = x[pos:]
        for v, tid in index.get(rest[0], ()):
            if len(v) < len(rest):
                if rest.startswith(v):  # decode(prefix + [v]) is still a strict prefix of x
                    yield from dfs(prefix + (tid,), pos + len(v))
            elif v.startswith(rest) and ref.is_valid(prefix + (tid,)):  # last token reaches the end
                yield prefix + (tid,)

    yield from dfs((), 0)


def prefix_logprob(ref: ReferenceTokenizer, rows: RowCache, x: bytes) -> float:
    """log P(x...) = log sum over covers of p(t)."""
    return logsumexp(rows.logp(t) for t in covers(ref, x))


def eos_logprob(ref: ReferenceTokenizer, rows: RowCache, eos_ids: Iterable[int], x: bytes) -> float:
    """log N[256] = log p(encode(x)) + log sum_e p(e | encode(x)), -inf if x cannot end here."""
    try:
        ids = ref.encode(x)
    except (ValueError, UnicodeDecodeError):
        return float("-inf")
    spelled = ref.start_prefix + ref.decode(ids) if not ids else ref.decode(ids)  # "" -> [] -> prefix
    if not x.startswith(ref.start_prefix) or not ref.is_valid(ids) or spelled != x:
        return float("-inf")
    row = rows.row(ids)
    return rows.logp(ids) + logsumexp(row[e] for e in eos_ids)


def oracle_next_byte(
    ref: ReferenceTokenizer,
    lm,
    eos_ids: Iterable[int],
    x: bytes,
    rows: RowCache | None = None,
    next_bytes: Iterable[int] | None = None,
) -> tuple[np.ndarray, float, float]:
    """(log N normalised over 257 slots, log P(x...), log sum N) for internal byte prefix x.

    ``next_bytes`` (optional, for speed) lists the bytes whose N[b] is computed; the others are
    set to 0.  Only for callers that know those to be 0 (e.g. a model over a small alphabet), and
    should then check that log sum N equals log P(x...)."""
    rows = rows or RowCache(lm)
    wanted = set(range(256) if next_bytes is None else next_bytes)
    log_n = np.array(
        [prefix_logprob(ref, rows, x + bytes([b])) if b in wanted else -np.inf for b in range(256)]
        + [eos_logprob(ref, rows, list(eos_ids), x)]
    )
    log_total = logsumexp(log_n)
    normalised = log_n - log_total if np.isfinite(log_total) else np.full(257, -np.inf)
    return normalised, prefix_logprob(ref, rows, x), log_total


def naive_next_byte(ref: ReferenceTokenizer, lm, eos_ids: Iterable[int], x: bytes) -> np.ndarray:
    """The biased baseline: condition on encode(x) and sum next-token mass by first byte (EOS ->
    slot 256).  Normalised log-probabilities over 257 slots."""
    row = np.asarray(lm.logprobs([ref.encode(x)])[0], dtype=np.float64)
    buckets: dict[int, list[float]] = defaultdict(list)
    for tid, b in enumerate(ref.token_bytes):
        if b:
            buckets[b[0]].append(row[tid])
    for e in eos_ids:
        buckets[256].append(row[e])
    log_n = np.array([logsumexp(buckets.get(i, [])) for i in range(257)])
    return log_n - logsumexp(log_n)
