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

from collections.abc import Iterator

import numpy as np

from . import _core
from .full_state import ByteState
from .gateway import CallStats
from .sampling import SamplingConfig, sample
from .spec import ByteSpec
from .utf8_mask import START, run, state_after

__all__ = ["draw_cover", "handoff_chunks", "decode_tokens"]


def draw_cover(state: ByteState, cfg: SamplingConfig, rng: np.random.Generator) -> _core.Cover:
    """A cover of the state's prefix and its log-probability: drawn exactly, or the most likely
    one under greedy decoding."""
    state.fulfil_for_cover()
    with state.stats.engine_time():
        return state.engine.choose_cover(None if cfg.greedy else float(rng.random()))


def handoff_chunks(state: ByteState, cfg: SamplingConfig, rng: np.random.Generator) -> Iterator[bytes]:
    """Bytes after the prompt: the drawn cover's overhang, then one chunk per decoded token,
    until an end-of-text token. Each next token costs one call, made only when asked for."""
    spec = state.spec
    tokens = list(draw_cover(state, cfg, rng).tokens)
    text = bytes(state.engine.text)
    spelled = b"".join(spec.core.token_bytes(t) or b"" for t in tokens)
    if len(spelled) > len(text):
        yield spelled[len(text) :]
    # A cover shorter than the text happens only for the empty text of a tokenizer with a start
    # prefix (SentencePiece's dummy space): the empty cover still owes that prefix.
    owed = text[len(spelled) :] if len(spelled) < len(text) else b""
    yield from decode_tokens(spec, tokens, cfg, rng, owed=owed, stats=state.stats)


def decode_tokens(spec: ByteSpec, tokens: list[int], cfg: SamplingConfig, rng: np.random.Generator, *, owed: bytes = b"", stats: CallStats | None = None) -> Iterator[bytes]:
    """Token-by-token decoding after `tokens` (extended in place), yielding each new token's
    bytes, until an end-of-text token. While `owed` is not spelled yet, only tokens consistent
    with it are allowed; those bytes are not yielded. Each token costs one request, made only
    when the consumer asks for more."""
    core, tables = spec.core, spec.tables
    stats = stats if stats is not None else CallStats()
    banned = tables.control_ids(spec.eos_ids)
    eos = set(spec.eos_ids)
    eos_list = sorted(eos)
    char = state_after(b"".join(core.token_bytes(t) or b"" for t in tokens[-4:]))
    while True:
        row = np.array(spec.gateway.rows([tokens], stats, draft_ahead=True)[0], dtype=np.float64)
        row[banned] = -np.inf
        row[~tables.utf8.allowed(char)] = -np.inf
        if char != START:
            row[eos_list] = -np.inf  # a text cannot end inside a character
        if owed:
            row[~tables.consistent_with(owed)] = -np.inf
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
