"""Which tokens keep decoded text valid UTF-8, for token-level decoding (hand-off, healing).

The byte-level model never spells invalid UTF-8 (no valid token sequence does), but a token model
can put mass on byte tokens that break a character. Token decoding therefore tracks where it is
inside a character with the UTF-8 automaton (RFC 3629, no overlongs or surrogates) and masks the
tokens that would break it. For a model without mass on invalid sequences this changes nothing.

A state is (continuation bytes still needed, lowest and highest allowed next byte); (0, 0, 0) is
"between characters".
"""

from __future__ import annotations

from typing import Any

import numpy as np

State = tuple[int, int, int]
START: State = (0, 0, 0)


def step(state: State, byte: int) -> State | None:
    """The automaton after one byte, or None if the byte breaks UTF-8."""
    need, lo, hi = state
    if need:
        if not lo <= byte <= hi:
            return None
        return (need - 1, 0x80, 0xBF) if need > 1 else START
    if byte < 0x80:
        return START
    if 0xC2 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if byte == 0xE0:
        return (2, 0xA0, 0xBF)
    if byte == 0xED:
        return (2, 0x80, 0x9F)
    if 0xE1 <= byte <= 0xEF:
        return (2, 0x80, 0xBF)
    if byte == 0xF0:
        return (3, 0x90, 0xBF)
    if 0xF1 <= byte <= 0xF3:
        return (3, 0x80, 0xBF)
    if byte == 0xF4:
        return (3, 0x80, 0x8F)
    return None


def run(state: State | None, data: bytes) -> State | None:
    for b in data:
        if state is None:
            return None
        state = step(state, b)
    return state


def state_after(text: bytes) -> State:
    """Automaton state at the end of `text` (read from the start of its last character)."""
    start = max(0, len(text) - 4)
    while start < len(text) and 0x80 <= text[start] <= 0xBF:
        start += 1
    return run(START, text[start:]) or START


class Utf8Masks:
    """Per tokenizer: the tokens allowed in each automaton state (computed when first needed)."""

    def __init__(self, core: Any, width: int) -> None:
        self.core = core
        self.width = width
        self._bytes = [core.token_bytes(i) if i < core.n_ids else None for i in range(width)]
        # Tokens without bytes (control tokens, EOS) are someone else's business: always allowed here.
        self._ascii = np.array([b is None or b.isascii() for b in self._bytes], dtype=bool)
        self._masks: dict[State, np.ndarray] = {}

    def allowed(self, state: State) -> np.ndarray:
        mask = self._masks.get(state)
        if mask is None:
            # ASCII tokens are fine exactly between characters; only the rest need the automaton.
            mask = self._ascii.copy() if state == START else np.array([b is None for b in self._bytes], dtype=bool)
            for i in np.flatnonzero(~self._ascii):
                b = self._bytes[i]
                if b is not None and run(state, b) is not None:
                    mask[i] = True
            self._masks[state] = mask
        return mask
