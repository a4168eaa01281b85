"""`ByteSpec`: everything a byte state needs to know about its model, in one frozen value.

States, decoders and scorers are built from a spec, not from `ByteLM`, so they sit below the
facade: the tokenizer core, the gateway to the token LM, the ids that end the text, the
per-vocabulary tables, and the prompt limits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from . import _core
from .gateway import ModelGateway
from .token_tables import TokenTables

__all__ = ["ByteSpec"]


@dataclass(frozen=True)
class ByteSpec:
    core: _core.Tokenizer
    """The tokenizer as the Rust core sees it (encoding, validity, token bytes, trie)."""
    gateway: ModelGateway
    """The token LM, reached only through the gateway (counting, timing, drafts, checks)."""
    eos_ids: tuple[int, ...]
    """Ids whose probability is the probability that the text ends."""
    tables: TokenTables
    """Masks for token-level decoding, shared by every view of the same model."""
    max_prompt_tokens: int | None = None
    """Context length of the model (prompt + context tokens must stay below it)."""
    context_len: int = 0
    """Tokens fixed in front of every prefix by `with_context` (counted against the limit)."""
    special_texts: tuple[bytes, ...] = ()
    """Texts the tokenizer would turn into control tokens: refused in prompts."""

    def check_prompt(self, prompt: bytes) -> None:
        """Refuse prompts the byte-level model cannot condition on, saying how to fix them."""
        for s in self.special_texts:
            if s in prompt:
                raise ValueError(
                    f"the prompt contains the special-token text {s.decode(errors='replace')!r}; the tokenizer would turn "
                    "it into a control token, which has no bytes. Remove it, or feed control tokens through the token-level API"
                )
        if self.max_prompt_tokens is not None:
            n = len(self.core.encode(prompt)) + self.context_len
            if n >= self.max_prompt_tokens:
                raise ValueError(f"the prompt is {n} tokens long; the model accepts at most {self.max_prompt_tokens}. Shorten it")

    def with_context(self, context_ids: Sequence[int], *, eos_ids: Sequence[int] | None = None) -> ByteSpec:
        """The same model continuing text that follows the tokens `context_ids`; `eos_ids`
        replaces the ids that end the text (e.g. a FIM end token)."""
        gateway = self.gateway.with_context(context_ids)
        return dataclasses.replace(
            self,
            gateway=gateway,
            eos_ids=self.eos_ids if eos_ids is None else tuple(int(t) for t in eos_ids),
            context_len=len(gateway.context),
        )

    def user_text(self, internal: bytes) -> bytes:
        """User bytes of an engine's internal text (the tokenizer's start prefix removed)."""
        return internal[len(self.core.start_prefix) :]
