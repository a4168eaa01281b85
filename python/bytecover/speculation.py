"""Speculative rows: fetch the rows the next tokens will probably need in the call made anyway.

When a token prefix T needs its row, the text after T often repeats something already in T (code
that repeats a name or a call pattern, a list, a quoted phrase). Prompt lookup finds the latest
earlier occurrence of T's last few tokens and proposes the tokens that followed it, d1..dk; the
rows of T + d1, T + d1 d2, ... then go into the same forward as T's own row (a tree-mask forward
feeds each new token once, on T's key/value cache) and are memoised by the token LM. If the text
does continue with those tokens, the rows the engine (or token decoding) asks for next are
already there: no model call of their own. Nothing is assumed about them: they are the model's
exact rows, used only if the text gets there, so exactness is untouched; a wrong draft costs a
little compute in a call that happens anyway.

On a 2-core CPU a forward with a few extra tokens costs little more than one with a single token
(the weights are read once either way), so a draft pays when it is right about a third of the
time. `benches/bench_generate.py` measures it (methods with and without drafts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_NGRAM = 2
"""Shortest repeated run of tokens that proposes a draft: single tokens (a space, a newline)
repeat everywhere and would mostly propose wrong continuations."""

MAX_NGRAM = 4
"""Longest run matched: a longer match is more likely to continue the same way."""


def draft(tokens: Sequence[int], length: int) -> list[int]:
    """Up to `length` tokens that followed the latest earlier occurrence of the longest suffix
    of `tokens` (MAX_NGRAM down to MIN_NGRAM tokens) that occurs earlier; [] when none does."""
    seq = np.asarray(tokens, dtype=np.int64)
    n = len(seq)
    if length <= 0 or n <= MIN_NGRAM:
        return []
    for k in range(min(MAX_NGRAM, n - 1), MIN_NGRAM - 1, -1):
        tail = seq[n - k :]
        # Candidate starts: where the suffix's first token occurs, latest first, not the suffix itself.
        starts = np.flatnonzero(seq[: n - k] == tail[0])[::-1]
        for s in starts:
            if np.array_equal(seq[s : s + k], tail):
                follow = seq[s + k : s + k + length]
                if follow.size:
                    return [int(t) for t in follow]
    return []
