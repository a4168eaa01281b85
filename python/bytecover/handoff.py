"""Exact prompt healing with hand-off to token decoding.

The bytes that follow a prompt x are distributed as: draw a cover of x (a token sequence whose
last token reaches to or past the end of x) in proportion to its probability, then let the model
go on token by token; the bytes of the last token beyond x are the first bytes of the
continuation. So one exact cover evaluation (the rows the engine needs for x anyway, usually one
batched call) replaces a model call per byte, and everything after it runs at token speed on the
key/value cache of the cover's trunk.

It is the same distribution as byte-by-byte sampling when the model gives no mass to token
sequences that no text encodes to (non-canonical ones): the byte-by-byte path removes that mass
at every step, plain token decoding cannot. Tokens without bytes (control tokens other than EOS)
are never drawn, as in the byte-level model, and neither are tokens that would break a UTF-8
character (`utf8_mask`).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from .healing import as_numpy_mask
from .sampling import SamplingConfig, sample
from .speculation import logprobs_with_draft
from .utf8_mask import START, masks_for, run, state_after

if TYPE_CHECKING:
    from .byte_lm import ByteLM, ByteState, CallStats


def draw_cover(state: ByteState, cfg: SamplingConfig, rng: np.random.Generator) -> tuple[list[int], float]:
    """A cover of the state's prefix and its log-probability: drawn exactly, or the most likely
    one under greedy decoding."""
    state.fulfil_for_cover()
    t0 = time.perf_counter()
    tokens, logp = state.engine.choose_cover(None if cfg.greedy else float(rng.random()))
    state.stats.engine_seconds += time.perf_counter() - t0
    return list(tokens), float(logp)


def handoff_chunks(lm: ByteLM, state: ByteState, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:
    """Bytes after the prompt: the drawn cover's overhang, then one chunk per decoded token,
    until an end-of-text token. Each next token costs one call, made only when asked for."""
    tokens, _ = draw_cover(state, cfg, rng)
    text = state.engine.text
    spelled = b"".join(lm.core.token_bytes(t) or b"" for t in tokens)
    if len(spelled) > len(text):
        yield spelled[len(text):]
    # The empty cover of an empty prompt under a dummy prefix still owes the prefix itself.
    owed = text[len(spelled):] if len(spelled) < len(text) else b""
    yield from decode_tokens(lm, tokens, cfg, rng, owed=owed, stats=state.stats)


def decode_tokens(lm: ByteLM, tokens: list[int], cfg: SamplingConfig, rng: np.random.Generator, *, owed: bytes = b"", stats: CallStats | None = None) -> Generator[bytes, None, None]:
    """Token-by-token decoding after `tokens` (extended in place), yielding each new token's
    bytes, until an end-of-text token. While `owed` is not spelled yet, only tokens consistent
    with it are allowed (token healing); those bytes are not yielded. Each token costs one call,
    made only when the consumer asks for more."""
    core = lm.core
    banned = _control_ids(lm)
    eos = set(lm.eos_ids)
    utf8 = masks_for(core, int(lm.token_lm.vocab_size))
    char = state_after(b"".join(core.token_bytes(t) or b"" for t in tokens[-4:]))
    tl = lm.token_lm
    while True:
        t0 = time.perf_counter()
        calls = getattr(tl, "n_calls", None)
        row = np.array(logprobs_with_draft(tl, [tokens], lm.speculate)[0], dtype=np.float64)
        if stats is not None:
            stats.model_seconds += time.perf_counter() - t0
            stats.model_calls += 1 if calls is None else tl.n_calls - calls
            stats.rows += 1
        row[banned] = -np.inf
        row[~utf8.allowed(char)] = -np.inf
        if char != START:
            row[list(eos)] = -np.inf  # a text cannot end inside a character
        if owed:
            row[~as_numpy_mask(core, owed, row.shape[0])] = -np.inf
        t = sample(row, cfg, rng)
        if t in eos and not owed:
            return
        tokens.append(t)
        data = core.token_bytes(t) or b""
        char = run(char, data) or START
        if owed:
            cut = min(len(owed), len(data))
            data, owed = data[cut:], owed[cut:]
        if data:
            yield data


def _control_ids(lm: ByteLM) -> np.ndarray:
    """Ids decoding never draws: tokens without bytes that do not end the text."""
    eos = tuple(sorted(set(lm.eos_ids)))
    cache = lm.__dict__.setdefault("_banned_by_eos", {})
    if eos not in cache:
        cache[eos] = np.array([i for i in lm.core.special_ids if i not in eos and i < lm.token_lm.vocab_size], dtype=np.int64)
    return cache[eos]
