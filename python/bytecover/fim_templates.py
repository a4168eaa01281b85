"""Fill-in-the-middle sentinel tokens of the code-model families bytecover knows (the one table;
the model registry and `bytecover.fim` both read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FimTemplate", "TEMPLATES", "detect_in_vocab"]


@dataclass(frozen=True)
class FimTemplate:
    """Sentinel token strings of one model family and the orders it was trained with."""

    name: str
    prefix: str
    suffix: str
    middle: str
    end: tuple[str, ...]
    """Tokens that close the middle (besides the tokenizer's end of text)."""
    orders: tuple[str, ...] = ("psm",)


TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        # Qwen2.5-Coder writes <|endoftext|> after the middle; <|fim_pad|>/<|file_sep|> also end it.
        FimTemplate("qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>")),
        FimTemplate("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<|endoftext|>", "<file_sep>"), ("psm", "spm")),
        FimTemplate("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>",), ("psm", "spm")),
        FimTemplate("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ("<|EOT|>", "<｜end▁of▁sentence｜>")),
    )
}


def detect_in_vocab(vocab: Mapping[str, int]) -> FimTemplate:
    """The template whose three sentinels are all tokens of `vocab` (token string -> id)."""
    for t in TEMPLATES.values():
        if all(s in vocab for s in (t.prefix, t.suffix, t.middle)):
            return t
    raise ValueError(
        "the tokenizer has no known fill-in-the-middle sentinels (known: "
        + ", ".join(TEMPLATES) + "); pass template=FimTemplate(...) with its own token strings"
    )
