"""Small helpers on token sequences (tuples or lists of ids), shared by the backends and the
gateway: the longest common prefix, and sums of log-probabilities read off next-token rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Prefix = tuple[int, ...]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two sequences (numpy: trunks run to thousands of
    tokens, and a Python loop over them showed up in profiles)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def shared_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every sequence shares (0 for no sequences)."""
    if not seqs:
        return 0
    n = len(seqs[0])
    for s in seqs[1:]:
        n = common_prefix_len(seqs[0][:n], s)
    return n


def tail_prefixes(seqs: Sequence[Sequence[int]], start: int) -> set[Prefix]:
    """The prefixes whose rows score each sequence's tokens from position `start` on."""
    return {tuple(s[:k]) for s in seqs for k in range(start, len(s))}


def tail_logprobs(rows: Mapping[Prefix, np.ndarray], seqs: Sequence[Sequence[int]], start: int) -> list[float]:
    """sum_{k >= start} log p(s[k] | s[:k]) for each sequence, from rows keyed by prefix."""
    return [sum(float(rows[tuple(s[:k])][s[k]]) for k in range(start, len(s))) for s in seqs]
